import ArgumentParser
import Foundation
import Glibc
import OrlCore
import OrlJSON
import OrlStore

/// `orlctl secret`: the vault. Values go in and never come out: no command prints one.
struct SecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret",
        abstract: "Set, list and delete vault secrets (encrypted at rest; values are never shown).",
        discussion: """
            Secrets are sealed with AES-256-GCM under the state's master key: $ORL_MASTER_KEY \
            (base64 of 32 bytes) when set, else <state>/master.key, created with mode 0600 by \
            the first secret set. Agents receive, as environment variables, the secrets their \
            policies allow; a ModelProvider's apiKeySecret and a Tool's credentialSecret never.
            """,
        subcommands: [SetSecret.self, ListSecrets.self, DeleteSecrets.self]
    )
}

/// What the vault commands share: the state, the namespace, and the vault over them.
struct VaultOptions: ParsableArguments {
    @OptionGroup var namespace: NamespaceOption
    @OptionGroup var state: StateOptions

    func vault() throws -> StateVault {
        StateVault(store: try state.open(), keys: state.masterKeys)
    }

    func id(_ name: String) throws -> SecretID {
        let id = SecretID(namespace: namespace.namespace, name: name)
        if let problem = SecretID.problem(name: id.name, namespace: id.namespace) { throw ValidationError(problem) }
        return id
    }
}

struct SetSecret: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Set a secret from standard input, a file or an environment variable.",
        discussion: """
            From standard input one trailing newline is dropped, so `echo x | orlctl secret set K` \
            stores "x"; --from-file stores the file's bytes exactly. A value is UTF-8 text without \
            NUL bytes, at most 64 KiB (agents receive it as an environment variable). Setting \
            the value a secret already holds changes nothing. A running controller restarts the \
            agents that receive a changed secret, and starts those that waited for it.

            Exit codes: 0 created, updated or unchanged; 2 error (bad name or value, no value \
            given, the wrong master key).
            """
    )

    @Argument(help: ArgumentHelp("The secret's name: lower-case letters, digits and '-'.", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("Read the value from this file, byte for byte.", valueName: "path"))
    var fromFile: String?

    @Option(help: ArgumentHelp("Read the value from this environment variable of orlctl's.", valueName: "var"))
    var fromEnv: String?

    @OptionGroup var options: VaultOptions

    func validate() throws {
        if fromFile != nil && fromEnv != nil { throw ValidationError("give --from-file or --from-env, not both") }
        _ = try options.id(name)
    }

    func run() async throws {
        let id = try options.id(name)
        let value = try readValue()
        let change: Vault.Change
        do {
            change = try options.vault().set(value, as: id, at: Caller.now, by: Caller.identity)
        } catch let error as VaultError {
            throw CommandFailure(message: error.message)
        }
        switch change {
        case .created:
            writeStandardOutput("\(id) created\n")
        case .updated:
            writeStandardOutput("\(id) updated\n")
        case .unchanged:
            return writeStandardOutput("\(id) unchanged\n")
        }
        options.state.wakeController()
    }

    private func readValue() throws -> [UInt8] {
        if let fromEnv {
            // The bytes as they are: a value that is not UTF-8 is refused, not repaired.
            guard let value = CommandContext.current.environmentBytes(fromEnv) else {
                throw CommandFailure(message: "the environment variable \(fromEnv) is not set")
            }
            return value
        }
        if let fromFile {
            guard let data = FileManager.default.contents(atPath: fromFile) else {
                throw CommandFailure(
                    message:
                        "cannot read \(fromFile): \(FileManager.default.fileExists(atPath: fromFile) ? "permission denied or not a file" : "no such file")"
                )
            }
            return Array(data)
        }
        // A value typed at a terminal would be echoed, and in the shell's scrollback.
        guard !CommandContext.current.standardInputIsTerminal else {
            throw CommandFailure(
                message: "give the value on standard input (e.g. orlctl secret set \(name) < file), or use --from-file or --from-env")
        }
        var bytes: [UInt8]
        do {
            bytes = try CommandContext.current.readStandardInput()
        } catch {
            throw CommandFailure(message: "cannot read standard input: \(error)")
        }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        return bytes
    }
}

struct ListSecrets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List secrets: names, sizes, when and by whom they were last set. Never values.",
        discussion: "Needs no master key. Exit codes: 0 listed (none too), 2 error."
    )

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "List the secrets of every namespace.")
    var allNamespaces = false

    @Option(name: [.short, .long], help: "Output format: text or json.")
    var output: OutputFormat = .text

    @OptionGroup var options: VaultOptions

    func run() async throws {
        let namespace = allNamespaces ? nil : options.namespace.namespace
        let secrets: [SealedSecret]
        do {
            secrets = try options.vault().list(namespace: namespace)
        } catch let error as VaultError {
            throw CommandFailure(message: error.message)
        }
        switch output {
        case .text:
            guard !secrets.isEmpty else {
                return OrlctlMain.writeStandardError("No secrets found\(namespace.map { " in \($0) namespace" } ?? "").\n")
            }
            var rows = [(allNamespaces ? ["NAMESPACE"] : []) + ["NAME", "SIZE", "UPDATED", "BY"]]
            for s in secrets {
                rows.append((allNamespaces ? [s.id.namespace] : []) + [s.id.name, "\(s.size)", s.updatedAt.rfc3339Seconds, s.updatedBy])
            }
            writeStandardOutput(TextTable.render(rows))
        case .json:
            let items = secrets.map { s in
                JSONValue.object([
                    ("namespace", .string(s.id.namespace)),
                    ("name", .string(s.id.name)),
                    ("size", .int(s.size)),
                    ("updatedAt", .string(s.updatedAt.description)),
                    ("updatedBy", .string(s.updatedBy)),
                    ("keyId", .string(s.keyCheck)),
                ])
            }
            writeStandardOutput(JSONValue.object([("secrets", .array(items))]).rendered())
        }
    }
}

struct DeleteSecrets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete secrets, all or nothing.",
        discussion: """
            Agents already running keep the value they were started with; one that stops is \
            not started again until the secret is set. Needs no master key.

            Exit codes: 0 deleted, 1 a secret is not in the vault (nothing deleted), 2 error.
            """
    )

    @Argument(help: ArgumentHelp("The secrets' names.", valueName: "name"))
    var names: [String] = []

    @Flag(help: "Treat secrets that are not in the vault as already deleted.")
    var ignoreNotFound = false

    @OptionGroup var options: VaultOptions

    func validate() throws {
        guard !names.isEmpty else { throw ValidationError("name the secrets to delete") }
        for name in names { _ = try options.id(name) }
    }

    func run() async throws {
        let ids = try names.map(options.id)
        let outcome: (deleted: [SecretID], missing: [SecretID])
        do {
            outcome = try options.vault().delete(ids, ignoreNotFound: ignoreNotFound, at: Caller.now, by: Caller.identity)
        } catch let error as VaultError {
            throw CommandFailure(message: error.message)
        }
        if !outcome.missing.isEmpty && !ignoreNotFound {
            throw NotFound.fail(outcome.missing.map { "\($0) not found" }, note: "nothing was deleted")
        }
        writeStandardOutput(outcome.deleted.map { "\($0) deleted\n" }.joined())
        if !outcome.deleted.isEmpty { options.state.wakeController() }
    }
}

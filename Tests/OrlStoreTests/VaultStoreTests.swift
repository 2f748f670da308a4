import Foundation
import Glibc
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

/// The vault over SQLite and the state directory: ciphertexts in the store, the key in
/// `ORL_MASTER_KEY` or `master.key`.
@Suite struct VaultStoreTests {
    let t0 = Timestamp(milliseconds: 1_800_000_000_000)

    func vault(_ directory: String, environment: [String: String] = [:]) throws -> StateVault {
        StateVault(
            store: try SQLiteStateStore(directory: directory), keys: MasterKeySource(stateDirectory: directory, environment: environment))
    }

    func mode(_ path: String) throws -> Int { try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! Int }

    func vaultError(_ body: () throws(VaultError) -> Void) -> VaultError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    /// Every byte of every file in the directory (the database, its WAL, the key file).
    func everyByte(in directory: String) throws -> Data {
        var all = Data()
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            all += (try? Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))) ?? Data()
        }
        return all
    }

    @Test func sealedSecretsRoundTripThroughTheStoreByteForByte() throws {
        try withStateDirectory { directory in
            let store = try SQLiteStateStore(directory: directory)
            let box: [UInt8] = [0, 1, 2, 0, 255, 0]
            let a = SealedSecret(id: SecretID(name: "b-key"), box: box, keyCheck: "k1", size: 3, updatedAt: t0, updatedBy: "alice")
            let b = SealedSecret(id: SecretID(name: "a-key"), box: [9], keyCheck: "k1", size: 1, updatedAt: t0, updatedBy: "bob")
            let c = SealedSecret(
                id: SecretID(namespace: "team", name: "a-key"), box: [7], keyCheck: "k1", size: 1, updatedAt: t0, updatedBy: "eve")
            try store.write { s throws(StoreError) in
                for secret in [a, b, c] { try s.putSecret(secret) }
            }
            #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: nil) } == [b, a, c])
            #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: "team") } == [c])
            var replaced = a
            replaced.box = [5, 5]
            try store.write { s throws(StoreError) in
                try s.putSecret(replaced)
                try s.deleteSecret(b.id)
                try s.deleteSecret(SecretID(name: "never-there"))
            }
            #expect(try store.read { s throws(StoreError) in try s.secrets(namespace: "default") } == [replaced])
        }
    }

    @Test func theFirstSetCreatesAPrivateKeyFileAndNothingInTheStateHoldsTheValue() throws {
        try withStateDirectory { directory in
            let vault = try vault(directory)
            let value = "s3cr3t-Vault-Value-7f2a"
            #expect(!FileManager.default.fileExists(atPath: directory + "/master.key"))
            guard case .created(let secret) = try vault.set(Array(value.utf8), as: SecretID(name: "db-pass"), at: t0, by: "alice")
            else {
                Issue.record("expected created")
                return
            }
            #expect(try mode(directory + "/master.key") == 0o600)
            #expect(try vault.value(of: SecretID(name: "db-pass")) == value)
            #expect(try vault.value(of: SecretID(name: "nope")) == nil)
            #expect(try vault.list(namespace: nil) == [secret])
            // No temporary key file is left behind.
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".master.key") } == [])

            let events = try vault.store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }
            #expect(events.map(\.reason) == ["Created"])
            #expect(events.first?.resource == ResourceID(kind: "Secret", name: "db-pass"))
            #expect(events.first?.message == "set by alice (\(value.utf8.count) bytes)")
            #expect(try everyByte(in: directory).range(of: Data(value.utf8)) == nil)

            // The same value again writes nothing; another one updates it.
            let later = Timestamp(milliseconds: t0.milliseconds + 5000)
            #expect(try vault.set(Array(value.utf8), as: SecretID(name: "db-pass"), at: later, by: "bob") == .unchanged(secret))
            #expect(try vault.list(namespace: nil).first?.updatedAt == t0)
            guard case .updated = try vault.set(Array("v2".utf8), as: SecretID(name: "db-pass"), at: later, by: "bob") else {
                Issue.record("expected updated")
                return
            }
            #expect(try vault.value(of: SecretID(name: "db-pass")) == "v2")
            #expect(
                try vault.store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }.map(\.reason) == ["Updated", "Created"])
        }
    }

    @Test func theEnvironmentsKeyWinsAndAnotherKeyIsRefused() throws {
        try withStateDirectory { directory in
            let key = MasterKey.generate(origin: "test")
            let withEnvironment = try vault(directory, environment: ["ORL_MASTER_KEY": key.base64])
            _ = try withEnvironment.set(Array("v".utf8), as: SecretID(name: "a"), at: t0, by: "alice")
            #expect(
                !FileManager.default.fileExists(atPath: directory + "/master.key"), "no key file when the key comes from the environment")
            #expect(try withEnvironment.list(namespace: nil).first?.keyCheck == key.check)

            // Without the variable there is no key: an error, and no new key is made.
            let without = try vault(directory)
            let missing = vaultError { () throws(VaultError) in _ = try without.value(of: SecretID(name: "a")) }
            #expect(missing?.kind == .missingKey)
            let setting = vaultError { () throws(VaultError) in
                _ = try without.set(Array("w".utf8), as: SecretID(name: "b"), at: t0, by: "a")
            }
            #expect(setting?.kind == .missingKey)
            #expect(!FileManager.default.fileExists(atPath: directory + "/master.key"))

            let other = try vault(directory, environment: ["ORL_MASTER_KEY": MasterKey.generate(origin: "x").base64])
            let wrong = vaultError { () throws(VaultError) in _ = try other.value(of: SecretID(name: "a")) }
            #expect(wrong?.kind == .wrongKey)
            #expect(wrong?.message.contains("the master key from ORL_MASTER_KEY") == true)
            let garbage = try vault(directory, environment: ["ORL_MASTER_KEY": "hunter2"])
            #expect(vaultError { () throws(VaultError) in _ = try garbage.value(of: SecretID(name: "a")) }?.kind == .unusableKey)
        }
    }

    @Test(arguments: [0o640, 0o604, 0o700, 0o660])
    func aKeyFileOthersMayUseIsRefused(mode: Int) throws {
        try withStateDirectory { directory in
            let vault = try vault(directory)
            _ = try vault.set(Array("v".utf8), as: SecretID(name: "a"), at: t0, by: "alice")
            let path = directory + "/master.key"
            #expect(chmod(path, mode_t(mode)) == 0)
            let error = vaultError { () throws(VaultError) in _ = try vault.value(of: SecretID(name: "a")) }
            #expect(error?.kind == .unusableKey)
            #expect(
                error?.message
                    == "refusing to use \(path): its mode is 0\(String(mode, radix: 8)), so others may read or change the key; run chmod 600 \(path) (and treat the key as exposed)"
            )
            #expect(chmod(path, 0o600) == 0)
            #expect(try vault.value(of: SecretID(name: "a")) == "v")
        }
    }

    @Test func aKeyFileThatIsALinkOrSomeoneElsesIsRefused() throws {
        try withStateDirectory { directory in
            let vault = try vault(directory)
            _ = try vault.set(Array("v".utf8), as: SecretID(name: "a"), at: t0, by: "alice")
            let path = directory + "/master.key"
            #expect(rename(path, directory + "/real.key") == 0)
            #expect(symlink(directory + "/real.key", path) == 0)
            #expect(
                vaultError { () throws(VaultError) in _ = try vault.value(of: SecretID(name: "a")) }?.message.contains("symbolic link")
                    == true)
            #expect(unlink(path) == 0 && rename(directory + "/real.key", path) == 0)
            // Only root can give a file away; elsewhere the ownership check is left to the end-to-end test's mode check.
            if geteuid() == 0 {
                #expect(chown(path, 1, 1) == 0)
                let error = vaultError { () throws(VaultError) in _ = try vault.value(of: SecretID(name: "a")) }
                #expect(
                    error?.message
                        == "refusing to use \(path): it belongs to uid 1, not to you (uid 0); run orl as its owner, or chown the file")
            }
        }
    }

    @Test func aRefusedValueLeavesNoKeyFileBehind() throws {
        try withStateDirectory { directory in
            let vault = try vault(directory)
            let error = vaultError { () throws(VaultError) in _ = try vault.set([0x61, 0], as: SecretID(name: "a"), at: t0, by: "alice") }
            #expect(error?.kind == .invalid)
            #expect(!FileManager.default.fileExists(atPath: directory + "/master.key"))
        }
    }

    @Test func twoFirstSetsAtOnceShareOneKey() throws {
        try withStateDirectory { directory in
            _ = try SQLiteStateStore(directory: directory)
            let failures = Failures()
            let names = (0..<8).map { "secret-\($0)" }
            onThreads(
                names.map { name in
                    { @Sendable in
                        do {
                            let vault = StateVault(
                                store: try SQLiteStateStore(directory: directory),
                                keys: MasterKeySource(stateDirectory: directory, environment: [:]))
                            _ = try vault.set(Array(name.utf8), as: SecretID(name: name), at: Timestamp(milliseconds: 1), by: "t")
                        } catch {
                            failures.record(error)
                        }
                    }
                })
            #expect(failures.all == [])
            let vault = try vault(directory)
            let secrets = try vault.list(namespace: nil)
            #expect(secrets.map(\.id.name) == names)
            #expect(Set(secrets.map(\.keyCheck)).count == 1)
            for name in names { #expect(try vault.value(of: SecretID(name: name)) == name) }
        }
    }

    @Test func deletesAreAllOrNothing() throws {
        try withStateDirectory { directory in
            let vault = try vault(directory)
            for name in ["a", "b"] { _ = try vault.set(Array("v".utf8), as: SecretID(name: name), at: t0, by: "alice") }
            let refused = try vault.delete([SecretID(name: "a"), SecretID(name: "zz")], at: t0, by: "bob")
            #expect(refused.deleted == [] && refused.missing == [SecretID(name: "zz")])
            #expect(try vault.list(namespace: nil).count == 2)
            let ignoring = try vault.delete(
                [SecretID(name: "a"), SecretID(name: "zz"), SecretID(name: "a")], ignoreNotFound: true, at: t0, by: "bob")
            #expect(ignoring.deleted == [SecretID(name: "a")] && ignoring.missing == [SecretID(name: "zz")])
            #expect(try vault.list(namespace: nil).map(\.id.name) == ["b"])
            let events = try vault.store.read { s throws(StoreError) in try s.events(for: nil, limit: 1) }
            #expect(events.first?.reason == "Deleted" && events.first?.message == "deleted by bob")
        }
    }
}

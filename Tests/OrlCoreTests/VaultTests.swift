import OrlCore
import OrlJSON
import Testing

/// Sealing and opening secrets: the pure part of the vault.
@Suite struct VaultTests {
    let t0 = Timestamp(milliseconds: 1_800_000_000_000)
    let key = MasterKey.generate(origin: "test key")
    let id = SecretID(name: "db-pass")

    func sealed(_ value: String, as id: SecretID? = nil, with key: MasterKey? = nil) throws -> SealedSecret {
        let change = try Vault(sealed: [], key: { nil }).set(
            Array(value.utf8), as: id ?? self.id, with: key ?? self.key, at: t0, by: "alice")
        guard case .created(let secret) = change else {
            Issue.record("expected created, got \(change)")
            throw VaultError(.io, "not created")
        }
        return secret
    }

    func error(_ body: () throws(VaultError) -> Void) -> VaultError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    @Test func base64IsStandardAndStrict() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.decode(encoded) == Array(plain.utf8))
        }
        let all = (0...255).map(UInt8.init)
        #expect(Base64.decode(Base64.encode(all)) == all)
        for bad in ["Zg=", "Zh==", "Zm9=", "Zm9v\n", "Zm=v", "Z===", "Zm9v====", "Zm 9", "Zm9v-_=="] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }

    @Test func aMasterKeyIsBase64Of32BytesAndIdentifiedWithoutRevealingIt() throws {
        let copy = try MasterKey(base64: key.base64 + "\n", origin: "file")
        #expect(copy.check == key.check)
        #expect(copy.check.count == 16 && copy.check.allSatisfy(\.isHexDigit))
        #expect(!key.base64.contains(key.check))
        #expect(MasterKey.generate(origin: "x").check != key.check)
        let short = Base64.encode([UInt8](repeating: 7, count: 31))
        for bad in [short, "not base64 at all", ""] {
            let failure = error { () throws(VaultError) in _ = try MasterKey(base64: bad, origin: "ORL_MASTER_KEY") }
            #expect(failure?.kind == .unusableKey)
            #expect(failure?.message.contains("ORL_MASTER_KEY is not base64 of 32 bytes") == true, "\(String(describing: failure))")
        }
    }

    @Test func aSealedValueOpensWithItsKeyAndIsNotInTheCiphertext() throws {
        let value = "correct horse battery staple\nline two\n\n"
        let secret = try sealed(value)
        #expect(secret.size == value.utf8.count)
        #expect(secret.keyCheck == key.check)
        #expect(secret.box.count == 12 + value.utf8.count + 16)
        #expect(!String(decoding: secret.box, as: UTF8.self).contains("horse"))
        let opened = try Vault(sealed: [secret], key: { key }).value(of: id)
        #expect(opened?.value == value)
        #expect(opened?.version == secret.version)
        #expect(try Vault(sealed: [secret], key: { key }).value(of: SecretID(name: "other")) == nil)
        // Two seals of one value differ (a fresh nonce each time).
        #expect(try sealed(value).box != secret.box)
    }

    @Test func settingTheSameValueChangesNothingAndANewValueIsANewVersion() throws {
        let secret = try sealed("v1")
        let vault = Vault(sealed: [secret], key: { key })
        let later = Timestamp(milliseconds: t0.milliseconds + 1000)
        #expect(try vault.set(Array("v1".utf8), as: id, with: key, at: later, by: "bob") == .unchanged(secret))
        guard case .updated(let updated) = try vault.set(Array("v2".utf8), as: id, with: key, at: later, by: "bob") else {
            Issue.record("expected updated")
            return
        }
        #expect(updated.version != secret.version && updated.updatedAt == later && updated.updatedBy == "bob")
        #expect(try Vault(sealed: [updated], key: { key }).value(of: id)?.value == "v2")
    }

    @Test func theWrongKeyIsNamedAsSuchNotAsAFailedDecryption() throws {
        let secret = try sealed("v1")
        let other = MasterKey.generate(origin: "ORL_MASTER_KEY")
        let reading = error { () throws(VaultError) in _ = try Vault(sealed: [secret], key: { other }).value(of: id) }
        #expect(reading?.kind == .wrongKey)
        #expect(reading?.message.contains("ORL_MASTER_KEY (key id \(other.check))") == true, "\(String(describing: reading))")
        #expect(reading?.message.contains("sealed with (key id \(key.check), 1 secret)") == true, "\(String(describing: reading))")
        // Nor may another key seal into this vault: one vault, one key.
        let sealing = error { () throws(VaultError) in
            _ = try Vault(sealed: [secret], key: { other }).set(Array("x".utf8), as: SecretID(name: "new"), with: other, at: t0, by: "a")
        }
        #expect(sealing?.kind == .wrongKey)
    }

    @Test func noKeyIsAnErrorOnlyWhenThereIsSomethingToOpen() throws {
        var calls = 0
        let empty = Vault(
            sealed: [],
            key: { () throws(VaultError) in
                calls += 1
                return nil
            })
        #expect(try empty.value(of: id) == nil)
        #expect(calls == 0, "an empty vault reads no key")
        let secret = try sealed("v1")
        let missing = error { () throws(VaultError) in _ = try Vault(sealed: [secret], key: { nil }).value(of: id) }
        #expect(missing?.kind == .missingKey)
        #expect(missing?.message.contains("sealed with master key \(key.check), but there is no master key") == true)
        // A key that cannot be read is reported as it was.
        let unreadable = error { () throws(VaultError) in
            _ = try Vault(sealed: [secret], key: { () throws(VaultError) in throw VaultError(.unusableKey, "mode 0644") }).value(of: id)
        }
        #expect(unreadable == VaultError(.unusableKey, "mode 0644"))
    }

    @Test func aTamperedCiphertextDoesNotOpen() throws {
        let secret = try sealed("v1")
        for index in [0, 12, secret.box.count - 1] {
            var tampered = secret
            tampered.box[index] ^= 0x01
            let failure = error { () throws(VaultError) in _ = try Vault(sealed: [tampered], key: { key }).value(of: id) }
            #expect(failure?.kind == .corrupt, "byte \(index)")
            #expect(failure?.message.contains("secret \"db-pass\" does not decrypt with the right key") == true)
        }
        var truncated = secret
        truncated.box = Array(secret.box.prefix(10))
        #expect(error { () throws(VaultError) in _ = try Vault(sealed: [truncated], key: { key }).value(of: id) }?.kind == .corrupt)
    }

    @Test func aCiphertextMovedToAnotherNameOrNamespaceDoesNotOpen() throws {
        let secret = try sealed("the-db-password")
        for target in [SecretID(name: "api-key"), SecretID(namespace: "team-b", name: "db-pass")] {
            var moved = secret
            moved.id = target
            let failure = error { () throws(VaultError) in _ = try Vault(sealed: [moved], key: { key }).value(of: target) }
            #expect(failure?.kind == .corrupt, "\(target)")
        }
    }

    @Test(arguments: [
        ("", "the value is empty"),
        ("a\u{0}b", "NUL byte"),
        (String(repeating: "x", count: 64 * 1024 + 1), "the most a secret holds is 65536 bytes"),
    ])
    func valuesAreTextAnEnvironmentVariableCanCarry(value: String, problem: String) {
        let failure = error { () throws(VaultError) in
            _ = try Vault(sealed: [], key: { nil }).set(Array(value.utf8), as: id, with: key, at: t0, by: "a")
        }
        #expect(failure?.kind == .invalid)
        #expect(failure?.message.contains(problem) == true, "\(String(describing: failure))")
    }

    @Test func notUTF8IsRefusedAndTheLargestValueIsAccepted() throws {
        #expect(SecretValue.problem([0x66, 0xFF, 0x66])?.contains("not UTF-8") == true)
        #expect(SecretValue.problem(Array(repeating: UInt8(ascii: "x"), count: SecretValue.maxBytes)) == nil)
        #expect(SecretValue.problem(Array("ünïcødé ✓".utf8)) == nil)
    }

    @Test func namesFollowTheManifestsRule() {
        for good in ["db-pass", "a", "openai-key-2", String(repeating: "a", count: 63)] {
            #expect(SecretID.problem(name: good, namespace: "default") == nil, "\(good)")
        }
        for bad in ["", "DB", "db_pass", "-db", "db-", "db.pass", "db/pass", String(repeating: "a", count: 64), "dé"] {
            #expect(SecretID.problem(name: bad, namespace: "default")?.hasPrefix("invalid secret name") == true, "\(bad)")
        }
        #expect(SecretID.problem(name: "ok", namespace: "Team_B")?.hasPrefix("invalid namespace \"Team_B\"") == true)
    }

    @Test func describesItselfForMessages() {
        #expect(SecretID(name: "db-pass").description == "secret \"db-pass\"")
        #expect(SecretID(namespace: "team-b", name: "db-pass").description == "secret \"db-pass\" in namespace \"team-b\"")
        #expect(SecretID(namespace: "team-b", name: "k").eventSubject == ResourceID(kind: "Secret", namespace: "team-b", name: "k"))
    }
}

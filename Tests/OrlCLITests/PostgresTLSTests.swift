import Foundation
import OrlTestPostgres
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The PostgreSQL state's TLS, against a real server with certificates of a test CA: each
/// `sslmode` does what libpq's does, and each refusal says why, with exit 2.
@Suite(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresTLSTests {
    /// A command on a database the server refuses to serve without TLS.
    private func get(_ database: String, host: String, _ parameters: String) async throws -> Orlctl.Result {
        let port = try PostgresCluster.shared().port
        return try await Orlctl.call(["get", "agents", "--state", "postgres://postgres@\(host):\(port)/\(database)?\(parameters)"])
    }

    @Test func verifiedConnectionsAreEncryptedAndChecked() async throws {
        let cluster = try PostgresCluster.shared()
        let files = try cluster.enableTLS()
        let database = try cluster.tlsOnlyDatabase()

        // verify-full: the certificate chains to the CA and names the host.
        let full = try await get(database, host: "localhost", "sslmode=verify-full&sslrootcert=\(files.authority)")
        #expect(full.status == 0, "\(full.stderr)")
        // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca does not check names.
        let wrongName = try await get(database, host: "127.0.0.1", "sslmode=verify-full&sslrootcert=\(files.authority)")
        #expect(wrongName.status == 2, "\(wrongName.stdout)")
        #expect(wrongName.stderr.contains("cannot connect to the PostgreSQL state"), "\(wrongName.stderr)")
        #expect(wrongName.stderr.contains("the server's certificate does not name the host"), "\(wrongName.stderr)")
        let anyName = try await get(database, host: "127.0.0.1", "sslmode=verify-ca&sslrootcert=\(files.authority)")
        #expect(anyName.status == 0, "\(anyName.stderr)")
        // A CA that did not sign the server's certificate, or the system's roots, which know nothing of it.
        for parameters in ["sslmode=verify-ca&sslrootcert=\(files.otherAuthority)", "sslmode=verify-full"] {
            let untrusted = try await get(database, host: "localhost", parameters)
            #expect(untrusted.status == 2, "\(parameters): \(untrusted.stdout)")
            #expect(untrusted.stderr.contains("cannot connect to the PostgreSQL state"), "\(parameters): \(untrusted.stderr)")
            #expect(untrusted.stderr.contains("not signed by a CA this client trusts"), "\(parameters): \(untrusted.stderr)")
        }
        // A root certificate that cannot be read is an error, not a connection without checks.
        let missing = try await get(database, host: "localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        #expect(missing.status == 2, "\(missing.stdout)")
        #expect(missing.stderr.contains("cannot read sslrootcert /nonexistent/ca.pem"), "\(missing.stderr)")
        #expect(missing.stderr.contains("No such file"), "\(missing.stderr)")
    }

    @Test func requireAndPreferEncryptAndDisableDoesNot() async throws {
        let cluster = try PostgresCluster.shared()
        _ = try cluster.enableTLS()
        let database = try cluster.tlsOnlyDatabase()
        for mode in ["require", "prefer", "allow"] {
            let encrypted = try await get(database, host: "127.0.0.1", "sslmode=\(mode)")
            #expect(encrypted.status == 0, "\(mode): \(encrypted.stderr)")
        }
        // The server's own reason (pg_hba.conf) reaches the user.
        let plain = try await get(database, host: "127.0.0.1", "sslmode=disable")
        #expect(plain.status == 2, "\(plain.stdout)")
        #expect(plain.stderr.contains("no encryption") || plain.stderr.contains("pg_hba.conf"), "\(plain.stderr)")
    }

    /// A server that answers the TLS request with "N" (PostgreSQL built or configured without
    /// TLS): `require` refuses to go on in plain text.
    @Test func requireRefusesAServerWithoutTLS() async throws {
        let listener = try PlainServer()
        defer { listener.close() }
        let result = try await Orlctl.call([
            "get", "agents", "--state", "postgres://orl@127.0.0.1:\(listener.port)/fleet?sslmode=require&connect_timeout=5",
        ])
        #expect(result.status == 2, "\(result.stdout)")
        #expect(result.stderr.contains("does not support TLS"), "\(result.stderr)")
        #expect(listener.requests() >= 1)
    }
}

/// A loopback server that speaks only the first byte of PostgreSQL's TLS negotiation: it
/// reads the 8-byte SSLRequest and answers "N", as a server without TLS does.
private final class PlainServer: Sendable {
    let port: Int
    private let fd: Int32
    private let served = Atomic<Int>(0)

    init() throws {
        guard let listening = RawSocket.listen() else { throw POSIXError(.EADDRNOTAVAIL) }
        fd = listening.fd
        port = listening.port
        let thread = Thread { [self] in self.serve() }
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }  // closed
            var request = [UInt8](repeating: 0, count: 8)
            if recv(client, &request, 8, Int32(MSG_WAITALL)) == 8 {
                served.add(1, ordering: .relaxed)
                _ = send(client, "N", 1, 0)
            }
            // Whatever comes next (a startup message in plain text) is not answered.
            Glibc.close(client)
        }
    }

    func requests() -> Int { served.load(ordering: .relaxed) }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

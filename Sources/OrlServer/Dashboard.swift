import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
public import OrlCore
import Synchronization

/// What the dashboard reads and writes: the state, the runs and the alert outbox.
public typealias DashboardStore = AlertOutbox & RunStore & SpendHistory

/// The web dashboard under `/ui`: the fleet, agents' permissions and spend, runs and
/// their DAGs, pending approvals (approved or denied through the same `RunOperations.decide`
/// as `orlctl approve`), budgets, sources, alerts and events. Server-rendered HTML with
/// its stylesheet in the binary: nothing is fetched from elsewhere, so it works offline.
///
/// Access: the operator token (`<state>/controller.token`) on a login page. The session
/// cookie is `nonce.HMAC(token, "session." + nonce)` (HttpOnly, SameSite=Strict), so it
/// needs no server-side table and dies with the token, which each controller makes anew.
/// A state-changing request needs the form's token (`HMAC(token, "csrf." + nonce)`) and
/// an `Origin` that is this server's own.
public final class Dashboard: Sendable {
    let store: any DashboardStore
    let adminToken: String
    let budgets: @Sendable (Timestamp) -> [BudgetMeter.LimitStatus]
    let onReady: @Sendable (Set<ResourceID>) -> Void
    let clock: @Sendable () -> Timestamp
    /// Who decisions are recorded as having been made by.
    let identity: String
    private let queue = DispatchQueue(label: "orl.dashboard.store")
    /// The fleet's spend per day of the days that are over (see `spendPerDay`).
    let closedDays = Mutex<ClosedDays?>(nil)

    struct ClosedDays {
        /// Days since the epoch, `until` excluded.
        var from: Int
        var until: Int
        var spend: [Int: Charge]
    }

    static let cookie = "orl_session"

    public init(
        store: any DashboardStore, adminToken: String, budgets: @escaping @Sendable (Timestamp) -> [BudgetMeter.LimitStatus],
        onReady: @escaping @Sendable (Set<ResourceID>) -> Void = { _ in }, clock: @escaping @Sendable () -> Timestamp,
        identity: String = "dashboard"
    ) {
        self.store = store
        self.adminToken = adminToken
        self.budgets = budgets
        self.onReady = onReady
        self.clock = clock
        self.identity = identity
    }

    func register(_ router: Router<BasicRequestContext>) {
        router.get("/ui/style.css") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/css; charset=utf-8"
            headers[.cacheControl] = "max-age=3600"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: HTML.style)))
        }
        router.get("/ui/login") { request, _ in
            self.loginPage(error: request.uri.queryParameters.get("failed") != nil ? "That is not the operator token." : nil)
        }
        router.post("/ui/login") { request, _ in await self.login(request) }
        router.post("/ui/logout") { request, _ in
            await self.mutating(request) { _ in
                var response = Self.redirect("/ui/login")
                response.headers[.setCookie] = "\(Self.cookie)=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
                return response
            }
        }
        router.get("/ui") { request, _ in await self.page(request) { csrf, now in try self.fleetPage(csrf: csrf, now: now) } }
        router.get("/ui/agents/:namespace/:name") { request, context in
            let id = ResourceID(
                kind: ResourceKind.agent.rawValue, namespace: context.parameters.get("namespace") ?? "",
                name: context.parameters.get("name") ?? "")
            return await self.page(request) { csrf, now in try self.agentPage(id, csrf: csrf, now: now) }
        }
        router.get("/ui/runs") { request, _ in await self.page(request) { csrf, now in try self.runsPage(csrf: csrf, now: now) } }
        router.get("/ui/runs/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.page(request) { csrf, now in try self.runPage(id, csrf: csrf, now: now) }
        }
        router.post("/ui/runs/:id/decide") { request, context in
            let id = context.parameters.get("id") ?? ""
            return await self.mutating(request) { form in self.decide(run: id, form) }
        }
        router.get("/ui/budgets") { request, _ in await self.page(request) { csrf, now in try self.budgetsPage(csrf: csrf, now: now) } }
        router.get("/ui/sources") { request, _ in await self.page(request) { csrf, now in try self.sourcesPage(csrf: csrf, now: now) } }
        router.get("/ui/alerts") { request, _ in await self.page(request) { csrf, now in try self.alertsPage(csrf: csrf, now: now) } }
        router.get("/ui/events") { request, _ in await self.page(request) { csrf, now in try self.eventsPage(csrf: csrf, now: now) } }
    }

    // MARK: Sessions

    func session(nonce: String) -> String { nonce + "." + MessageAuthentication.hex(key: adminToken, message: "session." + nonce) }
    func csrf(nonce: String) -> String { MessageAuthentication.hex(key: adminToken, message: "csrf." + nonce) }

    /// The session's nonce, when the request carries a valid session cookie.
    func nonce(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                guard pair.hasPrefix(Self.cookie + "=") else { continue }
                let value = String(pair.dropFirst(Self.cookie.count + 1))
                guard let dot = value.firstIndex(of: ".") else { continue }
                let nonce = String(value[..<dot])
                if !nonce.isEmpty, MessageAuthentication.equal(value, session(nonce: nonce)) { return nonce }
            }
        }
        return nil
    }

    /// A state-changing request comes from this server's own pages: its Origin (which
    /// browsers send with every POST) names this host.
    static func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin], let host = request.head.authority else { return false }
        return origin == "http://\(host)" || origin == "https://\(host)"
    }

    static func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    static func html(_ status: HTTPResponse.Status = .ok, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    func loginPage(error: String?) -> Response {
        Self.html(
            error == nil ? .ok : .unauthorized,
            HTML.page(
                title: "Log in", active: "", csrf: nil,
                """
                <form class="login" method="post" action="/ui/login"><h1>orl dashboard</h1>
                <label for="token">Operator token</label>
                <input id="token" name="token" type="password" autocomplete="current-password" autofocus>
                <p class="muted">The token is in <code>&lt;state&gt;/controller.token</code>, new for each controller.</p>
                \(error.map { "<p class=\"error\" id=\"login-error\">\(HTML.escape($0))</p>" } ?? "")
                <button type="submit">Log in</button></form>
                """))
    }

    func login(_ request: Request) async -> Response {
        guard Self.sameOrigin(request) else { return Self.html(.forbidden, "cross-site request refused") }
        let form = await Self.form(request)
        guard let token = form["token"], MessageAuthentication.equal(token.trimmingCharacters(in: .whitespacesAndNewlines), adminToken)
        else { return loginPage(error: "That is not the operator token.") }
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        let nonce = bytes.map { String(format: "%02x", $0) }.joined()
        var response = Self.redirect("/ui")
        response.headers[.setCookie] = "\(Self.cookie)=\(session(nonce: nonce)); Path=/ui; HttpOnly; SameSite=Strict"
        return response
    }

    /// A GET page: the login page's redirect without a session, else the page built off
    /// the event loop (the store's calls block).
    func page(_ request: Request, _ build: @escaping @Sendable (String, Timestamp) throws -> String) async -> Response {
        guard let nonce = nonce(request) else { return Self.redirect("/ui/login") }
        let token = csrf(nonce: nonce)
        let now = clock()
        return await withCheckedContinuation { continuation in
            queue.async {
                do {
                    continuation.resume(returning: Self.html(.ok, try build(token, now)))
                } catch let error as DashboardError {
                    continuation.resume(
                        returning: Self.html(
                            .notFound, HTML.page(title: "Not found", active: "", csrf: token, "<h1>\(HTML.escape(error.message))</h1>")))
                } catch {
                    continuation.resume(
                        returning: Self.html(
                            .internalServerError, HTML.page(title: "Error", active: "", csrf: token, "<h1>\(HTML.escape("\(error)"))</h1>"))
                    )
                }
            }
        }
    }

    /// A POST: a session, this server's Origin and the form's token, or nothing happens.
    func mutating(_ request: Request, _ act: @escaping @Sendable ([String: String]) -> Response) async -> Response {
        guard let nonce = nonce(request) else { return Self.redirect("/ui/login") }
        guard Self.sameOrigin(request) else { return Self.html(.forbidden, "cross-site request refused (Origin)") }
        let form = await Self.form(request)
        guard let given = form["csrf"], MessageAuthentication.equal(given, csrf(nonce: nonce)) else {
            return Self.html(.forbidden, "the form's token is missing or stale; reload the page")
        }
        return await withCheckedContinuation { continuation in queue.async { continuation.resume(returning: act(form)) } }
    }

    /// `application/x-www-form-urlencoded`, at most 64 KiB.
    static func form(_ request: Request) async -> [String: String] {
        guard let buffer = try? await request.body.collect(upTo: 64 * 1024) else { return [:] }
        var out: [String: String] = [:]
        for pair in String(buffer: buffer).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { s.replacing("+", with: " ").removingPercentEncoding ?? String(s) }
            out[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return out
    }

    /// Approve or deny: `RunOperations.decide`, as `orlctl approve` and `deny` do.
    func decide(run: String, _ form: [String: String]) -> Response {
        guard let id = RunID(run), let step = form["step"], let decision = form["decision"], decision == "approve" || decision == "deny"
        else { return Self.html(.badRequest, "a decision needs a run, a step and approve or deny") }
        let reason = form["reason"].flatMap { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? nil : $0 }
        do {
            _ = try RunOperations(store: store, onReady: onReady).decide(
                run: id, step: step, approve: decision == "approve", by: identity, reason: reason, now: clock())
        } catch {
            return Self.html(
                .conflict,
                HTML.page(
                    title: "Not decided", active: "runs", csrf: nil,
                    "<h1>\(HTML.escape(error.message))</h1><p><a href=\"/ui/runs/\(HTML.path(run))\">Back to the run</a></p>"))
        }
        return Self.redirect("/ui/runs/\(HTML.path(run))")
    }
}

struct DashboardError: Error {
    var message: String
}

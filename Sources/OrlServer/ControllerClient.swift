import AsyncHTTPClient
import NIOCore
import NIOHTTP1
public import OrlCore
import OrlJSON

/// What `orlctl` asks a running controller: what only its memory holds.
public enum ControllerClient {
    /// What the controller's meter knows beyond the ledger, per budget account and window.
    public struct Live: Sendable, Hashable {
        /// Held by calls in flight.
        public var reserved: Charge
        /// Refused a call in this window (a ledger does not show refusals).
        public var exhausted: Bool
    }

    public struct Key: Sendable, Hashable {
        public var account: BudgetMeter.Account
        public var window: BudgetSpec.Window

        public init(account: BudgetMeter.Account, window: BudgetSpec.Window) {
            self.account = account
            self.window = window
        }
    }

    public static func budgets(url: String, token: String) async throws -> [Key: Live] {
        var request = HTTPClientRequest(url: url + "/orl/v1/budgets")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok else {
            throw GatewayError(
                status: Int(response.status.code), type: "controller", code: "controller", message: String(buffer: body))
        }
        let json = try JSONParser.parse(bytes: Array(body.readableBytesView), file: "<controller>")
        var result: [Key: Live] = [:]
        for item in json["items"]?.elements ?? [] {
            guard let budget = item["budget"]?.string.flatMap(Self.id), let usd = item["reservedUSD"]?.number?.double,
                let tokens = item["reservedTokens"]?.number?.integer,
                let window = item["window"]?.string.flatMap(BudgetSpec.Window.init(rawValue:))
            else { continue }
            let account = BudgetMeter.Account(budget: budget, agent: item["agent"]?.string.flatMap(Self.id))
            result[Key(account: account, window: window)] = Live(
                reserved: Charge(usd: usd, tokens: tokens), exhausted: item["exhausted"]?.bool ?? false)
        }
        return result
    }

    static func encode(_ status: [BudgetMeter.LimitStatus]) -> String {
        let items = status.map { limit in
            JSONValue.object([
                ("budget", .string("Budget/\(limit.account.budget.namespace)/\(limit.account.budget.name)")),
                ("agent", limit.account.agent.map { .string("Agent/\($0.namespace)/\($0.name)") }),
                ("window", .string(limit.window.rawValue)),
                ("reservedUSD", .double(limit.reserved.usd)), ("reservedTokens", .int(limit.reserved.tokens)),
                ("exhausted", .bool(limit.exhausted)),
            ])
        }
        return JSONValue.object([("items", .array(items))]).compactRendered()
    }

    private static func id(_ text: String) -> ResourceID? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        return ResourceID(kind: String(parts[0]), namespace: String(parts[1]), name: String(parts[2]))
    }
}

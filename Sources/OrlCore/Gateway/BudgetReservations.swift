/// One limit a reservation is checked against: an account's limit in the window that
/// holds the call. The store keeps, per line, what was spent and what is reserved, so
/// that every process serving the gateway against one state counts the same money.
public struct BudgetLine: Sendable, Hashable, Comparable {
    public var account: BudgetMeter.Account
    public var window: BudgetSpec.Window
    /// The start of the window holding the call: a new window is a new line.
    public var windowStart: Timestamp
    /// The limit in the store's units (see `BudgetAmount`); nil metrics are not limited.
    public var cap: BudgetAmount

    public init(account: BudgetMeter.Account, window: BudgetSpec.Window, windowStart: Timestamp, cap: BudgetAmount) {
        self.account = account
        self.window = window
        self.windowStart = windowStart
        self.cap = cap
    }

    /// The line of `limit` for the window holding `now`.
    public init(account: BudgetMeter.Account, limit: BudgetSpec.Limit, now: Timestamp) {
        self.init(
            account: account, window: limit.window, windowStart: limit.window.interval(containing: now).lowerBound,
            cap: BudgetAmount(microUSD: limit.usd.map { BudgetAmount.micro($0, roundingUp: false) }, tokens: limit.tokens.map(Int64.init)))
    }

    /// The line's key as the store names it: (budget, agent or "", window, start).
    public var key: BudgetLineKey {
        BudgetLineKey(
            budgetNamespace: account.budget.namespace, budgetName: account.budget.name, agentNamespace: account.agent?.namespace ?? "",
            agentName: account.agent?.name ?? "", window: window.rawValue, windowStart: windowStart.milliseconds)
    }

    /// Key order: the order every store locks lines in, so that two reservations touching
    /// the same lines never wait for each other in a cycle.
    public static func < (lhs: BudgetLine, rhs: BudgetLine) -> Bool { lhs.key < rhs.key }
}

public struct BudgetLineKey: Sendable, Hashable, Comparable {
    public var budgetNamespace: String
    public var budgetName: String
    public var agentNamespace: String
    public var agentName: String
    public var window: String
    public var windowStart: Int64

    public init(budgetNamespace: String, budgetName: String, agentNamespace: String, agentName: String, window: String, windowStart: Int64)
    {
        self.budgetNamespace = budgetNamespace
        self.budgetName = budgetName
        self.agentNamespace = agentNamespace
        self.agentName = agentName
        self.window = window
        self.windowStart = windowStart
    }

    /// The lines of a hold as the store keeps them: one line per key, fields separated by
    /// tabs (names are DNS labels, which hold neither tabs nor newlines).
    public static func encode(_ keys: [BudgetLineKey]) -> String {
        keys.map {
            [$0.budgetNamespace, $0.budgetName, $0.agentNamespace, $0.agentName, $0.window, String($0.windowStart)].joined(separator: "\t")
        }.joined(separator: "\n")
    }

    public static func decode(_ text: String) -> [BudgetLineKey]? {
        var keys: [BudgetLineKey] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 6, let start = Int64(fields[5]) else { return nil }
            keys.append(
                BudgetLineKey(
                    budgetNamespace: fields[0], budgetName: fields[1], agentNamespace: fields[2], agentName: fields[3], window: fields[4],
                    windowStart: start))
        }
        return keys
    }

    /// Any total order serves to lock lines in, as long as every process uses the same.
    public static func < (lhs: BudgetLineKey, rhs: BudgetLineKey) -> Bool {
        (lhs.budgetNamespace, lhs.budgetName, lhs.agentNamespace, lhs.agentName, lhs.window, lhs.windowStart)
            < (rhs.budgetNamespace, rhs.budgetName, rhs.agentNamespace, rhs.agentName, rhs.window, rhs.windowStart)
    }
}

/// Money and tokens as the store counts them: whole micro-dollars, so that sums are
/// exact and `spent + reserved + amount <= cap` means the same in every database (a
/// double's rounding could let a sum slip past a cap by a hair). A nil metric is not
/// limited (a cap) or not counted.
public struct BudgetAmount: Sendable, Hashable {
    public var microUSD: Int64?
    public var tokens: Int64?

    public init(microUSD: Int64?, tokens: Int64?) {
        self.microUSD = microUSD
        self.tokens = tokens
    }

    public init(_ charge: Charge, roundingUp: Bool) {
        microUSD = Self.micro(charge.usd, roundingUp: roundingUp)
        tokens = Int64(charge.tokens)
    }

    /// Dollars in micro-dollars: a reservation rounds up (it must cover the worst case), a
    /// cap or a cost to the nearest.
    public static func micro(_ usd: Double, roundingUp: Bool) -> Int64 {
        let micro = usd * 1_000_000
        guard micro.isFinite else { return micro > 0 ? Int64.max / 4 : 0 }
        return Int64(clamping: Int64(exactly: (roundingUp ? micro.rounded(.up) : micro.rounded()).clamped) ?? 0)
    }

    public var charge: Charge { Charge(usd: Double(microUSD ?? 0) / 1_000_000, tokens: Int(tokens ?? 0)) }
}

extension Double {
    fileprivate var clamped: Double { Swift.min(Swift.max(self, 0), Double(Int64.max / 4)) }
}

/// A reservation the store holds until it is settled or released.
public struct BudgetHold: Sendable, Hashable {
    /// Assigned by the store, unique in the state.
    public var id: Int64
    public var amount: BudgetAmount
    public var lines: [BudgetLineKey]

    public init(id: Int64, amount: BudgetAmount, lines: [BudgetLineKey]) {
        self.id = id
        self.amount = amount
        self.lines = lines
    }
}

/// A line as the store counts it.
public struct BudgetLineState: Sendable, Hashable {
    public var key: BudgetLineKey
    public var cap: BudgetAmount
    public var spent: BudgetAmount
    public var reserved: BudgetAmount

    public init(key: BudgetLineKey, cap: BudgetAmount, spent: BudgetAmount, reserved: BudgetAmount) {
        self.key = key
        self.cap = cap
        self.spent = spent
        self.reserved = reserved
    }
}

/// Who made a hold, so that one left by a gateway that died can be told from one whose call
/// may still settle. A gateway renews the holds it made (`renewHolds`) while it lives; a hold
/// not renewed within `lease`, or made by a node whose lease has ended (its process is gone,
/// or it stopped its agents before the lease lapsed), is abandoned and released by whichever
/// gateway of the state sweeps next (`releaseAbandonedHolds`).
public struct BudgetHolder: Sendable, Hashable {
    /// The gateway process, unique in the state (a new one at each start).
    public var owner: String
    /// The node it serves (`--node`) and that node's lease generation when the hold was made.
    public var node: String?
    public var generation: Int64
    /// How long a hold stays reserved after it was made or last renewed, by the database's clock.
    public var lease: Duration

    public init(owner: String, node: String? = nil, generation: Int64 = 0, lease: Duration) {
        self.owner = owner
        self.node = node
        self.generation = generation
        self.lease = lease
    }

    /// What a gateway uses: renewed every 5 s, abandoned after 30 s without renewal. The
    /// margin covers a renewal delayed by a busy database (each statement is bounded well
    /// under it) so a live gateway's holds do not lapse.
    public static let standardLease: Duration = .seconds(30)
    public static let renewInterval: Duration = .seconds(5)
    /// How long a hold released as abandoned is remembered, for a late settlement to count.
    public static let releasedMemory: Duration = .seconds(3600)
}

/// What `reserve` decided.
public enum BudgetReservation: Sendable, Hashable {
    case reserved(BudgetHold)
    /// The line that would go over its cap, as it stood: nothing was reserved.
    case refused(BudgetLineState)
}

/// Budget reservations kept in the state, so that several processes (gateways on
/// several nodes) serving one state never let a budget's spend and reservations pass its
/// cap together: each `reserve` is one atomic conditional update per line, in one
/// transaction with the others; it holds no lock on the rest of the state.
public protocol BudgetReservations: Sendable {
    /// Reserves `amount` against every line, or none: a line is granted only when its
    /// `spent + reserved + amount` stays within its cap, per metric the cap limits (the
    /// cap is taken from the line, so a re-applied Budget's new limit counts at once). A
    /// line the store has not counted yet starts at `spentBefore[key]` (what the ledger
    /// holds for it; zero when absent). A hold with a `holder` can be found abandoned and
    /// released (`releaseAbandonedHolds`); one without never is.
    func reserve(
        _ amount: BudgetAmount, against lines: [BudgetLine], spentBefore: [BudgetLineKey: BudgetAmount], now: Timestamp,
        holder: BudgetHolder?
    ) throws(StoreError) -> BudgetReservation
    /// Replaces the reservation by what the call cost, on each of its lines. A hold released
    /// as abandoned meanwhile is settled too: its cost is added to the lines' spend (its
    /// reservation was already given back), so a late settlement is counted, and once.
    /// Settling one that is not known (already settled) does nothing and returns false.
    func settle(_ hold: Int64, cost: BudgetAmount) throws(StoreError) -> Bool
    /// Gives the reservation back; releasing one that is not held does nothing.
    func release(_ hold: Int64) throws(StoreError) -> Bool
    /// Extends every hold `owner` still holds to `lease` from the database's now: how a live
    /// gateway keeps the holds of its calls in flight. Returns how many it extended.
    func renewHolds(of owner: String, lease: Duration) throws(StoreError) -> Int
    /// Releases every abandoned hold: not renewed by its gateway before its lease ran out
    /// (by the database's clock), or made by a node whose lease under that generation is no
    /// longer live. Each is given back to its lines and kept as released, so that a
    /// settlement arriving later still counts the call's cost (and only its cost); released
    /// holds are forgotten an hour later. Returns how many it released.
    func releaseAbandonedHolds() throws(StoreError) -> Int
    /// The lines the store counts, in key order; the lines of windows starting at or
    /// after `since` when given.
    func budgetLines(since: Timestamp?) throws(StoreError) -> [BudgetLineState]
}

extension BudgetReservations {
    /// A hold that is never found abandoned: for callers without a gateway's renewals.
    public func reserve(_ amount: BudgetAmount, against lines: [BudgetLine], spentBefore: [BudgetLineKey: BudgetAmount], now: Timestamp)
        throws(StoreError) -> BudgetReservation
    {
        try reserve(amount, against: lines, spentBefore: spentBefore, now: now, holder: nil)
    }
}

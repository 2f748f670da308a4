public import OrlJSON

/// What a controller observed of a resource, in kstatus terms: conditions of the
/// "abnormal-true" kind (`Reconciling`, `Stalled`) next to `Ready`, and the generation
/// the conditions are about.
public struct ResourceStatus: Sendable, Hashable {
    public struct Condition: Sendable, Hashable {
        public enum Value: String, Sendable, Hashable {
            case `true` = "True"
            case `false` = "False"
            case unknown = "Unknown"
        }

        /// `Ready`, `Reconciling`, `Stalled`.
        public var type: String
        public var status: Value
        /// A CamelCase word: `NotObserved`, `ProcessExited`.
        public var reason: String
        public var message: String
        public var lastTransitionTime: Timestamp?

        public init(type: String, status: Value, reason: String, message: String, lastTransitionTime: Timestamp? = nil) {
            self.type = type
            self.status = status
            self.reason = reason
            self.message = message
            self.lastTransitionTime = lastTransitionTime
        }
    }

    public static let ready = "Ready"
    public static let reconciling = "Reconciling"
    public static let stalled = "Stalled"

    public var conditions: [Condition]
    /// The generation the conditions describe; nil until a controller has observed one.
    public var observedGeneration: Int?
    public var updatedAt: Timestamp

    public init(conditions: [Condition], observedGeneration: Int?, updatedAt: Timestamp) {
        self.conditions = conditions
        self.observedGeneration = observedGeneration
        self.updatedAt = updatedAt
    }

    public func condition(_ type: String) -> Condition? { conditions.first { $0.type == type } }

    /// The status to show for `resource`: what the controller stored, unless it is
    /// missing or about an older generation, in which case kstatus' truth is that the
    /// resource is still reconciling (`Reconciling=True`, reason `NotObserved`).
    public static func effective(for resource: StoredResource, stored: ResourceStatus?) -> ResourceStatus {
        let generation = resource.generation
        guard let stored else {
            return ResourceStatus(
                conditions: [
                    Condition(
                        type: reconciling, status: .true, reason: "NotObserved",
                        message: "no controller has observed generation \(generation) yet", lastTransitionTime: resource.appliedAt)
                ], observedGeneration: nil, updatedAt: resource.appliedAt)
        }
        guard let observed = stored.observedGeneration, observed >= generation else {
            var status = stored
            let was = stored.observedGeneration.map { "; the conditions below are for generation \($0)" } ?? ""
            status.conditions.removeAll { $0.type == reconciling }
            status.conditions.insert(
                Condition(
                    type: reconciling, status: .true, reason: "NotObserved",
                    message: "no controller has observed generation \(generation) yet\(was)", lastTransitionTime: resource.appliedAt),
                at: 0)
            return status
        }
        return stored
    }

    /// kstatus' one-word summary: `InProgress` (the generation is not observed yet, or
    /// reconciling), `Failed` (stalled), `Current` (observed and Ready, or observed with
    /// no conditions), or `Unknown`.
    public func summary(generation: Int) -> String {
        // As kstatus: conditions about an older generation say nothing about this one.
        guard let observed = observedGeneration, observed >= generation else { return "InProgress" }
        if condition(Self.stalled)?.status == .true { return "Failed" }
        if condition(Self.reconciling)?.status == .true { return "InProgress" }
        switch condition(Self.ready)?.status {
        case .true?: return "Current"
        case .false?: return "InProgress"
        default: return conditions.isEmpty ? "Current" : "Unknown"
        }
    }

    /// The conditions as the state keeps them, in either backend: a JSON array, times in
    /// milliseconds since the epoch.
    public var storedConditions: String {
        conditionsJSON { .int(Int($0.milliseconds)) }.rendered()
    }

    /// The conditions read back from `storedConditions`' form; nil when `json` is not
    /// in it (a corrupt row: the caller names the resource).
    public static func conditions(stored json: String) -> [Condition]? {
        guard let node = try? JSONParser.parse(json, file: "<status>"), let items = node.elements else { return nil }
        var conditions: [Condition] = []
        for item in items {
            guard let type = item["type"]?.string, let value = item["status"]?.string.flatMap(Condition.Value.init) else { return nil }
            conditions.append(
                Condition(
                    type: type, status: value, reason: item["reason"]?.string ?? "", message: item["message"]?.string ?? "",
                    lastTransitionTime: item["lastTransitionTime"]?.number?.integer.map { Timestamp(milliseconds: Int64($0)) }))
        }
        return conditions
    }

    /// The `status` object of `get -o json|yaml`, as Kubernetes spells it.
    public var json: JSONValue {
        .object([
            ("observedGeneration", observedGeneration.map { .int($0) }),
            ("conditions", conditionsJSON { .string($0.rfc3339Seconds) }),
        ])
    }

    /// The conditions as Kubernetes spells them, each time as `time` writes it.
    private func conditionsJSON(time: (Timestamp) -> JSONValue) -> JSONValue {
        .array(
            conditions.map { c in
                .object([
                    ("type", .string(c.type)),
                    ("status", .string(c.status.rawValue)),
                    ("reason", .string(c.reason)),
                    ("message", .string(c.message)),
                    ("lastTransitionTime", c.lastTransitionTime.map(time)),
                ])
            })
    }
}

extension Timestamp {
    /// `2026-11-21T16:45:03Z`: RFC 3339 to the second, as Kubernetes prints times.
    public var rfc3339Seconds: String {
        let full = description
        guard let dot = full.lastIndex(of: ".") else { return full }
        return String(full[..<dot]) + "Z"
    }

    /// How long ago, as kubectl's AGE column says it: `45s`, `3m12s`, `15m`, `5h3m`,
    /// `20h`, `3d4h`, `40d`, `2y30d`, `10y` (Kubernetes' `HumanDuration`).
    public func age(at now: Timestamp) -> String {
        let seconds = (now.milliseconds - milliseconds) / 1000
        if seconds < -1 { return "<invalid>" }
        if seconds < 0 { return "0s" }
        if seconds < 60 * 2 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 {
            let s = seconds % 60
            return s == 0 ? "\(minutes)m" : "\(minutes)m\(s)s"
        }
        if minutes < 60 * 3 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 8 {
            let m = minutes % 60
            return m == 0 ? "\(hours)h" : "\(hours)h\(m)m"
        }
        if hours < 48 { return "\(hours)h" }
        if hours < 24 * 8 {
            let h = hours % 24
            return h == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(h)h"
        }
        if hours < 24 * 365 * 2 { return "\(hours / 24)d" }
        let years = hours / 24 / 365
        if years < 8 {
            let d = (hours / 24) % 365
            return d == 0 ? "\(years)y" : "\(years)y\(d)d"
        }
        return "\(years)y"
    }
}

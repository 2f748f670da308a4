public import OrlJSON

/// `Workflow.spec`: see schemas/workflow.schema.json.
public struct WorkflowSpec: Sendable, Hashable, Decodable {
    public struct Trigger: Sendable, Hashable, Decodable {
        public enum TriggerType: String, Sendable, Hashable, Decodable {
            case manual
            case schedule
        }

        public var type: TriggerType
        /// Five-field cron expression in UTC, for `schedule` (see `CronSchedule`).
        public var cron: Located<String>?
    }

    public struct Input: Sendable, Hashable, Decodable {
        public var name: String
        public var description: String?
        public var required: Bool
        public var `default`: String?

        enum CodingKeys: String, CodingKey { case name, description, required, `default` }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            description = try c.decodeIfPresent(String.self, forKey: .description)
            required = try c.decodeIfPresent(Bool.self, forKey: .required) ?? false
            `default` = try c.decodeIfPresent(String.self, forKey: .default)
        }
    }

    /// Where a step input comes from.
    public enum InputSource: Sendable, Hashable, Decodable {
        /// A parameter of the run.
        case runInput(Located<String>)
        /// An earlier step's output, or one key of it.
        case stepOutput(step: Located<String>, key: String?)
        /// A literal value, given to the step as written.
        case literal(Node)

        enum CodingKeys: String, CodingKey { case input, step, key, value }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let input = try c.decodeIfPresent(Located<String>.self, forKey: .input) {
                self = .runInput(input)
            } else if let step = try c.decodeIfPresent(Located<String>.self, forKey: .step) {
                self = .stepOutput(step: step, key: try c.decodeIfPresent(String.self, forKey: .key))
            } else if let locating = decoder as? any LocatingDecoder, let value = locating.node["value"] {
                self = .literal(value)
            } else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "an input needs one of input, step or value"))
            }
        }

        public static func == (lhs: InputSource, rhs: InputSource) -> Bool {
            switch (lhs, rhs) {
            case (.runInput(let a), .runInput(let b)): a == b
            case (.stepOutput(let s1, let k1), .stepOutput(let s2, let k2)): s1 == s2 && k1 == k2
            case (.literal(let a), .literal(let b)): a == b
            default: false
            }
        }

        public func hash(into hasher: inout Hasher) {
            switch self {
            case .runInput(let name):
                hasher.combine(0)
                hasher.combine(name)
            case .stepOutput(let step, let key):
                hasher.combine(1)
                hasher.combine(step)
                hasher.combine(key)
            case .literal: hasher.combine(2)
            }
        }
    }

    public struct Approval: Sendable, Hashable, Decodable {
        public enum OnTimeout: String, Sendable, Hashable, Decodable {
            case deny
            case approve
        }

        public var message: String?
        public var timeout: DurationValue
        public var onTimeout: OnTimeout

        enum CodingKeys: String, CodingKey { case message, timeout, onTimeout }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            message = try c.decodeIfPresent(String.self, forKey: .message)
            timeout = try c.decodeIfPresent(DurationValue.self, forKey: .timeout) ?? DurationValue("24h")!
            onTimeout = try c.decodeIfPresent(OnTimeout.self, forKey: .onTimeout) ?? .deny
        }
    }

    public struct Retry: Sendable, Hashable, Decodable {
        public var attempts: Int
        public var backoff: DurationValue
        public var maxBackoff: DurationValue

        public static let none = Retry(attempts: 1, backoff: DurationValue("1s")!, maxBackoff: DurationValue("5m")!)

        init(attempts: Int, backoff: DurationValue, maxBackoff: DurationValue) {
            self.attempts = attempts
            self.backoff = backoff
            self.maxBackoff = maxBackoff
        }

        enum CodingKeys: String, CodingKey { case attempts, backoff, maxBackoff }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            attempts = try c.decodeIfPresent(Int.self, forKey: .attempts) ?? Retry.none.attempts
            backoff = try c.decodeIfPresent(DurationValue.self, forKey: .backoff) ?? Retry.none.backoff
            maxBackoff = try c.decodeIfPresent(DurationValue.self, forKey: .maxBackoff) ?? Retry.none.maxBackoff
        }
    }

    public struct Step: Sendable, Hashable, Decodable {
        /// What runs the step: an agent, or a person approving.
        public enum Executor: Sendable, Hashable {
            case agent(Located<String>)
            case approval(Approval)
        }

        public var id: Located<String>
        public var description: String?
        public var executor: Executor
        public var dependsOn: [Located<String>]
        public var tools: [Located<String>]
        /// Input name → source, in the order written.
        public var inputs: [(name: String, source: InputSource)]
        public var prompt: String?
        public var maxTokens: Int?
        /// How long one attempt may run, from its claim.
        public var timeout: DurationValue
        /// How long a claimed task may go unheard from (its lease).
        public var heartbeatTimeout: DurationValue
        public var retry: Retry
        public var continueOnFailure: Bool
        /// Bounded dynamic patterns (see WorkflowPatterns.swift).
        public var route: Route? {
            get { patterns?.fields.route }
            set { withPatterns { $0.route = newValue } }
        }
        public var loop: Loop? {
            get { patterns?.fields.loop }
            set { withPatterns { $0.loop = newValue } }
        }
        public var fallback: [Fallback] {
            get { patterns?.fields.fallback ?? [] }
            set { withPatterns { $0.fallback = newValue } }
        }
        public var delegate: Delegate? {
            get { patterns?.fields.delegate }
            set { withPatterns { $0.delegate = newValue } }
        }
        public var handoff: Handoff? {
            get { patterns?.fields.handoff }
            set { withPatterns { $0.handoff = newValue } }
        }
        /// Blackboard topics of the run the step may write and read while it runs: each
        /// subscriber receives what a publisher holds, so the audit treats every
        /// publisher → subscriber pair as it treats a step input.
        public var publish: [Located<String>] {
            get { patterns?.fields.publish ?? [] }
            set { withPatterns { $0.publish = newValue } }
        }
        public var subscribe: [Located<String>] {
            get { patterns?.fields.subscribe ?? [] }
            set { withPatterns { $0.subscribe = newValue } }
        }
        /// Set on the steps orl derives from the declared ones (loop rounds after the
        /// first, fallbacks), and on the declared steps of a loop (round 1).
        public var generated: Generated? {
            get { patterns?.fields.generated }
            set { withPatterns { $0.generated = newValue } }
        }
        public var location: SourceLocation

        /// The fields above, which few steps set, out of line: inline, their empty space
        /// was two thirds of a step (1 KB of which 700 bytes were these), and the steps
        /// were the largest part of a fleet's decoded model. Nil when all are unset.
        private var patterns: Patterns?

        /// Immutable, so a copied step shares it; a setter makes a new one.
        private final class Patterns: Sendable {
            let fields: PatternFields
            init(_ fields: PatternFields) { self.fields = fields }
        }

        struct PatternFields: Sendable {
            var route: Route?
            var loop: Loop?
            var fallback: [Fallback] = []
            var delegate: Delegate?
            var handoff: Handoff?
            var publish: [Located<String>] = []
            var subscribe: [Located<String>] = []
            var generated: Generated?

            var isEmpty: Bool {
                route == nil && loop == nil && fallback.isEmpty && delegate == nil && handoff == nil && publish.isEmpty
                    && subscribe.isEmpty && generated == nil
            }
        }

        private mutating func withPatterns(_ change: (inout PatternFields) -> Void) {
            var fields = patterns?.fields ?? PatternFields()
            change(&fields)
            patterns = fields.isEmpty ? nil : Patterns(fields)
        }

        /// What the decoders read, set at once (one allocation, none when all are unset).
        init(
            id: Located<String>, description: String?, executor: Executor, dependsOn: [Located<String>], tools: [Located<String>],
            inputs: [(name: String, source: InputSource)], prompt: String?, maxTokens: Int?, timeout: DurationValue,
            heartbeatTimeout: DurationValue, retry: Retry, continueOnFailure: Bool, patterns fields: PatternFields,
            location: SourceLocation
        ) {
            self.id = id
            self.description = description
            self.executor = executor
            self.dependsOn = dependsOn
            self.tools = tools
            self.inputs = inputs
            self.prompt = prompt
            self.maxTokens = maxTokens
            self.timeout = timeout
            self.heartbeatTimeout = heartbeatTimeout
            self.retry = retry
            self.continueOnFailure = continueOnFailure
            self.patterns = fields.isEmpty ? nil : Patterns(fields)
            self.location = location
        }

        public var agent: Located<String>? {
            if case .agent(let a) = executor { return a }
            return nil
        }

        public var isApprovalGate: Bool {
            if case .approval = executor { return true }
            return false
        }

        enum CodingKeys: String, CodingKey {
            case id, description, agent, approval, dependsOn, tools, inputs, prompt, maxTokens, timeout, heartbeatTimeout, retry
            case continueOnFailure, route, loop, fallback, delegate, handoff, publish, subscribe
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let id = try c.decode(Located<String>.self, forKey: .id)
            let description = try c.decodeIfPresent(String.self, forKey: .description)
            let executor: Executor
            if let approval = try c.decodeIfPresent(Approval.self, forKey: .approval) {
                executor = .approval(approval)
            } else {
                executor = .agent(try c.decode(Located<String>.self, forKey: .agent))
            }
            let dependsOn = try c.decodeIfPresent([Located<String>].self, forKey: .dependsOn) ?? []
            let tools = try c.decodeIfPresent([Located<String>].self, forKey: .tools) ?? []
            var inputs: [(name: String, source: InputSource)] = []
            if c.contains(.inputs) {
                let container = try c.nestedContainer(keyedBy: NodeKey.self, forKey: .inputs)
                inputs = try container.allKeys.map { ($0.stringValue, try container.decode(InputSource.self, forKey: $0)) }
            }
            let prompt = try c.decodeIfPresent(String.self, forKey: .prompt)
            let maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
            let timeout = try c.decodeIfPresent(DurationValue.self, forKey: .timeout) ?? DurationValue("10m")!
            let heartbeatTimeout = try c.decodeIfPresent(DurationValue.self, forKey: .heartbeatTimeout) ?? DurationValue("60s")!
            let retry = try c.decodeIfPresent(Retry.self, forKey: .retry) ?? .none
            let continueOnFailure = try c.decodeIfPresent(Bool.self, forKey: .continueOnFailure) ?? false
            let patterns = PatternFields(
                route: try c.decodeIfPresent(Route.self, forKey: .route),
                loop: try c.decodeIfPresent(Loop.self, forKey: .loop),
                fallback: try c.decodeIfPresent([Fallback].self, forKey: .fallback) ?? [],
                delegate: try c.decodeIfPresent(Delegate.self, forKey: .delegate),
                handoff: try c.decodeIfPresent(Handoff.self, forKey: .handoff),
                publish: try c.decodeIfPresent([Located<String>].self, forKey: .publish) ?? [],
                subscribe: try c.decodeIfPresent([Located<String>].self, forKey: .subscribe) ?? [],
                generated: nil)
            self.init(
                id: id, description: description, executor: executor, dependsOn: dependsOn, tools: tools, inputs: inputs, prompt: prompt,
                maxTokens: maxTokens, timeout: timeout, heartbeatTimeout: heartbeatTimeout, retry: retry,
                continueOnFailure: continueOnFailure, patterns: patterns,
                location: (decoder as? any LocatingDecoder)?.node.location ?? .file(""))
        }

        public static func == (lhs: Step, rhs: Step) -> Bool {
            lhs.id == rhs.id && lhs.executor == rhs.executor && lhs.dependsOn == rhs.dependsOn && lhs.tools == rhs.tools
                && lhs.inputs.map(\.name) == rhs.inputs.map(\.name) && lhs.inputs.map(\.source) == rhs.inputs.map(\.source)
                && lhs.prompt == rhs.prompt && lhs.maxTokens == rhs.maxTokens && lhs.timeout == rhs.timeout
                && lhs.heartbeatTimeout == rhs.heartbeatTimeout
                && lhs.retry == rhs.retry && lhs.continueOnFailure == rhs.continueOnFailure && lhs.description == rhs.description
                && lhs.route == rhs.route && lhs.loop == rhs.loop && lhs.fallback == rhs.fallback && lhs.generated == rhs.generated
                && lhs.delegate == rhs.delegate && lhs.handoff == rhs.handoff && lhs.publish == rhs.publish
                && lhs.subscribe == rhs.subscribe
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(id)
            hasher.combine(executor)
            hasher.combine(dependsOn)
        }
    }

    public var description: String?
    public var triggers: [Trigger]
    public var inputs: [Input]
    /// The declared steps, then the steps orl derives from bounded patterns (loop rounds
    /// after the first, fallbacks): every step that can run, so every check, the audit
    /// and the run engine see every path. The first `declaredCount` are as written.
    public let steps: [Step]
    public let declaredCount: Int
    /// The DAG of `steps`, built once when the workflow is read (on every core) and
    /// shared by the structural checks, the audit and the run engine.
    public let graph: WorkflowGraph

    enum CodingKeys: String, CodingKey { case description, triggers, inputs, steps }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        triggers = try c.decodeIfPresent([Trigger].self, forKey: .triggers) ?? []
        inputs = try c.decodeIfPresent([Input].self, forKey: .inputs) ?? []
        let declared = try c.decode([Step].self, forKey: .steps)
        declaredCount = declared.count
        steps = WorkflowPatterns.expand(declared)
        graph = WorkflowGraph(steps: steps)
    }

    /// The graph is derived from the steps, so it takes no part in equality.
    public static func == (lhs: WorkflowSpec, rhs: WorkflowSpec) -> Bool {
        lhs.description == rhs.description && lhs.triggers == rhs.triggers && lhs.inputs == rhs.inputs && lhs.steps == rhs.steps
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(triggers)
        hasher.combine(inputs)
        hasher.combine(steps)
    }
}

public import OrlJSON

/// What an agent receives when it claims a task: the step's instructions, exactly the
/// data its step is given (the run's input, its named inputs, the outputs of the steps
/// it depends on) and nothing else from the blackboard, the idempotency key to
/// de-duplicate side effects with, and the lease it must renew.
public struct RunTask: Sendable {
    public var id: TaskID
    public var workflow: ResourceID
    public var agent: ResourceID
    public var attempts: Int
    public var idempotencyKey: String
    public var prompt: String?
    public var tools: [String]
    public var maxTokens: Int?
    /// The run's input: an object of strings.
    public var runInput: JSONValue
    /// The step's `inputs`, resolved: name → value (null when an upstream step produced
    /// no such key).
    public var inputs: JSONValue
    /// The output of each step this one depends on: step id → output (null for a
    /// `continueOnFailure` step that failed, or an approval's decision for a gate).
    public var dependencies: JSONValue
    /// The data classes what the task holds carries, as the audit computed them.
    public var dataClasses: [String]
    public var leaseExpiresAt: Timestamp
    public var deadline: Timestamp
    public var heartbeatTimeout: Duration
    /// The round, for a step of a revision loop.
    public var round: Int? = nil
    /// The run's blackboard topics the task may write and read (`publish`, `read`).
    public var publish: [String] = []
    public var subscribe: [String] = []

    /// The task as the agents' API sends it.
    public var json: JSONValue {
        .object([
            ("task", .string(id.description)),
            ("run", .string(id.run.rawValue)),
            ("workflow", .string(workflow.name)),
            ("namespace", .string(workflow.namespace)),
            ("step", .string(id.step)),
            ("agent", .string(agent.name)),
            ("attempt", .int(id.attempt)),
            ("attempts", .int(attempts)),
            ("idempotencyKey", .string(idempotencyKey)),
            ("prompt", prompt.map { .string($0) }),
            ("tools", .array(tools.map { .string($0) })),
            ("maxTokens", maxTokens.map { .int($0) }),
            ("input", runInput),
            ("inputs", inputs),
            ("dependencies", dependencies),
            ("dataClasses", .array(dataClasses.map { .string($0) })),
            ("leaseExpiresAt", .string(leaseExpiresAt.description)),
            ("deadline", .string(deadline.description)),
            ("heartbeatTimeoutMs", .int(Int(heartbeatTimeout.wholeMilliseconds))),
            ("round", round.map { .int($0) }),
            ("publish", publish.isEmpty ? nil : .array(publish.map { .string($0) })),
            ("subscribe", subscribe.isEmpty ? nil : .array(subscribe.map { .string($0) })),
        ])
    }

    /// Builds the task of a step just claimed, reading its inputs from the blackboard;
    /// `written`: values of this run written earlier in the same transaction (key →
    /// canonical JSON, the latest version), which need not be read back.
    static func make(
        _ record: StepRecord, agent: ResourceID, run: RunRecord, plan: RunPlan, from reader: any RunReader,
        written: [String: String] = [:]
    ) throws(StoreError) -> RunTask {
        let step = plan.steps[record.index]
        let runInput = parse(run.input) ?? .object([])
        var outputs: [Int: Node?] = [:]
        func output(_ index: Int) throws(StoreError) -> Node? {
            if let known = outputs[index] { return known }
            let key = plan.steps[index].outputKey
            var text = written[key]
            if text == nil { text = try reader.value(of: run.id, key: key)?.value }
            let value = text.flatMap { try? JSONParser.parse($0, file: "<blackboard>") }
            outputs[index] = value
            return value
        }
        var inputs: [(String, JSONValue)] = []
        for input in step.inputs {
            switch input.source {
            case .runInput(let name):
                inputs.append((input.name, member(runInput, name) ?? .null))
            case .stepOutput(let source, let key):
                let node = try output(source)
                var value = key.map { node?[$0] } ?? node
                // A sub-task reads its own entry of its planner's list.
                if let k = step.subtask, plan.steps[source].delegation != nil {
                    let item = value?.elements.flatMap { k < $0.count ? $0[k] : nil }
                    value = item?["task"] ?? item
                }
                inputs.append((input.name, value.map(JSONValue.init) ?? .null))
            case .literal(let json):
                inputs.append((input.name, parse(json) ?? .null))
            }
        }
        // Keyed by the declared step: loop rounds and fallbacks write one key, so a step
        // after them sees the output of whichever ran last.
        var dependencies: [(String, JSONValue)] = []
        for dependency in step.dependencies where !dependencies.contains(where: { $0.0 == plan.steps[dependency].outputKey }) {
            let value = try output(dependency)
            // The sub-task slots a planner left empty are no result.
            if value == nil, plan.steps[dependency].subtask != nil { continue }
            dependencies.append((plan.steps[dependency].outputKey, value.map(JSONValue.init) ?? .null))
        }
        return RunTask(
            id: record.task, workflow: plan.workflow, agent: agent, attempts: step.attempts,
            idempotencyKey: record.idempotencyKey, prompt: step.prompt, tools: step.tools, maxTokens: step.maxTokens, runInput: runInput,
            inputs: .object(inputs), dependencies: .object(dependencies), dataClasses: step.dataClasses,
            leaseExpiresAt: record.leaseExpiresAt ?? record.deadline ?? Timestamp(milliseconds: 0),
            deadline: record.deadline ?? Timestamp(milliseconds: 0), heartbeatTimeout: step.heartbeatTimeout, round: step.round,
            publish: step.publish, subscribe: step.subscribe)
    }

    private static func parse(_ json: String) -> JSONValue? {
        (try? JSONParser.parse(json, file: "<run>")).map(JSONValue.init)
    }

    private static func member(_ object: JSONValue, _ key: String) -> JSONValue? {
        guard case .object(let members) = object else { return nil }
        return members.first { $0.0 == key }?.1
    }
}

/// The input of a new run: what was given, checked against the workflow's declared
/// inputs, with defaults filled in.
public enum RunInput {
    /// A compact JSON object of strings, in the order the workflow declares its inputs.
    public static func resolve(_ given: [(name: String, value: String)], for spec: WorkflowSpec, workflow: String) -> Result<
        String, RunError
    > {
        let declared = spec.inputs.map(\.name)
        var values: [String: String] = [:]
        for (name, value) in given {
            guard declared.contains(name) else {
                let takes = declared.isEmpty ? "it takes no inputs" : "it takes: \(declared.joined(separator: ", "))"
                return .failure(
                    RunError(
                        .invalid,
                        "workflow \(Diagnostic.quoted(workflow)) has no input \(Diagnostic.quoted(name))\(Suggestion.hint(for: name, among: declared)); \(takes)"
                    ))
            }
            guard values[name] == nil else {
                return .failure(RunError(.invalid, "input \(Diagnostic.quoted(name)) is given twice"))
            }
            values[name] = value
        }
        var members: [(String, JSONValue)] = []
        var missing: [String] = []
        for input in spec.inputs {
            if let value = values[input.name] ?? input.default {
                members.append((input.name, .string(value)))
            } else if input.required {
                missing.append(input.name)
            }
        }
        guard missing.isEmpty else {
            let names = missing.map(Diagnostic.quoted).joined(separator: ", ")
            return .failure(
                RunError(
                    .invalid,
                    "workflow \(Diagnostic.quoted(workflow)) needs input\(missing.count == 1 ? "" : "s") \(names) (required, no default); give \(missing.count == 1 ? "it" : "them") with --input NAME=VALUE"
                ))
        }
        return .success(JSONValue.object(members).compactRendered())
    }
}

import HTTPTypes
import Hummingbird
import OrlCore

/// Where the gateway, the task API and the tools feed `Telemetry`: one place that knows
/// the metric families' labels and the GenAI span attributes.
extension Gateway {
    static let traceparentHeader = HTTPField.Name("traceparent")!

    /// The context a call's span continues: the agent's `traceparent` when it sends one
    /// (its own trace wins), else the step attempt the call serves, else none (a new trace).
    func parentContext(_ headers: HTTPFields, task: TaskID?) -> SpanContext? {
        if let header = headers[Self.traceparentHeader], let context = SpanContext(traceparent: header) { return context }
        return task.map(SpanContext.attempt)
    }

    /// A call refused before it reached a provider or a tool.
    func countRefusal(_ error: GatewayError, agent: ResourceID?) {
        telemetry.metrics?.add(Metrics.refusals, [agent?.namespace ?? "", agent?.name ?? "", error.code])
    }

    /// `openai`, `anthropic` (the conventions' well-known names), `orl.simulated`.
    static func providerName(_ style: ModelProviderSpec.APIStyle) -> String {
        style == .simulated ? "orl.simulated" : style.rawValue
    }

    static func operationName(_ api: ModelAPI) -> String { api == .embeddings ? "embeddings" : "chat" }

    /// A settled or released call: the GenAI histograms, orl's cost and token counters,
    /// and its `chat` span.
    func observe(_ call: Call, _ entry: LedgerEntry, failed: Bool) {
        let seconds = Metrics.seconds(ContinuousClock.now - call.started)
        let operation = Self.operationName(call.request.api)
        let provider = Self.providerName(call.route.spec.apiStyle)
        let model = call.route.id
        let agent = call.agent
        if let metrics = telemetry.metrics {
            let base = [operation, provider, model, agent.namespace, agent.name]
            let errorType = failed ? Self.errorType(entry.outcome) : ""
            metrics.record { r in
                r.observe(Metrics.operationDuration, base + [errorType], seconds)
                r.add(Metrics.modelCalls, [agent.namespace, agent.name, model, failed ? "error" : "ok"])
                if !failed || entry.usage.total > 0 {
                    r.observe(Metrics.tokenUsage, base + ["input"], Double(entry.usage.prompt))
                    if call.request.api.hasOutput { r.observe(Metrics.tokenUsage, base + ["output"], Double(entry.usage.completion)) }
                }
                r.add(Metrics.tokens, [agent.namespace, agent.name, model, "input"], Double(entry.usage.prompt))
                r.add(Metrics.tokens, [agent.namespace, agent.name, model, "output"], Double(entry.usage.completion))
                r.add(Metrics.costUSD, [agent.namespace, agent.name, model], entry.usd)
            }
        }
        if let tracer = telemetry.tracer, let span = call.span {
            var attributes: [(String, SpanRecord.Value)] = [
                ("gen_ai.operation.name", .string(operation)), ("gen_ai.provider.name", .string(provider)),
                ("gen_ai.request.model", .string(model)), ("gen_ai.response.model", .string(call.route.model.name)),
                ("gen_ai.usage.input_tokens", .int(Int64(entry.usage.prompt))),
                ("gen_ai.usage.output_tokens", .int(Int64(entry.usage.completion))),
                ("gen_ai.agent.name", .string(agent.name)), ("orl.namespace", .string(agent.namespace)),
                ("orl.cost_usd", .double(entry.usd)), ("orl.request_id", .string(call.requestID)),
                ("orl.outcome", .string(entry.outcome)),
            ]
            if call.bound > 0 && call.request.api.hasOutput { attributes.append(("gen_ai.request.max_tokens", .int(Int64(call.bound)))) }
            if let run = call.run { attributes.append(("gen_ai.conversation.id", .string(run))) }
            if let step = call.step { attributes.append(("orl.step", .string(step))) }
            if call.request.stream { attributes.append(("gen_ai.request.stream", .bool(true))) }
            if failed { attributes.append(("error.type", .string(Self.errorType(entry.outcome)))) }
            tracer.record(
                SpanRecord(
                    context: span, parent: call.parent?.spanID, name: "\(operation) \(model)", kind: .client,
                    startNanoseconds: call.startNanoseconds, endNanoseconds: Tracer.now(), attributes: attributes,
                    error: failed ? entry.outcome : nil))
        }
    }

    /// A stream's first chunk went to the agent.
    func observeFirstChunk(_ call: Call) {
        guard let metrics = telemetry.metrics else { return }
        let seconds = Metrics.seconds(ContinuousClock.now - call.started)
        metrics.observe(
            Metrics.timeToFirstChunk,
            [
                Self.operationName(call.request.api), Self.providerName(call.route.spec.apiStyle), call.route.id, call.agent.namespace,
                call.agent.name,
            ], seconds)
    }

    /// The error's kind, short: the code before any detail (`upstream 500` stays whole).
    static func errorType(_ outcome: String) -> String {
        String(outcome.prefix { $0 != ":" && $0 != "," })
    }

    // MARK: Tasks and tools

    /// An agent ended a step attempt (complete or fail): its duration and `invoke_agent` span.
    func observeAttempt(_ task: TaskID, agent: ResourceID, record: StepRecord, failed: String?) {
        let startedMilliseconds = record.startedAt?.milliseconds
        let endMilliseconds = clock().milliseconds
        if let metrics = telemetry.metrics, let startedMilliseconds {
            metrics.observe(
                Metrics.stepAttemptDuration, [agent.namespace, agent.name, failed == nil ? "Succeeded" : "Failed"],
                Double(max(0, endMilliseconds - startedMilliseconds)) / 1000)
        }
        guard let tracer = telemetry.tracer else { return }
        let start = UInt64(max(0, startedMilliseconds ?? endMilliseconds)) * 1_000_000
        var attributes: [(String, SpanRecord.Value)] = [
            ("gen_ai.operation.name", .string("invoke_agent")), ("gen_ai.agent.name", .string(agent.name)),
            ("gen_ai.conversation.id", .string(task.run.rawValue)), ("orl.namespace", .string(agent.namespace)),
            ("orl.step", .string(task.step)), ("orl.attempt", .int(Int64(task.attempt))),
            ("orl.step.state", .string(record.state.rawValue)),
        ]
        if failed != nil { attributes.append(("error.type", .string("task_failed"))) }
        tracer.record(
            SpanRecord(
                context: SpanContext.attempt(task), parent: SpanContext.workflow(run: task.run.rawValue).spanID,
                name: "invoke_agent \(agent.name)", kind: .internal, startNanoseconds: start, endNanoseconds: Tracer.now(),
                attributes: attributes, error: failed))
    }

    /// A run the tracer saw an attempt of has ended: its `invoke_workflow` span.
    func observeRunEnded(_ run: RunRecord) {
        guard let tracer = telemetry.tracer, let ended = run.endedAt else { return }
        let context = SpanContext.workflow(run: run.id.rawValue)
        tracer.record(
            SpanRecord(
                context: context, parent: nil, name: "invoke_workflow \(run.workflow.name)", kind: .internal,
                startNanoseconds: UInt64(max(0, run.createdAt.milliseconds)) * 1_000_000,
                endNanoseconds: UInt64(max(0, ended.milliseconds)) * 1_000_000,
                attributes: [
                    ("gen_ai.operation.name", .string("invoke_workflow")), ("gen_ai.conversation.id", .string(run.id.rawValue)),
                    ("gen_ai.workflow.name", .string(run.workflow.name)), ("orl.namespace", .string(run.workflow.namespace)),
                    ("orl.run.phase", .string(run.phase.rawValue)),
                ], error: run.phase == .succeeded ? nil : (run.error ?? run.phase.rawValue)))
    }
}

import AsyncHTTPClient
import Glibc
import Hummingbird
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON

/// `POST /v1/tools/NAME/invoke`: an agent calls a Tool through the controller, which
/// checks, fails closed, that the agent's policies allow the tool now and that the task
/// the call serves is a step that lists it, then calls it with the tool's credential
/// from the vault (an http tool) or runs it (a command tool). The agent sees the tool's
/// answer, never the credential: it is not in any response, and a tool that echoes it
/// back has it masked.
extension AgentAPI {
    func invoke(_ request: Request, tool name: String) async -> Response {
        let started = ContinuousClock.now
        let caller: CallerTable.Caller
        let route: CallerTable.ToolRoute
        do throws(GatewayError) {
            caller = try gateway.authenticate(request)
            do throws(GatewayError) {
                route = try caller.tool(name)
            } catch {
                refused(name, caller.agent, error)
                throw error
            }
        } catch {
            return Gateway.error(error)
        }
        let agent = caller.agent
        let run = request.headers[values: Gateway.runHeader].first
        let step = request.headers[values: Gateway.stepHeader].first
        let grant: ToolGrant
        do {
            grant = try await perform(reading: true) { () throws(RunError) in
                try self.reads.toolGrant(name, agent: agent, run: run, step: step)
            }
        } catch {
            refused(name, agent, GatewayError(error))
            return Gateway.error(GatewayError(error))
        }
        let input: JSONValue
        do throws(GatewayError) {
            input = try await Self.body(request, limit: configuration.maxRequestBytes)?["input"].map(JSONValue.init) ?? .null
        } catch {
            return Gateway.error(error)
        }
        // The tool's span continues the agent's traceparent, else the step attempt's; the
        // tool gets it (a header, TRACEPARENT) so that its own spans go under it.
        let tracer = gateway.telemetry.tracer
        let parent = tracer == nil ? nil : gateway.parentContext(request.headers, task: grant.task)
        let span = tracer?.newContext(in: parent)
        let spanStart = Tracer.now()
        let result: Result<(status: Int, output: JSONValue), GatewayError>
        switch route.spec.type {
        case .http: result = await callHTTP(route, grant: grant, agent: agent, input: input, traceparent: span?.traceparent)
        case .command: result = await runCommand(route, grant: grant, caller: caller, input: input, traceparent: span?.traceparent)
        case .mcp:
            result = .failure(
                .toolFailed(status: 400, code: "tool_is_mcp", "Tool \(route.id.name) is an MCP server: call its tools through /mcp"))
        }
        let elapsed = ContinuousClock.now - started
        let took = "\(elapsed.wholeMilliseconds)ms"
        let outcome: String
        switch result {
        case .success: outcome = "ok"
        case .failure(let error): outcome = error.code
        }
        if let metrics = gateway.telemetry.metrics {
            metrics.record { r in
                r.add(Metrics.toolCalls, [agent.namespace, agent.name, name, outcome])
                r.observe(Metrics.toolDuration, [route.id.namespace, name], Metrics.seconds(elapsed))
            }
        }
        if let tracer, let span {
            var attributes: [(String, SpanRecord.Value)] = [
                ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string(name)),
                ("gen_ai.tool.type", .string(route.spec.type.rawValue)), ("gen_ai.agent.name", .string(agent.name)),
                ("gen_ai.conversation.id", .string(grant.task.run.rawValue)), ("orl.namespace", .string(agent.namespace)),
                ("orl.step", .string(grant.task.step)), ("orl.attempt", .int(Int64(grant.task.attempt))),
            ]
            if outcome != "ok" { attributes.append(("error.type", .string(outcome))) }
            let message: String? =
                switch result {
                case .success: nil
                case .failure(let error): error.message
                }
            tracer.record(
                SpanRecord(
                    context: span, parent: parent?.spanID, name: "execute_tool \(name)", kind: .internal, startNanoseconds: spanStart,
                    endNanoseconds: Tracer.now(), attributes: attributes, error: message))
        }
        switch result {
        case .success(let answer):
            gateway.log(
                ControllerEvent(
                    time: gateway.clock(), reason: .toolCall, resource: agent,
                    message: "tool \(Diagnostic.quoted(name)) for \(grant.task): ok (\(answer.status)) in \(took)"))
            return Gateway.json(
                .ok,
                JSONValue.object([
                    ("tool", .string(name)), ("task", .string(grant.task.description)), ("status", .int(answer.status)),
                    ("output", answer.output),
                ]).compactRendered())
        case .failure(let error):
            gateway.log(
                ControllerEvent(
                    time: gateway.clock(), reason: .toolCall, resource: agent,
                    message: "tool \(Diagnostic.quoted(name)) for \(grant.task): \(error.code) in \(took): \(error.message)"))
            return Gateway.error(error)
        }
    }

    private func refused(_ tool: String, _ agent: ResourceID, _ error: GatewayError) {
        gateway.countRefusal(error, agent: agent)
        gateway.note(
            ControllerEvent(
                time: gateway.clock(), reason: .toolRefused, resource: agent, message: "tool \(Diagnostic.quoted(tool)): \(error.message)"))
    }

    // MARK: http

    private func callHTTP(
        _ route: CallerTable.ToolRoute, grant: ToolGrant, agent: ResourceID, input: JSONValue, traceparent: String?
    ) async -> Result<(status: Int, output: JSONValue), GatewayError> {
        guard let endpoint = route.spec.http else {
            return .failure(
                .toolFailed(status: 500, code: "tool_misconfigured", "Tool \(route.id.name) has type http but no http endpoint"))
        }
        var credential: String?
        if let secret = endpoint.credentialSecret?.value {
            guard let value = self.secret(SecretID(namespace: route.id.namespace, name: secret)) else {
                return .failure(
                    .toolFailed(
                        status: 503, code: "tool_credential_missing",
                        "the credential of Tool \(route.id.name) (secret \(Diagnostic.quoted(secret))) is not in the vault; set it with orlctl secret set \(secret)\(route.id.namespace == ResourceID.defaultNamespace ? "" : " -n \(route.id.namespace)")"
                    ))
            }
            credential = value
        }
        var upstream = HTTPClientRequest(url: endpoint.url)
        upstream.method = HTTPMethod(rawValue: endpoint.method)
        for (header, value) in endpoint.headers.sorted(by: { $0.key < $1.key }) { upstream.headers.add(name: header, value: value) }
        let sendsBody = endpoint.method != "GET" && endpoint.method != "DELETE"
        if sendsBody && !upstream.headers.contains(name: "Content-Type") {
            upstream.headers.add(name: "Content-Type", value: "application/json")
        }
        if let credential { upstream.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(credential)") }
        // The same for every attempt at the step: a tool that honours it does its effect once.
        upstream.headers.replaceOrAdd(name: "Idempotency-Key", value: grant.idempotencyKey)
        upstream.headers.replaceOrAdd(name: "X-Orl-Run", value: grant.task.run.rawValue)
        upstream.headers.replaceOrAdd(name: "X-Orl-Step", value: grant.task.step)
        if let traceparent { upstream.headers.replaceOrAdd(name: "traceparent", value: traceparent) }
        if sendsBody { upstream.body = .bytes(ByteBuffer(string: input.compactRendered())) }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await gateway.client.execute(
                upstream, timeout: .milliseconds(route.spec.timeout.duration.wholeMilliseconds))
            body = try await response.body.collect(upTo: configuration.maxToolOutputBytes)
        } catch {
            let failure = Gateway.upstreamFailure(error, provider: route.id)
            let timedOut = failure.status == 504
            return .failure(
                .toolFailed(
                    status: timedOut ? 504 : 502, code: timedOut ? "tool_timeout" : "tool_unreachable",
                    masked("Tool \(route.id.name) (\(endpoint.method) \(endpoint.url)): \(failure.message)", credential)))
        }
        // Masked in the raw text through every JSON escape, then again in the decoded
        // values: a tool that echoes its credential as `\u002d` or `\/` hands the agent
        // nothing.
        let mask = CredentialMask([credential].compactMap { $0 })
        let text = String(decoding: mask.mask(Array(body.readableBytesView)), as: UTF8.self)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            return .failure(.toolFailed("Tool \(route.id.name) answered \(status): \(String(text.prefix(500)))"))
        }
        return .success((status, mask.mask(Self.output(text))))
    }

    // MARK: command

    private func runCommand(
        _ route: CallerTable.ToolRoute, grant: ToolGrant, caller: CallerTable.Caller, input: JSONValue, traceparent: String?
    ) async -> Result<(status: Int, output: JSONValue), GatewayError> {
        guard let command = route.spec.command else {
            return .failure(.toolFailed(status: 500, code: "tool_misconfigured", "Tool \(route.id.name) has type command but no command"))
        }
        let agent = caller.agent
        // Where the agent itself runs: a tool works on what the agent could reach.
        let directory = AgentLaunch.workingDirectory(caller.workingDir, of: agent, stateDirectory: configuration.stateDirectory)
        var environment = [
            "PATH": ProcessSpec.defaultSearchPath, "LANG": "C.UTF-8", "ORL_TOOL": route.id.name, "ORL_AGENT": agent.name,
            "ORL_NAMESPACE": agent.namespace, "ORL_RUN": grant.task.run.rawValue, "ORL_STEP": grant.task.step,
            "ORL_TASK": grant.task.description, "ORL_IDEMPOTENCY_KEY": grant.idempotencyKey,
        ]
        if let traceparent { environment["TRACEPARENT"] = traceparent }
        // The program comes from the Tool's source; it runs in the agent's directory.
        var (program, arguments) = (command.command, command.args)
        if let origin = route.origin {
            environment["ORL_CODE_DIR"] = origin.root
            (program, arguments) = origin.resolve(command: program, arguments: arguments, exists: { access($0, F_OK) == 0 })
        }
        // In the agent's own kind of sandbox, without its way out: a tool works on the
        // agent's directory and answers on its output.
        let sandbox = caller.runtime.flatMap { runtime in
            runtime.isolation == .strict
                ? AgentLaunch.sandbox(
                    runtime, workingDirectory: directory,
                    context: AgentLaunch.Context(stateDirectory: configuration.stateDirectory, apiURL: ""), apiPort: nil,
                    code: route.origin?.root) : nil
        }
        let invocation = CommandInvocation(
            command: program, arguments: arguments, environment: environment, workingDirectory: directory,
            input: Array((input.compactRendered() + "\n").utf8), timeout: route.spec.timeout.duration,
            maxOutputBytes: configuration.maxToolOutputBytes, sandbox: sandbox)
        let outcome: CommandOutcome
        do {
            outcome = try await commands.run(invocation)
        } catch {
            return .failure(.toolFailed(status: 502, code: "tool_failed", "Tool \(route.id.name): \(error.message)"))
        }
        let said = String(decoding: outcome.stderr.suffix(500), as: UTF8.self).trimmingSpace
        switch outcome.exit {
        case nil:
            return .failure(
                .toolFailed(
                    status: 504, code: "tool_timeout",
                    "Tool \(route.id.name) did not finish within \(route.spec.timeout.duration.compactDescription) and was killed"
                        + (said.isEmpty ? "" : "; it said: \(said)")))
        case .exited(0)?:
            return .success((0, Self.output(String(decoding: outcome.stdout, as: UTF8.self))))
        case let exit?:
            return .failure(.toolFailed("Tool \(route.id.name) \(exit)" + (said.isEmpty ? "" : ": \(said)")))
        }
    }

    // MARK: Helpers

    /// The tool's answer as JSON when it is JSON, else as a string.
    static func output(_ text: String) -> JSONValue {
        let trimmed = text.trimmingSpace
        if trimmed.isEmpty { return .null }
        if let node = try? JSONParser.parse(trimmed, file: "<tool>") { return JSONValue(node) }
        return .string(text)
    }

    private func masked(_ text: String, _ credential: String?) -> String {
        CredentialMask([credential].compactMap { $0 }).mask(text)
    }
}

extension String {
    fileprivate var trimmingSpace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}

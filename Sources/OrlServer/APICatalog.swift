import OrlCore
public import OrlJSON

/// Every HTTP route orl serves, described once: docs/reference/openapi.json is generated
/// from it (`scripts/gen-docs`), and a test compares it with the routes the servers
/// really register, so a route cannot be added without its description.
public enum APICatalog {
    public enum Auth: String, Sendable {
        /// `Authorization: Bearer` with the agent's own token (ORL_TOKEN, the same as its
        /// OPENAI_API_KEY).
        case agent
        /// `Authorization: Bearer` with the operator token of `<state>/controller.token`.
        case operatorToken
        /// `X-Hub-Signature-256`: the HMAC-SHA256 of the body with the webhook secret.
        case webhookSignature
        /// The dashboard's session cookie, set by `POST /ui/login` for the operator token;
        /// POSTs also need the form's token and this server's Origin.
        case dashboardSession
        case none
    }

    public struct Route: Sendable {
        public var server: String
        public var method: String
        /// As the router lists it, `/v1/tasks/{run}/{step}/{attempt}/complete`.
        public var path: String
        public var summary: String
        public var description: String
        public var auth: Auth
        public var request: String?
        public var responses: [(status: Int, description: String)]
    }

    static let agentAPI = "controller"
    static let webhook = "webhook"

    public static let routes: [Route] = [
        Route(
            server: agentAPI, method: "GET", path: "/v1/models", summary: "List the models the agent may use",
            description: "OpenAI's list format; each model is named `provider/model`, only those the agent's policies allow.",
            auth: .agent, request: nil,
            responses: [
                (200, "`{\"object\": \"list\", \"data\": [{\"id\", \"object\": \"model\", \"owned_by\"}]}`"), (401, "`invalid_api_key`"),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/chat/completions", summary: "Call a model through the gateway",
            description:
                "OpenAI's chat completions, plain or streamed (SSE). The model is routed (policies), the call's worst case reserved against every halting budget, then answered by a simulated provider or forwarded to the ModelProvider with its key; usage is settled and written to the ledger. `x-orl-run` and `x-orl-step` name the task the call serves; the answer carries `x-request-id`.",
            auth: .agent, request: "OpenAI's chat completion request (`model`, `messages`, `max_tokens`, `stream`, ...).",
            responses: [
                (200, "The provider's answer (JSON, or `text/event-stream` when `stream` is true)."),
                (401, "`invalid_api_key`: not a running agent's token."), (403, "`model_not_allowed`: no policy allows the model."),
                (413, "`request_too_large`."),
                (429, "`budget_exceeded`: the worst case does not fit a budget; says which and when it resets."),
                (502, "`upstream_error`, `upstream_unreachable` or `provider_misconfigured`."), (503, "`provider_key_missing`."),
                (504, "`upstream_timeout`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/responses", summary: "Call a model through OpenAI's Responses API",
            description:
                "OpenAI's Responses API, plain or streamed (SSE, settled on `response.completed`), through the same routing, worst-case reservation, ledger and budgets as chat completions. Requests whose size the body cannot bound (`previous_response_id`, `conversation`, stored prompts, `background`, provider-side tools) are refused with 400.",
            auth: .agent, request: "OpenAI's Responses request (`model`, `input`, `instructions`, `max_output_tokens`, `stream`, ...).",
            responses: [
                (200, "The provider's answer (JSON, or `text/event-stream` when `stream` is true)."),
                (400, "`unbounded_request` or `api_not_supported` (the provider does not speak this API)."),
                (401, "`invalid_api_key`."), (403, "`model_not_allowed`."), (429, "`budget_exceeded`."),
                (502, "`upstream_error` or `upstream_unreachable`."), (504, "`upstream_timeout`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/messages", summary: "Call a model through Anthropic's Messages API",
            description:
                "Anthropic's Messages API, plain or streamed (settled on `message_start` and the last `message_delta`), for models of an `apiStyle: anthropic` or `simulated` provider. The agent's token goes in `x-api-key` or as a Bearer token; errors come back in Anthropic's shape.",
            auth: .agent, request: "Anthropic's Messages request (`model`, `messages`, `system`, `max_tokens`, `stream`, ...).",
            responses: [
                (200, "The provider's answer (JSON, or `text/event-stream` when `stream` is true)."),
                (400, "`invalid_request_error`, or the provider does not speak this API."),
                (401, "`authentication_error`."), (403, "`permission_error`: no policy allows the model."),
                (429, "`rate_limit_error`: a budget refused the call."), (502, "`api_error`: the upstream failed."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/embeddings", summary: "Embed text through the gateway",
            description:
                "OpenAI's embeddings: input tokens bounded by the body's size, no output tokens; metered and settled from `usage.prompt_tokens`.",
            auth: .agent, request: "OpenAI's embeddings request (`model`, `input`, `encoding_format`, `dimensions`).",
            responses: [
                (200, "`{\"object\": \"list\", \"data\": [{\"embedding\", \"index\"}], \"usage\"}`."),
                (401, "`invalid_api_key`."), (403, "`model_not_allowed`."), (429, "`budget_exceeded`."),
                (502, "`upstream_error` or `upstream_unreachable`."), (504, "`upstream_timeout`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/mcp", summary: "The agent's MCP endpoint (streamable HTTP, stateless)",
            description:
                "JSON-RPC over MCP's streamable HTTP transport (protocol 2025-11-25, 2025-06-18, 2025-03-26): `initialize`, `tools/list` (the pinned tools the agent's policies allow, and only the current step's while it serves one; named `SERVER__TOOL` on the wire), `tools/call` (policy and pin checked again, forwarded with the server's credential, recorded as a ToolCall event).",
            auth: .agent, request: "A JSON-RPC 2.0 request or notification.",
            responses: [
                (200, "The JSON-RPC response (JSON)."), (202, "A notification was accepted."),
                (401, "Not a running agent's token."),
            ]),
        Route(
            server: agentAPI, method: "GET", path: "/mcp", summary: "MCP server-to-client stream (not offered)",
            description: "The endpoint is stateless and sends nothing unasked: answered 405, as the transport allows.",
            auth: .agent, request: nil, responses: [(405, "No event stream is offered.")]),
        Route(
            server: agentAPI, method: "DELETE", path: "/mcp", summary: "End an MCP session (nothing to end)",
            description: "The endpoint keeps no session; answered 405.", auth: .agent, request: nil,
            responses: [(405, "No session to end.")]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/next", summary: "Long-poll for the agent's next task",
            description:
                "`?wait=SECONDS` (at most and by default 25). The task is leased to the agent for its step's `heartbeatTimeout`.",
            auth: .agent, request: nil,
            responses: [
                (
                    200,
                    "The task: `task`, `run`, `step`, `attempt`, `idempotencyKey`, `prompt`, `tools`, `input`, `inputs`, `dependencies`, `dataClasses`, `leaseExpiresAt`, `deadline`, ..."
                ), (204, "No task within `wait`."), (401, "`invalid_api_key`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/stream", summary: "Receive tasks and answer them on one open request",
            description:
                "NDJSON both ways. The server pushes `{\"next\": TASK, \"traceparent\"}` when the agent holds no task from the stream; the agent answers each with a line `{\"task\": \"RUN/STEP/ATTEMPT\", \"output\": ANY}` (complete), `{\"task\", \"error\", \"retry\"}` (fail) or `{\"task\", \"heartbeat\": true}`, and gets one line back: what the route of the same name answers (a completion's carries `next`, claimed in the same transaction), or `{\"task\", \"status\", \"error\"}`. `?wait=SECONDS` (at most and by default 25): how long the stream waits for a task when none is Ready before it ends. A connection silent for 30 s is closed: heartbeat on the stream at least every 20 s while working.",
            auth: .agent, request: "NDJSON: one answer a line",
            responses: [
                (200, "`application/x-ndjson`: tasks and answers, one a line; ends after `wait` without a task"),
                (400, "`invalid_request`."), (401, "`invalid_api_key`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/{run}/{step}/{attempt}/heartbeat", summary: "Extend a task's lease",
            description: "Sent while the agent works on the task.", auth: .agent, request: nil,
            responses: [
                (200, "`{\"leaseExpiresAt\"}`"), (404, "`not_found`."),
                (409, "`conflict`: the task is no longer the agent's; stop working on it."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/{run}/{step}/{attempt}/complete", summary: "Complete a task with its output",
            description:
                "The output (any JSON) goes on the run's blackboard and the next steps start. `?next=SECONDS` (at most 25): the answer's `next` is the agent's next task, claimed in the same transaction when one is Ready (a chain's next step), else waited for up to SECONDS as `/v1/tasks/next` does; null when none came.",
            auth: .agent,
            request: "`{\"output\": ANY}`",
            responses: [
                (200, "`{\"state\": \"Succeeded\"}`; with `?next`, also `next`: the next task (as `/v1/tasks/next` gives it) or null"),
                (400, "`invalid_request`."), (404, "`not_found`."), (409, "`conflict`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/{run}/{step}/{attempt}/fail", summary: "Fail a task",
            description: "Retried after the step's backoff, or a dead letter past its last attempt.", auth: .agent,
            request: "`{\"error\": \"...\", \"retry\": true}` (`retry: false` when another attempt cannot help)",
            responses: [
                (200, "`{\"state\": \"Ready\", \"retryAt\"}` or `{\"state\": \"DeadLetter\"}`"), (404, "`not_found`."),
                (409, "`conflict`."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/{run}/{step}/{attempt}/publish",
            summary: "Write a blackboard topic of the task's run",
            description:
                "For a running task whose step lists the topic in `publish`; every write is a new version. Subscribers read the latest.",
            auth: .agent, request: "`{\"topic\": \"...\", \"value\": ANY}`",
            responses: [
                (200, "`{\"topic\", \"version\"}`"), (400, "`invalid_request`."),
                (403, "`forbidden`: the step does not publish the topic (only declared topics are audited)."), (404, "`not_found`."),
                (409, "`conflict`: the task is no longer running."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tasks/{run}/{step}/{attempt}/read",
            summary: "Read a blackboard topic of the task's run",
            description:
                "For a running task whose step lists the topic in `subscribe`: the latest value written (null, version 0, before any).",
            auth: .agent, request: "`{\"topic\": \"...\"}`",
            responses: [
                (200, "`{\"topic\", \"version\", \"value\", \"step\", \"writtenAt\"}`"), (400, "`invalid_request`."),
                (403, "`forbidden`: the step does not subscribe to the topic."), (404, "`not_found`."),
                (409, "`conflict`: the task is no longer running."),
            ]),
        Route(
            server: agentAPI, method: "POST", path: "/v1/tools/{name}/invoke", summary: "Call a Tool",
            description:
                "The agent's policies must allow the tool and the task it serves (`x-orl-run`, `x-orl-step`, or its only task) must list it. orl adds the credential; the agent never sees it.",
            auth: .agent, request: "`{\"input\": ANY}`",
            responses: [
                (200, "`{\"tool\", \"task\", \"status\", \"output\"}`"), (403, "`tool_not_allowed` or `forbidden`."),
                (404, "`tool_not_found`."),
                (502, "`tool_failed`."), (503, "`tool_credential_missing`."), (504, "`tool_timeout`."),
            ]),
        Route(
            server: agentAPI, method: "GET", path: "/orl/v1/budgets", summary: "Budget status (operator)",
            description: "What `orlctl budget status` reads: spend, reservations in flight, and which budgets refused a call.",
            auth: .operatorToken, request: nil, responses: [(200, "`{\"budgets\": [...]}`"), (401, "Not the operator token.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/style.css", summary: "Dashboard stylesheet",
            description: "The dashboard's CSS, built into the binary (no CDN).",
            auth: .none, request: nil, responses: [(200, "text/css")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/login", summary: "Dashboard login page",
            description: "A form for the operator token.",
            auth: .none, request: nil, responses: [(200, "HTML.")]),
        Route(
            server: agentAPI, method: "POST", path: "/ui/login", summary: "Log in to the dashboard",
            description:
                "`token` = the operator token of <state>/controller.token; sets the `orl_session` cookie (HttpOnly, SameSite=Strict, Path=/ui). Refused without this server's `Origin`.",
            auth: .none, request: "application/x-www-form-urlencoded",
            responses: [(303, "To `/ui`, with the cookie."), (401, "Not the operator token."), (403, "Cross-site request.")]),
        Route(
            server: agentAPI, method: "POST", path: "/ui/logout", summary: "Log out of the dashboard",
            description: "Clears the cookie. Needs the form's `csrf` token and this server's `Origin`.",
            auth: .dashboardSession, request: "application/x-www-form-urlencoded",
            responses: [(303, "To `/ui/login`."), (403, "Missing or wrong `csrf` token, or cross-site.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui", summary: "Dashboard: fleet",
            description: "Agents with phases, restarts and today's spend; approvals waiting, with approve and deny.",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/agents/{namespace}/{name}", summary: "Dashboard: agent",
            description: "An agent's effective permissions (policies, rules, decisions on its model, tools and secrets), spend and events.",
            auth: .dashboardSession, request: nil,
            responses: [(200, "HTML."), (303, "To `/ui/login` without a session."), (404, "Not applied.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/runs", summary: "Dashboard: runs",
            description: "The latest runs.",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/runs/{id}", summary: "Dashboard: run",
            description: "A run's DAG (inline SVG) with step states, its steps, approval forms and events.",
            auth: .dashboardSession, request: nil,
            responses: [(200, "HTML."), (303, "To `/ui/login` without a session."), (404, "No such run.")]),
        Route(
            server: agentAPI, method: "POST", path: "/ui/runs/{id}/decide", summary: "Approve or deny an approval step",
            description:
                "`step`, `decision` (approve or deny), `reason`, `csrf`: recorded as `orlctl approve`/`deny` records it. Needs this server's `Origin`.",
            auth: .dashboardSession, request: "application/x-www-form-urlencoded",
            responses: [
                (303, "Back to the run."), (400, "Missing fields."), (403, "Missing or wrong `csrf` token, or cross-site."),
                (409, "The step is not waiting."),
            ]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/budgets", summary: "Dashboard: budgets",
            description: "Each budget account's spend, reservations and limit; spend per day over two weeks against day limits (SVG).",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/sources", summary: "Dashboard: sources",
            description: "Git sources: applied and attempted revisions, results, failures.",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/alerts", summary: "Dashboard: alert deliveries",
            description: "The alert outbox: each notification's state, attempts and last error.",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/ui/events", summary: "Dashboard: events",
            description: "The latest events of the state.",
            auth: .dashboardSession, request: nil, responses: [(200, "HTML."), (303, "To `/ui/login` without a session.")]),
        Route(
            server: agentAPI, method: "GET", path: "/metrics", summary: "Prometheus metrics (operator)",
            description:
                "The Prometheus text format (0.0.4): the OpenTelemetry GenAI client metrics (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`, `gen_ai_client_operation_time_to_first_chunk_seconds`), orl's cost, token, refusal, tool and step counters, and gauges read from the state at each scrape (budgets, agent phases and restarts, run steps, approvals, sources). `orlctl controller --metrics-listen HOST:PORT` also serves this route there, without a token, for a scraper on a trusted network. See docs/observability.md.",
            auth: .operatorToken, request: nil,
            responses: [(200, "`text/plain; version=0.0.4`"), (401, "Not the operator token.")]),
        Route(
            server: agentAPI, method: "GET", path: "/healthz", summary: "Liveness", description: "Answers `ok`.", auth: .none, request: nil,
            responses: [(200, "`ok`")]),
        Route(
            server: webhook, method: "POST", path: "/webhook", summary: "Receive a push webhook (`orlctl watch --webhook`)",
            description:
                "GitHub-style deliveries: a `push` to the watched ref with a valid signature syncs at once; other refs and events are acknowledged and ignored; `ping` is answered.",
            auth: .webhookSignature, request: "The delivery (`application/json`), with `X-GitHub-Event` and `X-Hub-Signature-256`.",
            responses: [
                (200, "`ping` answered."), (202, "Syncing, or ignored."), (401, "Missing or wrong signature."), (413, "Body too large."),
            ]),
    ]

    /// JSON Schemas of the bodies agents exchange with the controller, by name.
    static let schemas: [(String, JSONValue)] = [
        (
            "Error",
            object(
                ["error"],
                [
                    (
                        "error",
                        object(
                            ["message", "type"],
                            [
                                ("message", string("What went wrong.")), ("type", string("OpenAI's error type.")),
                                ("code", string("orl's code.")),
                            ])
                    )
                ])
        ),
        (
            "Task",
            object(
                [
                    "task", "run", "workflow", "namespace", "step", "agent", "attempt", "attempts", "idempotencyKey", "tools",
                    "leaseExpiresAt", "deadline",
                ],
                [
                    ("task", string("RUN/STEP/ATTEMPT: the path of the task's calls.")), ("run", string("The run id.")),
                    ("workflow", string("The Workflow.")), ("namespace", string("Its namespace.")), ("step", string("The step id.")),
                    ("agent", string("The agent the step is for.")), ("attempt", integer("This attempt, from 1.")),
                    ("attempts", integer("The step's attempts in all.")),
                    ("idempotencyKey", string("RUN/STEP, the same for every attempt: pass it to side effects.")),
                    ("prompt", string("The step's prompt.")),
                    ("tools", .object([("type", .string("array")), ("items", .object([("type", .string("string"))]))])),
                    ("maxTokens", integer("The step's token allowance.")),
                    ("input", .object([("description", .string("The run's input."))])),
                    ("inputs", .object([("description", .string("The step's inputs, resolved."))])),
                    ("dependencies", .object([("description", .string("The outputs of the steps it depends on, by step id."))])),
                    ("dataClasses", .object([("type", .string("array")), ("items", .object([("type", .string("string"))]))])),
                    ("leaseExpiresAt", string("Heartbeat before this time.")), ("deadline", string("The attempt's timeout.")),
                    ("heartbeatTimeoutMs", integer("The lease a heartbeat gives.")),
                ])
        ),
    ]

    /// The schemas of each route's bodies: the request's, and the answers' by status.
    static let bodies: [String: (request: String?, responses: [Int: String])] = [
        "POST /v1/tasks/next": (nil, [200: "Task"])
    ]

    private static func object(_ required: [String], _ properties: [(String, JSONValue)]) -> JSONValue {
        .object([("type", .string("object")), ("required", .array(required.map { .string($0) })), ("properties", .object(properties))])
    }
    private static func string(_ description: String) -> JSONValue {
        .object([("type", .string("string")), ("description", .string(description))])
    }
    private static func integer(_ description: String) -> JSONValue {
        .object([("type", .string("integer")), ("description", .string(description))])
    }
    private static func content(_ schema: String) -> JSONValue {
        .object([("application/json", .object([("schema", .object([("$ref", .string("#/components/schemas/\(schema)"))]))]))])
    }

    /// `METHOD /path` of every route of a server, as the router lists them.
    public static func keys(server: String) -> Set<String> {
        Set(routes.filter { $0.server == server }.map { "\($0.method) \($0.path)" })
    }

    /// The OpenAPI 3.1 document of every route.
    public static func openAPI(version: String) -> JSONValue {
        var paths: [(String, JSONValue)] = []
        for route in routes {
            let path = route.path
            let parameters = route.path.split(separator: "/").filter { $0.hasPrefix("{") }.map { name in
                JSONValue.object([
                    ("name", .string(String(name.dropFirst().dropLast()))), ("in", .string("path")), ("required", .bool(true)),
                    ("schema", .object([("type", .string("string"))])),
                ])
            }
            let operation = JSONValue.object([
                ("summary", .string(route.summary)),
                ("description", .string(route.description)),
                ("tags", .array([.string(route.server)])),
                ("parameters", parameters.isEmpty ? nil : .array(parameters)),
                ("security", route.auth == .none ? .array([]) : .array([.object([(route.auth.rawValue, .array([]))])])),
                (
                    "requestBody",
                    route.request.map {
                        .object([("description", .string($0)), ("content", .object([("application/json", .object([]))]))])
                    }
                ),
                (
                    "responses",
                    .object(
                        route.responses.map { response in
                            let body =
                                bodies["\(route.method) \(route.path)"]?.responses[response.status]
                                ?? (response.status >= 400 && route.server == agentAPI ? "Error" : nil)
                            return (
                                String(response.status),
                                .object([("description", .string(response.description)), ("content", body.map(content))])
                            )
                        })
                ),
            ])
            if let index = paths.firstIndex(where: { $0.0 == path }), case .object(var members) = paths[index].1 {
                members.append((route.method.lowercased(), operation))
                paths[index].1 = .object(members)
            } else {
                paths.append((path, .object([(route.method.lowercased(), operation)])))
            }
        }
        let bearer = { (description: String) in
            JSONValue.object([("type", .string("http")), ("scheme", .string("bearer")), ("description", .string(description))])
        }
        return .object([
            ("openapi", .string("3.1.0")),
            (
                "info",
                .object([
                    ("title", .string("orl HTTP APIs")), ("version", .string(version)),
                    (
                        "description",
                        .string(
                            "Generated by scripts/gen-docs from APICatalog (Sources/OrlServer/APICatalog.swift). The controller serves the `controller` routes on loopback (its URL is in <state>/controller.api; agents get it as ORL_API_URL, and OPENAI_BASE_URL is its /v1); `orlctl watch --webhook` serves the `webhook` route. Errors are OpenAI-style bodies: {\"error\": {\"message\", \"type\", \"code\"}}."
                        )
                    ),
                ])
            ),
            ("paths", .object(paths)),
            (
                "components",
                .object([
                    ("schemas", .object(schemas)),
                    (
                        "securitySchemes",
                        .object([
                            ("agent", bearer("The agent's own token: ORL_TOKEN, the same as its OPENAI_API_KEY.")),
                            ("operatorToken", bearer("The operator token in <state>/controller.token (mode 0600).")),
                            (
                                "dashboardSession",
                                .object([
                                    ("type", .string("apiKey")), ("in", .string("cookie")), ("name", .string("orl_session")),
                                    (
                                        "description",
                                        .string(
                                            "Set by POST /ui/login for the operator token; POSTs also need the form's csrf token and this server's Origin."
                                        )
                                    ),
                                ])
                            ),
                            (
                                "webhookSignature",
                                .object([
                                    ("type", .string("apiKey")), ("in", .string("header")), ("name", .string("X-Hub-Signature-256")),
                                    ("description", .string("sha256= and the HMAC-SHA256 of the body with the webhook secret.")),
                                ])
                            ),
                        ])
                    ),
                ])
            ),
        ])
    }
}

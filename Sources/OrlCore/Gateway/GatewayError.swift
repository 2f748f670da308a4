import OrlJSON

/// Why the gateway answers a call itself instead of forwarding it: each becomes an
/// OpenAI-style error body, so that a stock SDK raises its usual exception.
public struct GatewayError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The HTTP status.
    public var status: Int
    /// OpenAI's `error.type`.
    public var type: String
    /// OpenAI's `error.code`: machine-readable, stable.
    public var code: String
    public var message: String
    public var param: String?

    public init(status: Int, type: String, code: String, message: String, param: String? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.param = param
    }

    public var description: String { "\(status) \(code): \(message)" }

    /// `{"error":{"message":…,"type":…,"param":…,"code":…}}`
    public var body: String {
        JSONValue.object([
            (
                "error",
                .object([
                    ("message", .string(message)), ("type", .string(type)), ("param", param.map(JSONValue.string) ?? .null),
                    ("code", .string(code)),
                ])
            )
        ]).compactRendered()
    }

    /// The error as the API's clients expect it: Anthropic's SDKs read
    /// `{"type":"error","error":{"type":…,"message":…}}`, OpenAI's `body`.
    public func body(for api: ModelAPI) -> String {
        guard api == .messages else { return body }
        let type =
            switch status {
            case 400: "invalid_request_error"
            case 401: "authentication_error"
            case 403: "permission_error"
            case 404: "not_found_error"
            case 413: "request_too_large"
            case 429: "rate_limit_error"
            case 504: "timeout_error"
            default: status >= 500 ? "api_error" : "invalid_request_error"
            }
        return JSONValue.object([
            ("type", .string("error")),
            ("error", .object([("type", .string(type)), ("message", .string(message)), ("code", .string(code))])),
        ]).compactRendered()
    }

    public static func unauthenticated(_ message: String) -> GatewayError {
        GatewayError(status: 401, type: "invalid_request_error", code: "invalid_api_key", message: message)
    }

    public static func invalidRequest(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError(status: 400, type: "invalid_request_error", code: "invalid_request", message: message, param: param)
    }

    public static func modelNotAllowed(_ message: String) -> GatewayError {
        GatewayError(status: 403, type: "permission_error", code: "model_not_allowed", message: message, param: "model")
    }

    public static func modelNotFound(_ message: String) -> GatewayError {
        GatewayError(status: 404, type: "invalid_request_error", code: "model_not_found", message: message, param: "model")
    }

    public static func budgetExceeded(_ message: String) -> GatewayError {
        GatewayError(status: 429, type: "insufficient_quota", code: "budget_exceeded", message: message)
    }

    public static func upstream(status: Int, code: String, _ message: String) -> GatewayError {
        GatewayError(status: status, type: "upstream_error", code: code, message: message)
    }

    public static func toolNotFound(_ message: String) -> GatewayError {
        GatewayError(status: 404, type: "invalid_request_error", code: "tool_not_found", message: message, param: "tool")
    }

    public static func toolNotAllowed(_ message: String) -> GatewayError {
        GatewayError(status: 403, type: "permission_error", code: "tool_not_allowed", message: message, param: "tool")
    }

    /// The tool answered with a failure (a non-2xx status, a non-zero exit), or could not be run.
    public static func toolFailed(status: Int = 502, code: String = "tool_failed", _ message: String) -> GatewayError {
        GatewayError(status: status, type: "tool_error", code: code, message: message)
    }

    /// A refused run operation (a task call), with the status its kind maps to.
    public init(_ error: RunError) {
        switch error.kind {
        case .notFound: self.init(status: 404, type: "invalid_request_error", code: "not_found", message: error.message)
        case .invalid: self.init(status: 400, type: "invalid_request_error", code: "invalid_request", message: error.message)
        case .conflict: self.init(status: 409, type: "invalid_request_error", code: "conflict", message: error.message)
        case .forbidden: self.init(status: 403, type: "permission_error", code: "forbidden", message: error.message)
        case .store: self.init(status: 503, type: "server_error", code: "store_unavailable", message: error.message)
        }
    }
}

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
}

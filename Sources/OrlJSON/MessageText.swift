/// How values appear inside messages, the schema validator's and the core's alike.
public enum MessageText {
    /// A value as messages show it: in double quotes, escaped so the message stays on
    /// one line, and shortened when long.
    public static func quoted(_ text: String) -> String {
        let limit = 60
        var out = "\""
        for (i, scalar) in text.unicodeScalars.enumerated() {
            if i == limit {
                out += "…"
                break
            }
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

import OrlCore

/// The dashboard's pages as Swift string templates: every value from the state goes
/// through `escape` (or `attribute`), the one place HTML escaping happens. Plain Swift,
/// not a template engine: the pages are few, the compiler checks every field they use,
/// and the binary gains no dependency and no template files to embed.
enum HTML {
    /// Text and attribute values alike: `&`, `<`, `>`, `"` and `'` escaped.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// A path segment in a link (`/ui/runs/ID`), percent-encoded, then escaped.
    static func path(_ segment: String) -> String {
        var out = ""
        for byte in segment.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }

    static let style = """
        *{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#f5f6f8}
        header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
        header a{color:#cfd6e4;text-decoration:none}header a:hover,header a.on{color:#fff}header strong{margin-right:1rem}
        header form{margin-left:auto}main{padding:1rem 1.2rem;max-width:1200px}
        h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
        table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
        th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eceef2;vertical-align:top}th{background:#f0f2f5;font-weight:600}
        code{font:12px ui-monospace,monospace}.muted{color:#6b7385}.warn{color:#a15c00}.bad{color:#b3261e}.good{color:#1e7b34}
        .pill{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:12px;background:#e6e9ef}
        .Succeeded,.Running,.Current,.Applied,.Delivered{background:#d9f2df}.Failed,.DeadLetter,.CrashLoopBackOff,.Refused,.Invalid,.Unreachable{background:#f8d7d4}
        .WaitingApproval,.Pending,.Ready,.BackOff,.Halted{background:#fdebc8}
        form.inline{display:inline-flex;gap:.3rem;align-items:center}input[type=text],input[type=password]{padding:.3rem .4rem;border:1px solid #c5cad3;border-radius:4px}
        button{padding:.3rem .7rem;border:1px solid #8a93a5;border-radius:4px;background:#fff;cursor:pointer}button.approve{border-color:#1e7b34;color:#1e7b34}
        button.deny{border-color:#b3261e;color:#b3261e}.login{max-width:360px;margin:4rem auto;background:#fff;padding:1.5rem;border:1px solid #dde1e8}
        .login input{width:100%;margin:.5rem 0 1rem}.error{color:#b3261e}svg text{font:12px system-ui,sans-serif}
        .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.6rem}.card{background:#fff;border:1px solid #dde1e8;padding:.6rem .8rem}
        .card b{display:block;font-size:1.4rem}
        """

    static func page(title: String, active: String, csrf: String?, _ body: String) -> String {
        let links = [
            ("fleet", "/ui", "Fleet"), ("runs", "/ui/runs", "Runs"), ("budgets", "/ui/budgets", "Budgets"),
            ("sources", "/ui/sources", "Sources"), ("alerts", "/ui/alerts", "Alerts"), ("events", "/ui/events", "Events"),
        ]
        let nav = links.map { key, href, label in "<a href=\"\(href)\"\(key == active ? " class=\"on\"" : "")>\(label)</a>" }.joined()
        let logout =
            csrf.map {
                "<form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"\(escape($0))\"><button>Log out</button></form>"
            } ?? ""
        return """
            <!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
            <title>\(escape(title)) · orl</title><link rel="stylesheet" href="/ui/style.css"></head>
            <body><header><strong>orl</strong>\(csrf == nil ? "" : nav)\(logout)</header><main>\(body)</main></body></html>
            """
    }

    static func pill(_ text: String) -> String { "<span class=\"pill \(escape(text))\">\(escape(text))</span>" }

    static func table(_ headers: [String], _ rows: [[String]], empty: String) -> String {
        guard !rows.isEmpty else { return "<p class=\"muted\">\(escape(empty))</p>" }
        let head = headers.map { "<th>\(escape($0))</th>" }.joined()
        let body = rows.map { "<tr>" + $0.map { "<td>\($0)</td>" }.joined() + "</tr>" }.joined()
        return "<table><thead><tr>\(head)</tr></thead><tbody>\(body)</tbody></table>"
    }

    static func time(_ t: Timestamp?) -> String {
        t.map { "<span title=\"\(escape($0.description))\">\(escape($0.rfc3339Seconds))</span>" } ?? "–"
    }

    static func usd(_ value: Double) -> String {
        let cents = (value * 10000).rounded() / 10000
        return "$" + String(cents)
    }
}

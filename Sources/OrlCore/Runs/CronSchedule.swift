/// A five-field cron expression (`minute hour day-of-month month day-of-week`),
/// evaluated in UTC, read as Vixie cron reads it: `*`, numbers, ranges `a-b`, lists
/// `a,b`, steps `*/n`, `a-b/n` and `a/n`, month and weekday names (`jan`, `mon-fri`),
/// Sunday as 0 or 7. When both day fields are restricted (neither starts with `*`), a
/// day matches when either does, as in every cron since Vixie's.
///
/// Slots are whole UTC minutes. The schedule finds them by jumping a month, a day or an
/// hour at a time over what cannot match, so even a yearly schedule is a few hundred
/// steps, and a schedule that can never fire (`0 0 30 2 *`) is seen as such.
public struct CronSchedule: Sendable, Hashable, CustomStringConvertible {
    public let expression: String
    private let minutes: UInt64
    private let hours: UInt64
    private let days: UInt64
    private let months: UInt64
    private let weekdays: UInt64
    /// Vixie cron's rule: the day fields combine with "or" only when both are restricted.
    private let eitherDay: Bool

    public var description: String { expression }

    public init(parsing expression: String) throws(CronSyntaxError) {
        let fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw CronSyntaxError(
                "\(Diagnostic.quoted(expression)) has \(fields.count) field\(fields.count == 1 ? "" : "s"); a cron expression has five: minute hour day-of-month month day-of-week"
            )
        }
        self.expression = expression
        minutes = try Self.field(fields[0], .minute)
        hours = try Self.field(fields[1], .hour)
        days = try Self.field(fields[2], .dayOfMonth)
        months = try Self.field(fields[3], .month)
        var weekdays = try Self.field(fields[4], .dayOfWeek)
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 { weekdays = (weekdays | 1) & ~(1 << 7) }
        self.weekdays = weekdays
        eitherDay = !fields[2].hasPrefix("*") && !fields[4].hasPrefix("*")
        guard next(after: Timestamp(milliseconds: 0)) != nil else {
            throw CronSyntaxError("\(Diagnostic.quoted(expression)) never fires: no month has that day")
        }
    }

    /// The first slot strictly after `time`; nil for a schedule that never fires.
    public func next(after time: Timestamp) -> Timestamp? {
        let start = Self.floorDivide(time.milliseconds, 60_000) + 1
        var minute = start
        while minute - start <= Self.horizon {
            let day = Self.floorDivide(minute, 1440)
            let date = CivilDate(daysSinceEpoch: Int(day))
            let ofDay = Int(minute - day * 1440)
            if !Self.has(months, date.month) {
                minute = Int64(date.nextMonth.daysSinceEpoch) * 1440
            } else if !dayMatches(date, day) {
                minute = (day + 1) * 1440
            } else if !Self.has(hours, ofDay / 60) {
                minute = day * 1440 + Int64(ofDay / 60 + 1) * 60
            } else if let m = Self.first(in: minutes, from: ofDay % 60) {
                return Timestamp(milliseconds: (day * 1440 + Int64(ofDay / 60 * 60 + m)) * 60_000)
            } else {
                minute = day * 1440 + Int64(ofDay / 60 + 1) * 60
            }
        }
        return nil
    }

    /// The latest slot at or before `time`: the one a scheduler that woke up at `time`
    /// owes a run. Nil when none in the last eight years.
    public func latest(atOrBefore time: Timestamp) -> Timestamp? {
        let start = Self.floorDivide(time.milliseconds, 60_000)
        var minute = start
        while start - minute <= Self.horizon {
            let day = Self.floorDivide(minute, 1440)
            let date = CivilDate(daysSinceEpoch: Int(day))
            let ofDay = Int(minute - day * 1440)
            if !Self.has(months, date.month) {
                minute = Int64(CivilDate(year: date.year, month: date.month, day: 1).daysSinceEpoch) * 1440 - 1
            } else if !dayMatches(date, day) {
                minute = day * 1440 - 1
            } else if !Self.has(hours, ofDay / 60) {
                minute = day * 1440 + Int64(ofDay / 60) * 60 - 1
            } else if let m = Self.last(in: minutes, upTo: ofDay % 60) {
                return Timestamp(milliseconds: (day * 1440 + Int64(ofDay / 60 * 60 + m)) * 60_000)
            } else {
                minute = day * 1440 + Int64(ofDay / 60) * 60 - 1
            }
        }
        return nil
    }

    /// How many times it fires in an average month: its slots over a whole 400-year
    /// cycle of the Gregorian calendar (after which weekdays and leap days repeat) over
    /// the cycle's 4,800 months. What a cost projection multiplies a run's cost by.
    public var firingsPerMonth: Double {
        var days = 0
        for (index, count) in Self.calendarCycle.enumerated() where count > 0 {
            let (month, day, weekday) = (index / (31 * 7) + 1, index / 7 % 31 + 1, index % 7)
            let byDay = Self.has(self.days, day)
            let byWeekday = Self.has(weekdays, weekday)
            if Self.has(months, month) && (eitherDay ? byDay || byWeekday : byDay && byWeekday) { days += count }
        }
        return Double(days * minutes.nonzeroBitCount * hours.nonzeroBitCount) / 4_800
    }

    /// How many days of a 400-year cycle fall on each (month, day of month, weekday),
    /// indexed `((month - 1) * 31 + day - 1) * 7 + weekday`: counted once, then every
    /// schedule's days are a sum over 2,604 entries.
    private static let calendarCycle: [Int] = {
        var counts = [Int](repeating: 0, count: 12 * 31 * 7)
        for day in 0..<146_097 {
            let date = CivilDate(daysSinceEpoch: day)
            let weekday = (day % 7 + 4) % 7  // 1970-01-01 was a Thursday
            counts[((date.month - 1) * 31 + date.day - 1) * 7 + weekday] += 1
        }
        return counts
    }()

    /// Eight years of minutes: long enough to reach a February 29 across a century
    /// year that is not a leap year (2096 to 2104).
    private static let horizon: Int64 = 8 * 366 * 1440

    private func dayMatches(_ date: CivilDate, _ daysSinceEpoch: Int64) -> Bool {
        let weekday = Int((daysSinceEpoch % 7 + 7 + 4) % 7)  // 1970-01-01 was a Thursday
        let byDay = Self.has(days, date.day)
        let byWeekday = Self.has(weekdays, weekday)
        return eitherDay ? byDay || byWeekday : byDay && byWeekday
    }

    private static func has(_ set: UInt64, _ value: Int) -> Bool { set & (1 << UInt64(value)) != 0 }

    private static func first(in set: UInt64, from value: Int) -> Int? {
        let rest = set >> UInt64(value)
        return rest == 0 ? nil : value + rest.trailingZeroBitCount
    }

    private static func last(in set: UInt64, upTo value: Int) -> Int? {
        let rest = set & (value >= 63 ? UInt64.max : (1 << UInt64(value + 1)) - 1)
        return rest == 0 ? nil : 63 - rest.leadingZeroBitCount
    }

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    // MARK: Parsing

    private enum Field: String {
        case minute, hour
        case dayOfMonth = "day-of-month"
        case month
        case dayOfWeek = "day-of-week"

        var range: ClosedRange<Int> {
            switch self {
            case .minute: 0...59
            case .hour: 0...23
            case .dayOfMonth: 1...31
            case .month: 1...12
            case .dayOfWeek: 0...7
            }
        }

        var names: [String] {
            switch self {
            case .month: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            case .dayOfWeek: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
            default: []
            }
        }

        /// The value of the first name.
        var firstNamed: Int { self == .month ? 1 : 0 }
    }

    private static func field(_ text: String, _ field: Field) throws(CronSyntaxError) -> UInt64 {
        var set: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            var step = 1
            if parts.count == 2 {
                guard let n = Int(parts[1]), n > 0, n <= field.range.upperBound else {
                    throw CronSyntaxError(
                        "\(field.rawValue) field \(Diagnostic.quoted(text)): the step \(Diagnostic.quoted(String(parts[1]))) is not a number from 1 to \(field.range.upperBound)"
                    )
                }
                step = n
            }
            let span = parts[0]
            var low: Int
            var high: Int
            if span == "*" {
                low = field.range.lowerBound
                high = field == .dayOfWeek ? 6 : field.range.upperBound
            } else {
                let ends = span.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                low = try value(String(ends[0]), field, in: text)
                if ends.count == 2 {
                    high = try value(String(ends[1]), field, in: text)
                    guard low <= high else {
                        throw CronSyntaxError("\(field.rawValue) field \(Diagnostic.quoted(text)): the range \(span) runs backwards")
                    }
                } else {
                    // `5/15` is every 15 from 5 to the end of the range (cronie's reading).
                    high = parts.count == 2 ? (field == .dayOfWeek ? 6 : field.range.upperBound) : low
                }
            }
            var v = low
            while v <= high {
                set |= 1 << UInt64(v)
                v += step
            }
        }
        return set
    }

    private static func value(_ text: String, _ field: Field, in whole: String) throws(CronSyntaxError) -> Int {
        if let n = Int(text), text.allSatisfy(\.isASCII) {
            guard field.range.contains(n) else {
                throw CronSyntaxError(
                    "\(field.rawValue) field \(Diagnostic.quoted(whole)): \(n) is out of range \(field.range.lowerBound)-\(field.range.upperBound)"
                )
            }
            return n
        }
        if let i = field.names.firstIndex(of: text.lowercased()) { return i + field.firstNamed }
        let named = field.names.isEmpty ? "" : " or a name (\(field.names.first!)-\(field.names.last!))"
        throw CronSyntaxError(
            "\(field.rawValue) field \(Diagnostic.quoted(whole)): \(Diagnostic.quoted(text)) is not a number from \(field.range.lowerBound) to \(field.range.upperBound)\(named)"
        )
    }
}

public struct CronSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

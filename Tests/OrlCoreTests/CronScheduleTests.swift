import Foundation
import OrlCore
import OrlJSON
import Testing

/// `2026-11-20T08:00` (UTC) as a timestamp.
func utc(_ text: String) -> Timestamp {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withDashSeparatorInDate]
    formatter.timeZone = TimeZone(identifier: "UTC")
    let date = formatter.date(from: text.count == 16 ? text + ":00" : text)!
    return Timestamp(milliseconds: Int64(date.timeIntervalSince1970 * 1000))
}

@Suite struct CronScheduleTests {
    func next(_ expression: String, after time: String) throws -> String? {
        try CronSchedule(parsing: expression).next(after: utc(time))?.rfc3339Seconds
    }

    func latest(_ expression: String, at time: String) throws -> String? {
        try CronSchedule(parsing: expression).latest(atOrBefore: utc(time))?.rfc3339Seconds
    }

    @Test func everyFifteenMinutes() throws {
        #expect(try next("*/15 * * * *", after: "2026-11-20T10:07") == "2026-11-20T10:15:00Z")
        #expect(try next("*/15 * * * *", after: "2026-11-20T10:15") == "2026-11-20T10:30:00Z")
        #expect(try next("*/15 * * * *", after: "2026-11-20T23:50") == "2026-11-21T00:00:00Z")
        #expect(try latest("*/15 * * * *", at: "2026-11-20T10:07") == "2026-11-20T10:00:00Z")
        // A slot is its own latest slot: the one owed at that very minute.
        #expect(try latest("*/15 * * * *", at: "2026-11-20T10:15") == "2026-11-20T10:15:00Z")
    }

    @Test func weekdayMornings() throws {
        // 2026-11-20 is a Friday: the next weekday 07:00 is Monday's.
        #expect(try next("0 7 * * 1-5", after: "2026-11-20T08:00") == "2026-11-23T07:00:00Z")
        #expect(try next("0 7 * * mon-fri", after: "2026-11-20T06:59") == "2026-11-20T07:00:00Z")
        #expect(try latest("0 7 * * 1-5", at: "2026-11-22T12:00") == "2026-11-20T07:00:00Z")
    }

    @Test func februaryTwentyNinthComesEveryFourYears() throws {
        #expect(try next("0 0 29 2 *", after: "2025-03-01T00:00") == "2028-02-29T00:00:00Z")
        #expect(try latest("0 0 29 2 *", at: "2027-12-31T23:59") == "2024-02-29T00:00:00Z")
    }

    @Test func bothDayFieldsRestrictedMeansEither() throws {
        // The 1st of the month, and every Monday (Vixie cron).
        let cron = try CronSchedule(parsing: "0 0 1 * mon")
        var slots: [String] = []
        var t = utc("2026-11-20T00:00")
        for _ in 0..<4 {
            t = cron.next(after: t)!
            slots.append(t.rfc3339Seconds)
        }
        #expect(slots == ["2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z", "2026-12-07T00:00:00Z"])
        // A star in either day field makes it "and": every day of month, but Mondays only.
        #expect(try next("0 0 */1 * mon", after: "2026-11-20T00:00") == "2026-11-23T00:00:00Z")
    }

    @Test func namesListsStepsAndSundayAsSeven() throws {
        #expect(try next("0 12 * jan,JUL sun", after: "2026-11-20T00:00") == "2027-01-03T12:00:00Z")
        #expect(try next("5/20 * * * *", after: "2026-11-20T10:06") == "2026-11-20T10:25:00Z")
        #expect(try next("0 0 * * 7", after: "2026-11-20T00:00") == "2026-11-22T00:00:00Z")
        #expect(try next("0 0 * * 0", after: "2026-11-20T00:00") == "2026-11-22T00:00:00Z")
        #expect(try next("30 9-17/4 * * *", after: "2026-11-20T10:00") == "2026-11-20T13:30:00Z")
    }

    @Test(arguments: [
        ("61 * * * *", "minute field \"61\": 61 is out of range 0-59"),
        ("* * * *", "has 4 fields; a cron expression has five"),
        ("0 0 30 2 *", "never fires"),
        ("5-1 * * * *", "the range 5-1 runs backwards"),
        ("*/0 * * * *", "the step \"0\" is not a number from 1 to 59"),
        ("0 0 * foo *", "\"foo\" is not a number from 1 to 12 or a name (jan-dec)"),
        ("0 0 * * 8", "day-of-week field \"8\": 8 is out of range 0-7"),
        ("0 0 ,1 * *", "\"\" is not a number"),
    ])
    func refusesWhatCronWouldNotRead(_ expression: String, _ message: String) {
        #expect {
            _ = try CronSchedule(parsing: expression)
        } throws: { error in
            (error as? CronSyntaxError)?.message.contains(message) == true
        }
    }

    /// Against a minute-by-minute check of every field over two months: the jumps
    /// neither skip a slot nor invent one.
    @Test(arguments: ["*/7 3-5 * * *", "0 0 1,15 * *", "13 13 13 * fri", "*/30 * * 12 sat,sun", "59 23 31 * *"])
    func agreesWithAMinuteByMinuteScan(_ expression: String) throws {
        let cron = try CronSchedule(parsing: expression)
        let fields = expression.split(separator: " ").map(String.init)
        let calendar = {
            var c = Calendar(identifier: .gregorian)
            c.timeZone = TimeZone(identifier: "UTC")!
            return c
        }()
        func matches(_ value: Int, _ field: String, names: [String] = []) -> Bool {
            field.split(separator: ",").contains { item in
                let parts = item.split(separator: "/")
                let step = parts.count == 2 ? Int(parts[1])! : 1
                let bounds: ClosedRange<Int>
                if parts[0] == "*" {
                    bounds = 0...59
                } else {
                    let ends = parts[0].split(separator: "-").map { Int($0) ?? names.firstIndex(of: String($0))! }
                    bounds = ends[0]...(ends.count == 2 ? ends[1] : ends[0])
                }
                return bounds.contains(value) && (value - bounds.lowerBound) % step == 0
            }
        }
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        var expected: [Int64] = []
        let start = utc("2026-11-20T00:00").milliseconds
        for minute in stride(from: start / 60_000 + 1, to: start / 60_000 + 61 * 1440, by: 1) {
            let date = Date(timeIntervalSince1970: Double(minute * 60))
            let c = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: date)
            let dom = matches(c.day!, fields[2]) || fields[2] == "*"
            let dow = matches(c.weekday! - 1, fields[4], names: days) || fields[4] == "*"
            let day = !fields[2].hasPrefix("*") && !fields[4].hasPrefix("*") ? dom || dow : dom && dow
            if matches(c.minute!, fields[0]) && matches(c.hour!, fields[1]) && day && (fields[3] == "*" || matches(c.month!, fields[3])) {
                expected.append(minute * 60_000)
            }
        }
        var found: [Int64] = []
        var t = Timestamp(milliseconds: start)
        while let slot = cron.next(after: t), slot.milliseconds < start + 61 * 1440 * 60_000 {
            found.append(slot.milliseconds)
            #expect(cron.latest(atOrBefore: Timestamp(milliseconds: slot.milliseconds + 59_999)) == slot)
            t = slot
        }
        #expect(found == expected)
        #expect(!found.isEmpty)
    }
}

@Suite struct RunIDTests {
    @Test func sortsByTimeAndReadsBack() {
        let early = RunID(time: Timestamp(milliseconds: 1_795_161_600_000), random: 0xFFFFF)
        let late = RunID(time: Timestamp(milliseconds: 1_795_161_600_001), random: 0)
        #expect(early < late)
        #expect(early.rawValue.count == 13)
        #expect(early.time == Timestamp(milliseconds: 1_795_161_600_000))
        #expect(RunID(early.rawValue.uppercased()) == early)
        #expect(RunID("not-a-run-id!") == nil)
        #expect(RunID("0123456789ab") == nil)
        // Crockford: i, l and o read as 1, 1 and 0.
        #expect(RunID("o1jd3k5x2a7qf")?.rawValue == "01jd3k5x2a7qf")
        #expect(RunID("O1JD3K5X2A7QF")?.rawValue == "01jd3k5x2a7qf")
        // 13 bytes, the Kelvin sign (3 of them) among them: Unicode lowercases it to `k`,
        // a name of 11 characters; only ASCII is read.
        #expect(RunID("01jd3\u{212A}5x2a7") == nil)
        #expect(RunID("01jd3k5x2a7q\u{7F}") == nil && RunID("01jd3k5x2a7q ") == nil)
    }

    @Test func durationsReadAsManifestsWriteThem() {
        #expect(Duration.seconds(60).compactDescription == "1m")
        #expect(Duration.milliseconds(10_600).compactDescription == "10.6s")
        #expect(Duration.milliseconds(250).compactDescription == "250ms")
        #expect(Duration.seconds(108_000).compactDescription == "1d6h")
        #expect(Duration.seconds(5400).compactDescription == "1h30m")
    }

    @Test func taskIDsRoundTrip() {
        let task = TaskID(run: RunID(time: Timestamp(milliseconds: 5), random: 7), step: "draft", attempt: 2)
        #expect(TaskID(task.description) == task)
        #expect(TaskID("xyz/draft/1") == nil)
        #expect(TaskID("\(task.run)/draft/0") == nil)
    }
}

@Suite struct CronTriggerValidationTests {
    @Test func aCronThatDoesNotParseIsReportedAtItsValue() {
        let yaml = runFleet.replacingOccurrences(of: #"cron: "*/5 * * * *""#, with: #"cron: "*/5 25 * * *""#)
        let report = validate(yaml)
        let diagnostic = report.diagnostics.first { $0.code == .triggerCronInvalid }
        #expect(diagnostic?.message == #"cron trigger: hour field "25": 25 is out of range 0-23"#)
        let expected = position(of: #""*/5 25"#, in: yaml)
        #expect(diagnostic?.location?.line == expected?.line && diagnostic?.location?.column == expected?.column)
        #expect(validate(runFleet).diagnostics.allSatisfy { $0.code != .triggerCronInvalid })
    }
}

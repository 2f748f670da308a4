import OrlCore
import Testing

@Suite struct InboxTests {
    @Test func postsMergeAndComeOutInTheOrderFirstPosted() async {
        let inbox = Inbox<String>()
        inbox.post("a")
        inbox.post("b")
        inbox.post("a")
        #expect(await inbox.take() == ["a", "b"])
    }

    @Test func aTakeWaitsForAPostAndATimeoutReturnsNothing() async {
        let inbox = Inbox<Int>()
        #expect(await inbox.take(waitingAtMost: .milliseconds(1)) == [])
        #expect(await inbox.take(waitingAtMost: .zero) == [])
        async let taken = inbox.take()
        inbox.post(1)
        #expect(await taken == [1])
    }

    @Test func aCancelledTakeReturns() async {
        let inbox = Inbox<Int>()
        let task = Task { await inbox.take() }
        task.cancel()
        #expect(await task.value == [])
    }
}

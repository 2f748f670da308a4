import Glibc
import OrlCore
import OrlManifests
import Synchronization
import Testing

/// `Fork.beside`: the other half on another thread, `here` on the caller's, and the
/// caller back only once both are done.
@Suite struct ForkBesideTests {
    @Test func hereStaysOnTheCallersThreadAndBothEnd() {
        let caller = pthread_self()
        let finished = Atomic<Int>(0)
        let (other, here) = Fork.beside.both(
            {
                finished.add(1, ordering: .relaxed)
                return "other"
            },
            { pthread_equal(pthread_self(), caller) != 0 })
        #expect(other == "other")
        #expect(here)
        #expect(finished.load(ordering: .relaxed) == 1)
    }

    @Test func heresErrorComesBackAfterTheOtherHalf() {
        struct Refused: Error {}
        let finished = Atomic<Int>(0)
        #expect(throws: Refused.self) {
            _ = try Fork.beside.both(
                { _ = finished.add(1, ordering: .relaxed) },
                { () throws(Refused) in throw Refused() })
        }
        #expect(finished.load(ordering: .relaxed) == 1)
    }
}

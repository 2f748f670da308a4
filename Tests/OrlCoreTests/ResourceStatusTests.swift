import OrlCore
import Testing

/// The conditions' stored form, which both backends write and read.
@Suite struct ResourceStatusTests {
    @Test func storedConditionsReadBackAsWritten() {
        let status = ResourceStatus(
            conditions: [
                .init(
                    type: ResourceStatus.ready, status: .true, reason: "Running", message: "pid 42, \"quoted\"\n",
                    lastTransitionTime: Timestamp(milliseconds: 1_795_161_600_123)),
                .init(type: ResourceStatus.reconciling, status: .false, reason: "", message: ""),
                .init(type: ResourceStatus.stalled, status: .unknown, reason: "NotObserved", message: "é"),
            ],
            observedGeneration: 3, updatedAt: Timestamp(milliseconds: 1))
        #expect(ResourceStatus.conditions(stored: status.storedConditions) == status.conditions)
        #expect(ResourceStatus.conditions(stored: "[]") == [])
    }

    @Test(arguments: ["", "{}", "[1]", #"[{"status": "True"}]"#, #"[{"type": "Ready", "status": "true"}]"#, "[{"])
    func aStoredFormThatIsNotConditionsIsRefused(_ json: String) {
        #expect(ResourceStatus.conditions(stored: json) == nil)
    }
}

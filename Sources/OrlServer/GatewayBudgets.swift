import Dispatch
public import OrlCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Budgets shared by every gateway of a state (`Gateway.reservations`, set when the
/// state is in PostgreSQL): a call the meter granted is also reserved in the store, whose
/// conditional updates grant it only when the line's spend and reservations, by every
/// gateway on every node, leave room; the store's hold is settled (or released) with the
/// meter's. A store that can be awaited (`AsyncBudgetReservations`: PostgreSQL's) is, with
/// no thread held while it answers; another's calls block, so they run on a queue of their
/// own, never on the threads that serve requests.
extension Gateway {
    private static let budgetQueue = DispatchQueue(label: "orl.gateway.budgets", attributes: .concurrent)
    /// Settlements and releases handed to an awaited store and not done yet.
    private static let endings = DispatchGroup()

    /// The store's hold for the call (nil: nothing to hold, or no shared reservations), or
    /// the error to answer with: the budget is exhausted across the gateways (the agent is
    /// halted, as on the meter's own refusal), or the store cannot be reached (fail closed).
    func reserveShared(_ reservation: BudgetMeter.Reservation, now: Timestamp) async -> Result<Int64?, GatewayError> {
        guard let reservations else { return .success(nil) }
        let (lines, spent) = state.withLock { $0.meter.lines(of: reservation.agent, now: now) }
        guard !lines.isEmpty else { return .success(nil) }
        let amount = BudgetAmount(reservation.charge, roundingUp: true)
        let holder = self.holder
        let outcome: Result<BudgetReservation, StoreError>
        if let shared = reservations as? any AsyncBudgetReservations {
            do throws(StoreError) {
                outcome = .success(try await shared.reserve(amount, against: lines, spentBefore: spent, now: now, holder: holder))
            } catch {
                outcome = .failure(error)
            }
        } else {
            outcome = await withCheckedContinuation { continuation in
                Self.budgetQueue.async {
                    do throws(StoreError) {
                        continuation.resume(
                            returning: .success(
                                try reservations.reserve(amount, against: lines, spentBefore: spent, now: now, holder: holder)))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                }
            }
        }
        switch outcome {
        case .success(.reserved(let hold)):
            openHolds.add(1, ordering: .relaxed)
            return .success(hold.id)
        case .success(.refused(let line)):
            let refusal = state.withLock { state in
                state.meter.release(reservation)
                return state.meter.refusal(by: line, agent: reservation.agent, charge: reservation.charge, now: now)
            }
            refused(refusal, agent: reservation.agent, now: now)
            return .failure(.budgetExceeded(refusal.message))
        case .failure(let error):
            state.withLock { $0.meter.release(reservation) }
            log(ControllerEvent(time: now, reason: .error, message: "reserving a model call's budget: \(error.description)"))
            return .failure(
                GatewayError(
                    status: 503, type: "server_error", code: "budget_store_unavailable",
                    message: "the call's budget cannot be reserved (the state's database does not answer); try again later"))
        }
    }

    /// Waits until every settlement and release handed to the store so far is done: the
    /// daemon's last step before it exits, so that no hold is left behind by a clean stop.
    /// Blocks: call it from a thread of its own.
    public func finishSharedBudgets() {
        guard reservations != nil else { return }
        Self.budgetQueue.sync(flags: .barrier) {}
        Self.endings.wait()
        settleAgain()
    }

    /// What the store records of this gateway on each hold: its process, and the node it
    /// serves under that node's current lease (none while it holds none: a hold is then
    /// kept alive by this process's renewals alone).
    var holder: BudgetHolder {
        let node = holdNode.withLock { $0 }
        return BudgetHolder(owner: holdOwner, node: node?.node, generation: node?.generation ?? 0, lease: BudgetHolder.standardLease)
    }

    /// The node's lease changed (registered, renewed under a new generation, lost, ended).
    public func serve(node lease: NodeLease?) {
        holdNode.withLock { $0 = lease.map { ($0.node, $0.generation) } }
    }

    /// Every `BudgetHolder.renewInterval`, off the request path (blocks): settlements the
    /// store refused are tried again, the holds of this gateway's calls in flight are
    /// renewed, and the holds other gateways abandoned (their process died, or their node's
    /// lease ended) are released, so that a killed controller does not keep a share of a
    /// cap until its window ends.
    public func keepSharedHolds() {
        guard let reservations else { return }
        settleAgain()
        do throws(StoreError) {
            if openHolds.load(ordering: .relaxed) > 0 {
                _ = try reservations.renewHolds(of: holdOwner, lease: BudgetHolder.standardLease)
            }
            let released = try reservations.releaseAbandonedHolds()
            if released > 0 {
                log(
                    ControllerEvent(
                        time: clock(), reason: .node,
                        message: "released \(released) budget hold\(released == 1 ? "" : "s") of model calls whose gateway stopped "
                            + "(its node's lease ended, or it renewed them no more)"))
            }
        } catch {
            log(ControllerEvent(time: clock(), reason: .error, message: "keeping the budget holds: \(error.description)"))
        }
    }

    /// Settlements the store could not take, tried once more each: a late one still counts
    /// (the store adds the cost even to a hold it released meanwhile).
    private func settleAgain() {
        guard let reservations else { return }
        let waiting = unsettled.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for (hold, cost) in waiting {
            do throws(StoreError) {
                if let cost {
                    _ = try reservations.settle(hold, cost: BudgetAmount(cost, roundingUp: false))
                } else {
                    _ = try reservations.release(hold)
                }
                openHolds.subtract(1, ordering: .relaxed)
            } catch {
                unsettled.withLock { $0.append((hold, cost)) }
            }
        }
    }

    static func newHoldOwner() -> String {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count - 1) == 0 ? String(cString: name) : "host"
        return "\(host)/\(getpid())/" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    /// Settles the store's hold on what the call cost (`cost`), or releases it (nil), off
    /// the request's path. A hold the store cannot be told of stays reserved (this gateway
    /// renews it) and is settled again at the next `keepSharedHolds`.
    func endShared(_ hold: Int64, cost: Charge?) {
        guard let reservations else { return }
        let log = self.log
        let clock = self.clock
        if let shared = reservations as? any AsyncBudgetReservations {
            Self.endings.enter()
            // Not on the call's event loop, whose preference a plain `Task` would inherit:
            // the store's answer may take long, and nothing waits for it.
            Task(executorPreference: globalConcurrentExecutor) {
                do throws(StoreError) {
                    if let cost {
                        _ = try await shared.settle(hold, cost: BudgetAmount(cost, roundingUp: false))
                    } else {
                        _ = try await shared.release(hold)
                    }
                    self.openHolds.subtract(1, ordering: .relaxed)
                } catch {
                    // Kept, renewed and tried again: the hold stays reserved until then.
                    self.unsettled.withLock { $0.append((hold, cost)) }
                    log(ControllerEvent(time: clock(), reason: .error, message: "settling a model call's budget: \(error.description)"))
                }
                Self.endings.leave()
            }
            return
        }
        Self.budgetQueue.async {
            do throws(StoreError) {
                if let cost {
                    _ = try reservations.settle(hold, cost: BudgetAmount(cost, roundingUp: false))
                } else {
                    _ = try reservations.release(hold)
                }
                self.openHolds.subtract(1, ordering: .relaxed)
            } catch {
                // Kept, renewed and tried again: the hold stays reserved until then.
                self.unsettled.withLock { $0.append((hold, cost)) }
                log(ControllerEvent(time: clock(), reason: .error, message: "settling a model call's budget: \(error.description)"))
            }
        }
    }
}

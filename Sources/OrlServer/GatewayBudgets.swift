import Dispatch
import OrlCore
import Synchronization

/// Budgets shared by every gateway of a state (`Gateway.reservations`, set when the
/// state is in PostgreSQL): a call the meter granted is also reserved in the store, whose
/// conditional updates grant it only when the line's spend and reservations, by every
/// gateway on every node, leave room; the store's hold is settled (or released) with the
/// meter's. A store that can be awaited (`AsyncBudgetReservations`: PostgreSQL's) is, with
/// no thread held while it answers; another's calls block, so they run on a queue of their
/// own, never on the threads that serve requests.
extension Gateway {
    private static let budgetQueue = DispatchQueue(label: "orl.gateway.budgets", attributes: .concurrent)
    /// Settlements and releases handed to the store and not done yet.
    private static let endings = DispatchGroup()

    /// The store's hold for the call (nil: nothing to hold, or no shared reservations), or
    /// the error to answer with: the budget is exhausted across the gateways (the agent is
    /// halted, as on the meter's own refusal), or the store cannot be reached (fail closed).
    func reserveShared(_ reservation: BudgetMeter.Reservation, now: Timestamp) async -> Result<Int64?, GatewayError> {
        guard let reservations else { return .success(nil) }
        let (lines, spent) = state.withLock { $0.meter.lines(of: reservation.agent, now: now) }
        guard !lines.isEmpty else { return .success(nil) }
        let amount = BudgetAmount(reservation.charge, roundingUp: true)
        let outcome: Result<BudgetReservation, StoreError>
        if let shared = reservations as? any AsyncBudgetReservations {
            do throws(StoreError) {
                outcome = .success(try await shared.reserve(amount, against: lines, spentBefore: spent, now: now))
            } catch {
                outcome = .failure(error)
            }
        } else {
            outcome = await withCheckedContinuation { continuation in
                Self.budgetQueue.async {
                    do throws(StoreError) {
                        continuation.resume(
                            returning: .success(try reservations.reserve(amount, against: lines, spentBefore: spent, now: now)))
                    } catch {
                        continuation.resume(returning: .failure(error))
                    }
                }
            }
        }
        switch outcome {
        case .success(.reserved(let hold)):
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
    }

    /// Settles the store's hold on what the call cost (`cost`), or releases it (nil), off
    /// the request's path. A hold the store cannot be told of stays reserved: the budget
    /// errs on the safe side until the hold is released.
    func endShared(_ hold: Int64, cost: Charge?) {
        guard let reservations else { return }
        let log = self.log
        let clock = self.clock
        if let shared = reservations as? any AsyncBudgetReservations {
            Self.endings.enter()
            Task {
                do throws(StoreError) {
                    if let cost {
                        _ = try await shared.settle(hold, cost: BudgetAmount(cost, roundingUp: false))
                    } else {
                        _ = try await shared.release(hold)
                    }
                } catch {
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
            } catch {
                log(ControllerEvent(time: clock(), reason: .error, message: "settling a model call's budget: \(error.description)"))
            }
        }
    }
}

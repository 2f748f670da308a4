import Foundation
import OrlController
import OrlCore
import OrlRuntime

enum LogRotation {
    /// Rotates every agent log (`<logs>/<namespace>/<name>.log`), and the detached
    /// controller's own, that has grown too big.
    static func rotateAll(in logs: String, runtime: ProcessRuntime, maxBytes: Int, keep: Int, log: @Sendable (ControllerEvent) -> Void) {
        let files = FileManager.default
        // The detached controller's own log too: it is written O_APPEND, as agents' are.
        var paths = ["\(logs)/controller.log"]
        for namespace in (try? files.contentsOfDirectory(atPath: logs)) ?? [] {
            for file in (try? files.contentsOfDirectory(atPath: logs + "/" + namespace)) ?? [] where file.hasSuffix(".log") {
                paths.append("\(logs)/\(namespace)/\(file)")
            }
        }
        for path in paths {
            do {
                if try runtime.rotateLog(path, maxBytes: maxBytes, keep: keep) {
                    log(ControllerEvent(time: Controller.systemTime(), reason: .logRotated, message: path))
                }
            } catch {
                log(ControllerEvent(time: Controller.systemTime(), reason: .error, message: error.description))
            }
        }
    }
}

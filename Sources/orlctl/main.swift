import Foundation
import OrlCLI
import OrlServer

// The controller serves the API: its concurrency runs on the API's event loops.
if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == "controller" {
    EventLoopConcurrency.install(environment: ProcessInfo.processInfo.environment)
}
// `--version` is answered before the argument parser builds its command tree, which
// looks types up at run time and was most of this answer's start-up.
if CommandLine.arguments.count == 2 && CommandLine.arguments[1] == "--version" { OrlctlMain.printVersion() }
await OrlctlMain.run()

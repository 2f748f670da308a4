import Foundation
import OrlCLI

OrlctlMain.prepareProcess(environment: ProcessInfo.processInfo.environment)
await OrlctlMain.run()

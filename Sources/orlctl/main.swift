import OrlCLI

OrlctlMain.prepareProcess()
await OrlctlMain.run()

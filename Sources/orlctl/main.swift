import OrlCLI

await OrlctlMain.run()

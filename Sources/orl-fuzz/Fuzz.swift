import Glibc
import OrlFuzz

// Built by `scripts/fuzz` with `-sanitize=fuzzer -DFUZZING`: libFuzzer provides `main`
// and calls this for every input; ORL_FUZZ_TARGET names the target (yaml, schema, api).
// Built plainly, `orl-fuzz TARGET FILE...` replays inputs (a crash or corpus file).

private func complain(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

private let target: @Sendable ([UInt8]) -> Void = {
    let name = getenv("ORL_FUZZ_TARGET").map { String(cString: $0) } ?? "yaml"
    guard let found = FuzzTargets.all.first(where: { $0.name == name }) else {
        complain("orl-fuzz: unknown ORL_FUZZ_TARGET \(name); one of \(FuzzTargets.all.map(\.name).joined(separator: ", "))\n")
        exit(2)
    }
    return found.run
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

#if FUZZING
    // SwiftPM links an executable's entry point under this name; libFuzzer's driver
    // runs from it.
    @_silgen_name("LLVMFuzzerRunDriver")
    func runDriver(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    @_cdecl("orl_fuzz_main")
    func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return runDriver(&count, &arguments) { data, size in fuzzOne(data, size) }
    }
#else
    @main
    enum Replay {
        static func main() {
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let found = FuzzTargets.all.first(where: { $0.name == name }) else {
                complain("usage: orl-fuzz yaml|schema|api FILE...\n")
                exit(2)
            }
            for path in arguments.dropFirst() {
                guard let file = fopen(path, "rb") else {
                    complain("orl-fuzz: cannot read \(path)\n")
                    exit(2)
                }
                var bytes: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = fread(&buffer, 1, buffer.count, file)
                    if count <= 0 { break }
                    bytes += buffer[..<count]
                }
                fclose(file)
                found.run(bytes)
            }
        }
    }
#endif

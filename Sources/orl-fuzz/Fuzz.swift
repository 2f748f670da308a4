import OrlFuzz

#if canImport(Glibc)
    import Glibc
#endif

// Built by `scripts/fuzz` with `-sanitize=fuzzer -DFUZZING`: libFuzzer provides `main`
// and calls this for every input; ORL_FUZZ_TARGET names the target (yaml, schema, api).
// Built plainly, `orl-fuzz TARGET FILE...` replays inputs (a crash or corpus file).

private let target: @Sendable ([UInt8]) -> Void = {
    let name = getenv("ORL_FUZZ_TARGET").map { String(cString: $0) } ?? "yaml"
    guard let found = FuzzTargets.all.first(where: { $0.name == name }) else {
        fputs("orl-fuzz: unknown ORL_FUZZ_TARGET \(name); one of \(FuzzTargets.all.map(\.name).joined(separator: ", "))\n", stderr)
        exit(2)
    }
    return found.run
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

#if !FUZZING
    @main
    enum Replay {
        static func main() {
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let found = FuzzTargets.all.first(where: { $0.name == name }) else {
                fputs("usage: orl-fuzz yaml|schema|api FILE...\n", stderr)
                exit(2)
            }
            for path in arguments.dropFirst() {
                guard let file = fopen(path, "rb") else {
                    fputs("orl-fuzz: cannot read \(path)\n", stderr)
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

// swift-tools-version: 6.1
import PackageDescription

// Every target opts into the same upcoming features so that imports and
// existentials stay explicit across the code base.
let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // Each function in a section of its own, so that orlctl's link can lay out the ones a
    // command runs together (scripts/orlctl.order); a file's functions otherwise move as one.
    // The compiler keeps an object whose IR is unchanged, whatever the flags: a release build
    // made before this line needs its .build/*/release/Orl*.build/*.o removed once.
    // Concrete generic types' metadata (a `Set<ResourceID>`'s storage, a `Result<_, StoreError>`)
    // comes from accessor functions that pass the conformances it needs, not from its mangled
    // name: the runtime checks a mangled name's requirements by scanning the static binary's
    // ~11,600 conformance records once per type and protocol it meets, milliseconds of every
    // one-shot process (docs/performance.md, "Re-applying costs what changed").
    .unsafeFlags(
        ["-Xfrontend", "-function-sections", "-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors"],
        .when(configuration: .release)),
]

// The commit `orlctl version` reports when the build scripts have not written it
// (scripts/build-env writes Sources/COrlBuildInfo/orl_build_commit.h, which wins): SwiftPM's
// view of the repository, which its manifest cache can keep from an earlier commit; a build
// without git (a tarball, a sandbox) says "unknown" at run time rather than failing. Not
// the environment: every package's manifest cache is keyed on it, so a variable that
// changed with each commit compiled all the manifests again.
let buildCommit = Context.gitInformation?.currentCommit ?? ""
let buildDirty = Context.gitInformation?.hasUncommittedChanges == true ? "1" : "0"
let buildCommitIsHex = buildCommit.allSatisfy { $0.isHexDigit }

// Linux only (Debian 12 and the like): the code is written against Glibc and Linux
// interfaces (/proc, prctl, namespaces, seccomp), so no Apple platform is declared.
let package = Package(
    name: "orl",
    products: [
        .executable(name: "orlctl", targets: ["orlctl"]),
        .executable(name: "orl-bench", targets: ["orl-bench"]),
        .library(name: "OrlCore", targets: ["OrlCore"]),
        .library(name: "OrlJSON", targets: ["OrlJSON"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        // The controller's loopback API and the model gateway: Hummingbird serves it,
        // AsyncHTTPClient forwards to providers (pooled, TLS, streamed bodies). The
        // default traits would pull in swift-configuration and full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        // The daemon's services start and stop as one group, on SIGTERM/SIGINT
        // (Hummingbird depends on it already).
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The shared state's second backend: PostgreSQL, pooled connections, TLS.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Located JSON values, the strict JSON parser, the JSON Schema (2020-12) validator
        // and its ECMA-262 regular expressions: knows nothing of orl, depends on nothing.
        .target(name: "OrlJSON", swiftSettings: strictness),
        // The pure core: model, validation, analysis, planning. No file, network,
        // process or database access, so it is tested by fast pure tests.
        // swift-crypto is pure computation (hashes now, the vault's AES-GCM later).
        .target(
            name: "OrlCore", dependencies: ["OrlJSON", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strictness),

        // Adapters: each the only place that imports its dependency.
        .systemLibrary(
            name: "CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        .target(name: "OrlYAML", dependencies: ["OrlJSON", "OrlCore", "CYAML"], swiftSettings: strictness),
        // SQLite (libsqlite3-dev for its header), opened with dlopen when a state database
        // first is (`loader.c`), not linked: commands without a state start without it.
        .target(name: "CSQLite"),
        .target(name: "OrlStore", dependencies: ["OrlJSON", "OrlCore", "CSQLite"], swiftSettings: strictness),
        // The state in PostgreSQL: the same ports as OrlStore, over postgres-nio.
        .target(
            name: "OrlPostgres",
            dependencies: [
                "OrlJSON", "OrlCore", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictness),
        // Agent processes: fork and exec happen in C, where the child can be kept to
        // async-signal-safe calls (Swift cannot fork a multi-threaded process safely).
        .target(name: "COrlSpawn"),
        .target(
            name: "COrlBuildInfo",
            cSettings: [
                .define("ORL_BUILD_COMMIT", to: "\"\(buildCommitIsHex ? buildCommit : "")\""), .define("ORL_BUILD_DIRTY", to: buildDirty),
            ]),
        .target(name: "OrlRuntime", dependencies: ["OrlCore", "COrlSpawn"], swiftSettings: strictness),
        // Git through libgit2 (Debian 12 ships 1.5; libgit2-dev for its headers): a bare
        // mirror per source, ls-remote, fetch, and trees read straight from commits.
        // libgit2 is opened with dlopen when a repository first is (`loader.c`), not
        // linked: with its dependencies it was most of every command's dynamic loading.
        // `shim.h` also wraps the variadic git_libgit2_opts and the credentials callback.
        .target(name: "CGit2"),
        .target(name: "OrlGit", dependencies: ["CGit2"], swiftSettings: strictness),
        // The manifest pipeline's reading half (manifest files parsed and read on every
        // core) and the GitOps sync of a git source into the state.
        // glibc's malloc.h (allocator controls), which the Glibc module leaves out.
        .systemLibrary(name: "CMalloc"),
        .target(
            name: "OrlManifests", dependencies: ["OrlJSON", "OrlCore", "OrlYAML", "OrlGit", "OrlRuntime", "CMalloc"],
            swiftSettings: strictness),
        // The reconcile loop: applied Agents in the store made into running processes.
        .target(name: "OrlController", dependencies: ["OrlJSON", "OrlCore"], swiftSettings: strictness),
        // HTTP: the gateway agents call instead of their model provider.
        .target(
            name: "OrlServer",
            dependencies: [
                "OrlJSON", "OrlCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
            ],
            swiftSettings: strictness
        ),

        // The controller's process: reconcile, runs, API and gateway, ledger, change
        // feed, timers, composed as services of one group, every SQLite connection on
        // an executor of its own.
        .target(
            name: "OrlDaemon",
            dependencies: [
                "OrlCore", "OrlStore", "OrlPostgres", "OrlRuntime", "OrlController", "OrlServer",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),

        // Composition root and command line.
        .target(
            name: "OrlCLI",
            dependencies: [
                "OrlJSON", "OrlCore", "OrlYAML", "OrlStore", "OrlPostgres", "OrlRuntime", "OrlController", "OrlServer", "OrlDaemon",
                "OrlGit", "OrlManifests", "COrlBuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictness
        ),
        // The Swift runtime and Foundation are linked into orlctl itself (libyaml, SQLite,
        // libgit2 and libc stay shared): resolving ~17,000 symbols across 40 shared
        // libraries was most of every command's start-up (`orlctl --version` spent 60% of
        // its 12 ms of CPU in the dynamic loader's symbol lookups).
        .executableTarget(
            name: "orlctl", dependencies: ["OrlCLI"], swiftSettings: strictness,
            linkerSettings: [
                // lld, which resolves archives in any order: Foundation's static archive needs
                // CoreFoundation and ICU's after it, and the autolinked ones come last.
                .unsafeFlags([
                    "-static-stdlib", "-use-ld=lld",
                    // Not every symbol in the dynamic table (the static runtime's default), and
                    // relative relocations packed: start-up read and searched megabytes of both.
                    "-Xlinker", "--no-export-dynamic", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-lCoreFoundation",
                    "-l_FoundationICU", "-l_FoundationCShims",
                    "-l_FoundationCollections",
                    // The functions that run when a fleet is read, laid out first and together
                    // (scripts/order-symbols): the kernel maps each touched page of the binary
                    // with its neighbours, so hot code spread over its text cost 12 MB of
                    // `validate`'s peak. A name absent from this build is skipped.
                    "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/scripts/orlctl.order",
                    "-Xlinker", "--no-warn-symbol-ordering",
                ])
            ]),
        // Fuzzing: the targets (run on the corpus by the tests) and the libFuzzer driver
        // (scripts/fuzz builds it with -sanitize=fuzzer).
        .target(name: "OrlFuzz", dependencies: ["OrlJSON", "OrlCore", "OrlYAML"], swiftSettings: strictness),
        .executableTarget(name: "orl-fuzz", dependencies: ["OrlFuzz"], swiftSettings: strictness),
        // A command measured alone from outside (wall, CPU, peak memory): the benchmarks'
        // figures and the tests' resource bounds.
        .target(name: "OrlMeasure", swiftSettings: strictness),
        // Benchmarks: a separate command, never part of the tests.
        .executableTarget(
            name: "orl-bench",
            dependencies: [
                "OrlMeasure", "OrlJSON", "OrlCore", "OrlYAML", "OrlStore", "OrlPostgres", "OrlGit", "OrlManifests", "OrlServer",
                "OrlRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strictness
        ),

        .testTarget(name: "OrlJSONTests", dependencies: ["OrlJSON"], swiftSettings: strictness),
        .testTarget(name: "OrlCoreTests", dependencies: ["OrlJSON", "OrlCore", "OrlYAML"], swiftSettings: strictness),
        .testTarget(
            name: "OrlYAMLTests", dependencies: ["OrlJSON", "OrlYAML", "OrlCore", "OrlFuzz"], exclude: ["FuzzCorpus"],
            swiftSettings: strictness),
        .testTarget(name: "OrlStoreTests", dependencies: ["OrlJSON", "OrlStore", "OrlCore", "OrlTestSupport"], swiftSettings: strictness),
        .testTarget(
            name: "OrlServerTests",
            dependencies: [
                "OrlJSON", "OrlServer", "OrlCore", "OrlStore", "OrlYAML", "OrlRuntime", "OrlTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            exclude: ["Fixtures", "stdio_server.py"],
            swiftSettings: strictness
        ),
        // A throwaway PostgreSQL cluster for the tests (initdb, pg_ctl on loopback).
        .target(name: "OrlTestPostgres", path: "Tests/Support/OrlTestPostgres", swiftSettings: strictness),
        // What the tests of several targets wait on (`Tally`).
        .target(name: "OrlTestSupport", dependencies: ["OrlCore"], path: "Tests/Support/OrlTestSupport", swiftSettings: strictness),
        // The store ports' expectations, run against SQLite and PostgreSQL alike.
        .testTarget(
            name: "OrlStatePortTests", dependencies: ["OrlStore", "OrlPostgres", "OrlCore", "OrlTestPostgres", "OrlTestSupport"],
            swiftSettings: strictness),
        .testTarget(name: "OrlRuntimeTests", dependencies: ["OrlRuntime", "OrlCore"], swiftSettings: strictness),
        .testTarget(
            name: "OrlDaemonTests",
            dependencies: [
                "OrlDaemon", "OrlController", "OrlJSON", "OrlStore", "OrlPostgres", "OrlCore", "OrlYAML", "OrlTestPostgres",
                "OrlTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictness),
        .testTarget(
            name: "OrlCLITests",
            dependencies: [
                "OrlCLI", "OrlJSON", "OrlCore", "OrlYAML", "OrlStore", "OrlPostgres", "OrlController", "OrlGit", "OrlManifests",
                "OrlTestPostgres", "OrlMeasure",
            ],
            exclude: ["Golden", "Fixtures"],
            swiftSettings: strictness,
            // On Linux every suite is linked into one 220 MB test binary, relinked after any
            // change: lld takes half the CPU of the default gold and half its wall (7 s for 14).
            linkerSettings: [.unsafeFlags(["-use-ld=lld"])]),
    ]
)

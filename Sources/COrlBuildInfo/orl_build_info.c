#include "orl_build_info.h"

// scripts/build-env writes orl_build_commit.h (git-ignored) from git before every scripted
// build, and rewrites it only when the commit or the worktree's state changes: this file
// is then the only one compiled again. Without it (a plain `swift build`), Package.swift's
// -D flags from SwiftPM's view of the repository; a build without git leaves them empty.
#if __has_include("orl_build_commit.h")
#include "orl_build_commit.h"
#define ORL_COMMIT ORL_GENERATED_COMMIT
#define ORL_DIRTY ORL_GENERATED_DIRTY
#else
#ifdef ORL_BUILD_COMMIT
#define ORL_COMMIT ORL_BUILD_COMMIT
#else
#define ORL_COMMIT ""
#endif
#ifdef ORL_BUILD_DIRTY
#define ORL_DIRTY ORL_BUILD_DIRTY
#else
#define ORL_DIRTY 0
#endif
#endif

const char *orl_build_commit(void) { return ORL_COMMIT; }
int orl_build_dirty(void) { return ORL_DIRTY; }

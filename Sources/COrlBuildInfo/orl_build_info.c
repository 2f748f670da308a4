#include "orl_build_info.h"

// Package.swift passes these as -D flags; a build without git leaves them empty.
#ifndef ORL_BUILD_COMMIT
#define ORL_BUILD_COMMIT ""
#endif
#ifndef ORL_BUILD_DIRTY
#define ORL_BUILD_DIRTY 0
#endif

const char *orl_build_commit(void) { return ORL_BUILD_COMMIT; }
int orl_build_dirty(void) { return ORL_BUILD_DIRTY; }

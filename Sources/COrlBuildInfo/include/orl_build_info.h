#ifndef ORL_BUILD_INFO_H
#define ORL_BUILD_INFO_H

/// The commit the binary was built from ("" when the build had no git: a tarball, or a
/// sandbox), and whether the work tree had uncommitted changes: what scripts/build-env wrote
/// to orl_build_commit.h, else Package.swift's view of the repository.
const char *orl_build_commit(void);
int orl_build_dirty(void);

#endif

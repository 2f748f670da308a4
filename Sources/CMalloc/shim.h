#ifndef ORL_CMALLOC_SHIM_H
#define ORL_CMALLOC_SHIM_H
// glibc's allocator controls (mallopt), which the Glibc module leaves out.
#include <malloc.h>
#endif

#ifndef ORL_CMALLOC_SHIM_H
#define ORL_CMALLOC_SHIM_H
// glibc's allocator controls (mallopt, malloc_trim), which the Glibc module leaves out.
#include <malloc.h>
#endif

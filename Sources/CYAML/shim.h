#ifndef ORL_CYAML_SHIM_H
#define ORL_CYAML_SHIM_H
#include <yaml.h>
#endif

#ifndef ORL_CSQLITE_SHIM_H
#define ORL_CSQLITE_SHIM_H
#include <sqlite3.h>

/// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift cannot
/// import: binding with it makes SQLite copy the bytes before the call returns.
static inline sqlite3_destructor_type orl_sqlite_transient(void) { return SQLITE_TRANSIENT; }

/* SQLite is opened with dlopen when a state database first is (orl_sqlite_load), not by
   the dynamic loader at every start: its 1,600 symbol relocations, bound at load, were
   a sixth of the start of commands that never open a state (`--version`, `validate`,
   `explain`). loader.c defines each sqlite3_* function orl calls as a call through the
   table it fills, so the code calling them is written against <sqlite3.h> as usual. */

/* The library orl_sqlite_load opens. */
#define ORL_SQLITE_SONAME "libsqlite3.so.0"
static inline const char *orl_sqlite_soname(void) { return ORL_SQLITE_SONAME; }

/* Loads SQLite, once per process. NULL when it is ready, else why not (the message
   names the library and stays valid for the process). */
const char *orl_sqlite_load(void);

/* Whether `soname` could serve as orl's SQLite (it loads and has every function orl
   calls): NULL if so, else why not, in memory the caller frees. The library is closed
   again; orl_sqlite_load is unaffected. */
char *orl_sqlite_check(const char *soname);

/* sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL): closing the
   connection neither checkpoints the WAL nor removes it and its index. */
int orl_sqlite_no_checkpoint_on_close(sqlite3 *db);
#endif

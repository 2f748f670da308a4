/* asprintf */
#define _GNU_SOURCE

#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every SQLite function orl calls. A new call needs its name here and its trampoline
   below (the compiler checks the trampoline against <sqlite3.h>; without one, the link
   fails on the undefined symbol). */
#define ORL_SQLITE_FUNCTIONS(X)                                                                     \
    X(sqlite3_open_v2) X(sqlite3_close_v2) X(sqlite3_errmsg) X(sqlite3_errstr) X(sqlite3_extended_errcode) \
    X(sqlite3_busy_timeout) X(sqlite3_changes) X(sqlite3_get_autocommit) X(sqlite3_last_insert_rowid)     \
    X(sqlite3_exec) X(sqlite3_prepare_v3) X(sqlite3_sql) X(sqlite3_step) X(sqlite3_reset)                  \
    X(sqlite3_clear_bindings) X(sqlite3_finalize) X(sqlite3_bind_null) X(sqlite3_bind_int64)               \
    X(sqlite3_bind_double) X(sqlite3_bind_text64) X(sqlite3_bind_blob64) X(sqlite3_column_count)           \
    X(sqlite3_column_type) X(sqlite3_column_bytes) X(sqlite3_column_int64) X(sqlite3_column_double)        \
    X(sqlite3_column_text) X(sqlite3_column_blob) X(sqlite3_wal_hook) X(sqlite3_wal_checkpoint)             \
    X(sqlite3_db_config) X(sqlite3_wal_checkpoint_v2)

struct orl_sqlite_functions {
#define ORL_SQLITE_FIELD(name) __typeof__(name) *name;
    ORL_SQLITE_FUNCTIONS(ORL_SQLITE_FIELD)
#undef ORL_SQLITE_FIELD
};

static const struct {
    const char *name;
    size_t offset;
} orl_sqlite_entries[] = {
#define ORL_SQLITE_ENTRY(name) {#name, offsetof(struct orl_sqlite_functions, name)},
    ORL_SQLITE_FUNCTIONS(ORL_SQLITE_ENTRY)
#undef ORL_SQLITE_ENTRY
};

/* Opens `soname` and fills `table`: NULL and the handle in *handle, or a message the
   caller frees (nothing stays open then). */
static char *orl_sqlite_resolve(const char *soname, struct orl_sqlite_functions *table, void **handle) {
    char *message = NULL;
    /* RTLD_LOCAL: SQLite's symbols never stand in for anyone else's. */
    void *library = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *reason = dlerror();
        if (asprintf(&message, "cannot load %s (SQLite 3, which the state needs): %s", soname,
                reason != NULL ? reason : "unknown error") < 0) {
            message = NULL;
        }
        return message != NULL ? message : strdup("cannot load SQLite");
    }
    for (size_t i = 0; i < sizeof orl_sqlite_entries / sizeof orl_sqlite_entries[0]; i++) {
        void *function = dlsym(library, orl_sqlite_entries[i].name);
        if (function == NULL) {
            if (asprintf(&message, "%s has no %s (the state needs SQLite 3.38 or later)", soname, orl_sqlite_entries[i].name) < 0) {
                message = NULL;
            }
            dlclose(library);
            return message != NULL ? message : strdup("cannot load SQLite");
        }
        memcpy((char *)table + orl_sqlite_entries[i].offset, &function, sizeof function);
    }
    *handle = library;
    return NULL;
}

/* Written once, under orl_sqlite_once, before any trampoline can run: every caller goes
   through orl_sqlite_load first (Database's initialiser). */
static struct orl_sqlite_functions orl_sqlite;
static pthread_once_t orl_sqlite_once = PTHREAD_ONCE_INIT;
static char *orl_sqlite_load_error;

static void orl_sqlite_load_once(void) {
    void *handle = NULL;
    orl_sqlite_load_error = orl_sqlite_resolve(ORL_SQLITE_SONAME, &orl_sqlite, &handle);
}

const char *orl_sqlite_load(void) {
    pthread_once(&orl_sqlite_once, orl_sqlite_load_once);
    return orl_sqlite_load_error;
}

char *orl_sqlite_check(const char *soname) {
    struct orl_sqlite_functions table;
    void *handle = NULL;
    char *message = orl_sqlite_resolve(soname, &table, &handle);
    if (message == NULL) {
        dlclose(handle);
    }
    return message;
}

/* The trampolines. */

int sqlite3_open_v2(const char *filename, sqlite3 **ppDb, int flags, const char *zVfs) {
    return orl_sqlite.sqlite3_open_v2(filename, ppDb, flags, zVfs);
}
int sqlite3_close_v2(sqlite3 *db) { return orl_sqlite.sqlite3_close_v2(db); }
const char *sqlite3_errmsg(sqlite3 *db) { return orl_sqlite.sqlite3_errmsg(db); }
const char *sqlite3_errstr(int code) { return orl_sqlite.sqlite3_errstr(code); }
int sqlite3_extended_errcode(sqlite3 *db) { return orl_sqlite.sqlite3_extended_errcode(db); }
int sqlite3_busy_timeout(sqlite3 *db, int ms) { return orl_sqlite.sqlite3_busy_timeout(db, ms); }
int sqlite3_changes(sqlite3 *db) { return orl_sqlite.sqlite3_changes(db); }
int sqlite3_get_autocommit(sqlite3 *db) { return orl_sqlite.sqlite3_get_autocommit(db); }
sqlite3_int64 sqlite3_last_insert_rowid(sqlite3 *db) { return orl_sqlite.sqlite3_last_insert_rowid(db); }
int sqlite3_exec(sqlite3 *db, const char *sql, int (*callback)(void *, int, char **, char **), void *argument, char **errmsg) {
    return orl_sqlite.sqlite3_exec(db, sql, callback, argument, errmsg);
}
int sqlite3_prepare_v3(sqlite3 *db, const char *zSql, int nByte, unsigned int prepFlags, sqlite3_stmt **ppStmt, const char **pzTail) {
    return orl_sqlite.sqlite3_prepare_v3(db, zSql, nByte, prepFlags, ppStmt, pzTail);
}
const char *sqlite3_sql(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_sql(pStmt); }
int sqlite3_step(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_step(pStmt); }
int sqlite3_reset(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_reset(pStmt); }
int sqlite3_clear_bindings(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_clear_bindings(pStmt); }
int sqlite3_finalize(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_finalize(pStmt); }
int sqlite3_bind_null(sqlite3_stmt *pStmt, int index) { return orl_sqlite.sqlite3_bind_null(pStmt, index); }
int sqlite3_bind_int64(sqlite3_stmt *pStmt, int index, sqlite3_int64 value) { return orl_sqlite.sqlite3_bind_int64(pStmt, index, value); }
int sqlite3_bind_double(sqlite3_stmt *pStmt, int index, double value) { return orl_sqlite.sqlite3_bind_double(pStmt, index, value); }
int sqlite3_bind_text64(
    sqlite3_stmt *pStmt, int index, const char *text, sqlite3_uint64 length, void (*destructor)(void *), unsigned char encoding) {
    return orl_sqlite.sqlite3_bind_text64(pStmt, index, text, length, destructor, encoding);
}
int sqlite3_bind_blob64(sqlite3_stmt *pStmt, int index, const void *bytes, sqlite3_uint64 length, void (*destructor)(void *)) {
    return orl_sqlite.sqlite3_bind_blob64(pStmt, index, bytes, length, destructor);
}
int sqlite3_column_count(sqlite3_stmt *pStmt) { return orl_sqlite.sqlite3_column_count(pStmt); }
int sqlite3_column_type(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_type(pStmt, iCol); }
int sqlite3_column_bytes(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_bytes(pStmt, iCol); }
sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_int64(pStmt, iCol); }
double sqlite3_column_double(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_double(pStmt, iCol); }
const unsigned char *sqlite3_column_text(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_text(pStmt, iCol); }
const void *sqlite3_column_blob(sqlite3_stmt *pStmt, int iCol) { return orl_sqlite.sqlite3_column_blob(pStmt, iCol); }
void *sqlite3_wal_hook(sqlite3 *db, int (*hook)(void *, sqlite3 *, const char *, int), void *argument) {
    return orl_sqlite.sqlite3_wal_hook(db, hook, argument);
}
int sqlite3_wal_checkpoint(sqlite3 *db, const char *zDb) { return orl_sqlite.sqlite3_wal_checkpoint(db, zDb); }
int sqlite3_wal_checkpoint_v2(sqlite3 *db, const char *zDb, int eMode, int *pnLog, int *pnCkpt) {
    return orl_sqlite.sqlite3_wal_checkpoint_v2(db, zDb, eMode, pnLog, pnCkpt);
}
/* sqlite3_db_config takes variable arguments, which neither Swift nor a trampoline can
   pass on: the one option orl sets has a function of its own. */
int orl_sqlite_no_checkpoint_on_close(sqlite3 *db) {
    return orl_sqlite.sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
}

/* asprintf */
#define _GNU_SOURCE

#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every libgit2 function orl calls. A new call needs its name here and its trampoline
   below (the compiler checks the trampoline against <git2.h>; without one, the link
   fails on the undefined symbol). */
#define ORL_GIT_FUNCTIONS(X)                                                                   \
    X(git_libgit2_init) X(git_libgit2_opts) X(git_error_last) X(git_error_clear)                \
    X(git_error_set_str) X(git_repository_open_bare) X(git_repository_open_ext)                 \
    X(git_repository_init) X(git_repository_free) X(git_remote_create_anonymous)                \
    X(git_remote_init_callbacks) X(git_remote_connect) X(git_remote_ls)                         \
    X(git_remote_disconnect) X(git_remote_fetch) X(git_remote_free) X(git_fetch_options_init)   \
    X(git_reference_name_to_id) X(git_revparse_single) X(git_object_peel) X(git_object_id)      \
    X(git_object_free) X(git_merge_base) X(git_graph_descendant_of) X(git_oid_fromstrn)         \
    X(git_commit_lookup) X(git_commit_tree) X(git_commit_free) X(git_tree_lookup) X(git_tree_id) \
    X(git_tree_free) X(git_tree_entrycount) X(git_tree_entry_byindex) X(git_tree_entry_bypath)  \
    X(git_tree_entry_name) X(git_tree_entry_id) X(git_tree_entry_type)                          \
    X(git_tree_entry_filemode) X(git_tree_entry_free) X(git_blob_lookup) X(git_blob_rawsize)    \
    X(git_blob_rawcontent) X(git_blob_free) X(git_credential_ssh_key_new)                       \
    X(git_credential_username_new) X(git_credential_userpass_plaintext_new)

struct orl_git_functions {
#define ORL_GIT_FIELD(name) __typeof__(name) *name;
    ORL_GIT_FUNCTIONS(ORL_GIT_FIELD)
#undef ORL_GIT_FIELD
};

static const struct {
    const char *name;
    size_t offset;
} orl_git_entries[] = {
#define ORL_GIT_ENTRY(name) {#name, offsetof(struct orl_git_functions, name)},
    ORL_GIT_FUNCTIONS(ORL_GIT_ENTRY)
#undef ORL_GIT_ENTRY
};

/* Opens `soname` and fills `table`: NULL and the handle in *handle, or a message the
   caller frees (nothing stays open then). */
static char *orl_git_resolve(const char *soname, struct orl_git_functions *table, void **handle) {
    char *message = NULL;
    /* RTLD_LOCAL: libgit2's symbols never stand in for anyone else's. */
    void *library = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *reason = dlerror();
        if (asprintf(&message, "cannot load %s (libgit2 %s, which git sources need): %s", soname, LIBGIT2_SOVERSION,
                reason != NULL ? reason : "unknown error") < 0) {
            message = NULL;
        }
        return message != NULL ? message : strdup("cannot load libgit2");
    }
    for (size_t i = 0; i < sizeof orl_git_entries / sizeof orl_git_entries[0]; i++) {
        void *function = dlsym(library, orl_git_entries[i].name);
        if (function == NULL) {
            if (asprintf(&message, "%s has no %s (git sources need libgit2 %s)", soname, orl_git_entries[i].name,
                    LIBGIT2_SOVERSION) < 0) {
                message = NULL;
            }
            dlclose(library);
            return message != NULL ? message : strdup("cannot load libgit2");
        }
        memcpy((char *)table + orl_git_entries[i].offset, &function, sizeof function);
    }
    *handle = library;
    return NULL;
}

/* Written once, under orl_git_once, before any trampoline can run: every caller goes
   through orl_git_load first (GitRepository's constructors). */
static struct orl_git_functions orl_git;
static pthread_once_t orl_git_once = PTHREAD_ONCE_INIT;
static char *orl_git_load_error;

static void orl_git_load_once(void) {
    void *handle = NULL;
    orl_git_load_error = orl_git_resolve(ORL_GIT_SONAME, &orl_git, &handle);
    if (orl_git_load_error == NULL) {
        orl_git.git_libgit2_init();
    }
}

const char *orl_git_load(void) {
    pthread_once(&orl_git_once, orl_git_load_once);
    return orl_git_load_error;
}

char *orl_git_check(const char *soname) {
    struct orl_git_functions table;
    void *handle = NULL;
    char *message = orl_git_resolve(soname, &table, &handle);
    if (message == NULL) {
        dlclose(handle);
    }
    return message;
}

int orl_git_set_owner_validation(int enabled) {
    return orl_git.git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}

/* The trampolines. */

int git_libgit2_init(void) { return orl_git.git_libgit2_init(); }
const git_error *git_error_last(void) { return orl_git.git_error_last(); }
void git_error_clear(void) { orl_git.git_error_clear(); }
int git_error_set_str(int error_class, const char *string) { return orl_git.git_error_set_str(error_class, string); }
int git_repository_open_bare(git_repository **out, const char *bare_path) {
    return orl_git.git_repository_open_bare(out, bare_path);
}
int git_repository_open_ext(git_repository **out, const char *path, unsigned int flags, const char *ceiling_dirs) {
    return orl_git.git_repository_open_ext(out, path, flags, ceiling_dirs);
}
int git_repository_init(git_repository **out, const char *path, unsigned is_bare) {
    return orl_git.git_repository_init(out, path, is_bare);
}
void git_repository_free(git_repository *repo) { orl_git.git_repository_free(repo); }
int git_remote_create_anonymous(git_remote **out, git_repository *repo, const char *url) {
    return orl_git.git_remote_create_anonymous(out, repo, url);
}
int git_remote_init_callbacks(git_remote_callbacks *opts, unsigned int version) {
    return orl_git.git_remote_init_callbacks(opts, version);
}
int git_remote_connect(git_remote *remote, git_direction direction, const git_remote_callbacks *callbacks,
    const git_proxy_options *proxy_opts, const git_strarray *custom_headers) {
    return orl_git.git_remote_connect(remote, direction, callbacks, proxy_opts, custom_headers);
}
int git_remote_ls(const git_remote_head ***out, size_t *size, git_remote *remote) {
    return orl_git.git_remote_ls(out, size, remote);
}
int git_remote_disconnect(git_remote *remote) { return orl_git.git_remote_disconnect(remote); }
int git_remote_fetch(git_remote *remote, const git_strarray *refspecs, const git_fetch_options *opts, const char *reflog_message) {
    return orl_git.git_remote_fetch(remote, refspecs, opts, reflog_message);
}
void git_remote_free(git_remote *remote) { orl_git.git_remote_free(remote); }
int git_fetch_options_init(git_fetch_options *opts, unsigned int version) { return orl_git.git_fetch_options_init(opts, version); }
int git_reference_name_to_id(git_oid *out, git_repository *repo, const char *name) {
    return orl_git.git_reference_name_to_id(out, repo, name);
}
int git_revparse_single(git_object **out, git_repository *repo, const char *spec) {
    return orl_git.git_revparse_single(out, repo, spec);
}
int git_object_peel(git_object **peeled, const git_object *object, git_object_t target_type) {
    return orl_git.git_object_peel(peeled, object, target_type);
}
const git_oid *git_object_id(const git_object *obj) { return orl_git.git_object_id(obj); }
void git_object_free(git_object *object) { orl_git.git_object_free(object); }
int git_merge_base(git_oid *out, git_repository *repo, const git_oid *one, const git_oid *two) {
    return orl_git.git_merge_base(out, repo, one, two);
}
int git_graph_descendant_of(git_repository *repo, const git_oid *commit, const git_oid *ancestor) {
    return orl_git.git_graph_descendant_of(repo, commit, ancestor);
}
int git_oid_fromstrn(git_oid *out, const char *str, size_t length) { return orl_git.git_oid_fromstrn(out, str, length); }
int git_commit_lookup(git_commit **commit, git_repository *repo, const git_oid *id) {
    return orl_git.git_commit_lookup(commit, repo, id);
}
int git_commit_tree(git_tree **tree_out, const git_commit *commit) { return orl_git.git_commit_tree(tree_out, commit); }
void git_commit_free(git_commit *commit) { orl_git.git_commit_free(commit); }
int git_tree_lookup(git_tree **out, git_repository *repo, const git_oid *id) { return orl_git.git_tree_lookup(out, repo, id); }
const git_oid *git_tree_id(const git_tree *tree) { return orl_git.git_tree_id(tree); }
void git_tree_free(git_tree *tree) { orl_git.git_tree_free(tree); }
size_t git_tree_entrycount(const git_tree *tree) { return orl_git.git_tree_entrycount(tree); }
const git_tree_entry *git_tree_entry_byindex(const git_tree *tree, size_t idx) { return orl_git.git_tree_entry_byindex(tree, idx); }
int git_tree_entry_bypath(git_tree_entry **out, const git_tree *root, const char *path) {
    return orl_git.git_tree_entry_bypath(out, root, path);
}
const char *git_tree_entry_name(const git_tree_entry *entry) { return orl_git.git_tree_entry_name(entry); }
const git_oid *git_tree_entry_id(const git_tree_entry *entry) { return orl_git.git_tree_entry_id(entry); }
git_object_t git_tree_entry_type(const git_tree_entry *entry) { return orl_git.git_tree_entry_type(entry); }
git_filemode_t git_tree_entry_filemode(const git_tree_entry *entry) { return orl_git.git_tree_entry_filemode(entry); }
void git_tree_entry_free(git_tree_entry *entry) { orl_git.git_tree_entry_free(entry); }
int git_blob_lookup(git_blob **blob, git_repository *repo, const git_oid *id) { return orl_git.git_blob_lookup(blob, repo, id); }
git_object_size_t git_blob_rawsize(const git_blob *blob) { return orl_git.git_blob_rawsize(blob); }
const void *git_blob_rawcontent(const git_blob *blob) { return orl_git.git_blob_rawcontent(blob); }
void git_blob_free(git_blob *blob) { orl_git.git_blob_free(blob); }
int git_credential_ssh_key_new(git_credential **out, const char *username, const char *publickey, const char *privatekey,
    const char *passphrase) {
    return orl_git.git_credential_ssh_key_new(out, username, publickey, privatekey, passphrase);
}
int git_credential_username_new(git_credential **out, const char *username) {
    return orl_git.git_credential_username_new(out, username);
}
int git_credential_userpass_plaintext_new(git_credential **out, const char *username, const char *password) {
    return orl_git.git_credential_userpass_plaintext_new(out, username, password);
}

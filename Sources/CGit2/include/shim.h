#ifndef ORL_CGIT2_SHIM_H
#define ORL_CGIT2_SHIM_H

#include <git2.h>
#include <stddef.h>

/* libgit2 is opened with dlopen the first time a repository is (orl_git_load), not by
   the dynamic loader at every start: with its 14 dependencies (OpenSSL's libcrypto,
   Kerberos, mbedTLS, libssh2) it was most of the loader's relocations in every orlctl
   command, `orlctl --version` included, though only sync, watch and review use git.
   loader.c defines each git_* function orl calls as a call through the table it fills,
   so the code calling them is written against <git2.h> as usual. */

/* Loads libgit2 and initialises it, once per process. NULL when it is ready, else why
   not (the message names the library and stays valid for the process). */
const char *orl_git_load(void);

/* Whether `soname` could serve as orl's libgit2 (it loads and has every function orl
   calls): NULL if so, else why not, in memory the caller frees. The library is closed
   again; orl_git_load is unaffected. */
char *orl_git_check(const char *soname);

/* The library orl_git_load opens: libgit2's ABI changes with its minor version, and
   this is the one whose headers orl was compiled against. */
#define ORL_GIT_SONAME "libgit2.so." LIBGIT2_SOVERSION
static inline const char *orl_git_soname(void) { return ORL_GIT_SONAME; }

/* Swift cannot call C variadic functions: the one option orl sets, wrapped. libgit2 1.5
   refuses repositories owned by another user unless owner validation is off; orl turns
   it off only around opening its own mirrors in the state directory. */
int orl_git_set_owner_validation(int enabled);

/* What a credentials callback may offer, set by the caller. NULL fields are not
   offered. The counters stop libgit2 from asking again and again for credentials the
   server already refused. */
typedef struct orl_git_auth {
    const char *username;
    const char *ssh_private_key;
    const char *ssh_public_key;
    const char *ssh_passphrase;
    const char *token;
    int key_attempts;
    int token_attempts;
} orl_git_auth;

/* A git_credential_acquire_cb, in C so that Swift can hand libgit2 a plain function
   pointer with the auth as payload. */
static inline int orl_git_credentials(
    git_credential **out, const char *url, const char *username_from_url, unsigned int allowed_types, void *payload) {
    (void)url;
    orl_git_auth *auth = (orl_git_auth *)payload;
    if (auth == NULL) {
        git_error_set_str(GIT_ERROR_NET, "the remote asks for credentials and none were given (--ssh-key or --token-secret)");
        return GIT_EAUTH;
    }
    const char *user = username_from_url != NULL && username_from_url[0] != '\0' ? username_from_url : auth->username;
    if ((allowed_types & GIT_CREDENTIAL_SSH_KEY) && auth->ssh_private_key != NULL) {
        if (auth->key_attempts++ > 0) {
            git_error_set_str(GIT_ERROR_NET, "the remote refused the SSH key");
            return GIT_EAUTH;
        }
        return git_credential_ssh_key_new(
            out, user != NULL ? user : "git", auth->ssh_public_key, auth->ssh_private_key, auth->ssh_passphrase);
    }
    if ((allowed_types & GIT_CREDENTIAL_USERNAME) && auth->ssh_private_key != NULL) {
        return git_credential_username_new(out, user != NULL ? user : "git");
    }
    if ((allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && auth->token != NULL) {
        if (auth->token_attempts++ > 0) {
            git_error_set_str(GIT_ERROR_NET, "the remote refused the token");
            return GIT_EAUTH;
        }
        return git_credential_userpass_plaintext_new(out, user != NULL ? user : "x-access-token", auth->token);
    }
    git_error_set_str(GIT_ERROR_NET, "the remote asks for credentials that were not given (--ssh-key for SSH, --token-secret for HTTPS)");
    return GIT_EAUTH;
}

#endif

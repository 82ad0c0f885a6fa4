/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "ksync.h"

/* Getting an account's password: password_command, password_file and the Secret Service
 * (org.freedesktop.secrets on the session bus, as GNOME Keyring, KWallet and KeePassXC
 * offer it). The pieces below that do no I/O are here for the unit tests. */

/* Most bytes read from password_command or password_file. */
#define KS_SECRET_MAX (64 * 1024)
/* Most bytes of password_command's stderr kept for a message. */
#define KS_SECRET_STDERR_MAX 4096
/* Most attributes in a password_secret reference. */
#define KS_SECRET_MAX_ATTRS 16
/* How long password_command and Secret Service prompts may take when nothing says. */
#define KS_SECRET_DEFAULT_TIMEOUT 60

/* Runs cmd with /bin/sh -c in a process group of its own (stdin /dev/null, stdout and stderr
 * read through pipes) and takes the first line of its stdout. A command that has exited is
 * not waited for any longer once its first line is complete or a second has passed, so that
 * a child it left holding stdout cannot hold the caller. Past timeout_s seconds (0: the
 * default), or when *cancel (may be NULL) becomes non-zero, the whole group is ended (SIGTERM,
 * then SIGKILL). *ret is owned by the caller (ks_secret_free()).
 * -ETIMEDOUT, -ECANCELED, -EIO (failed, killed, printed nothing, a NUL byte or too much),
 * -ENOMEM, errors of creating pipes or the process. *reterr_msg gets a sentence that passes
 * the command's stderr on and says what to do (a missing program: which package; nothing
 * printed: how to store the password), without the command itself, which may hold a
 * secret. */
int ks_secret_run_command(const char *cmd, unsigned timeout_s, const volatile int *cancel,
			  char **ret, char **reterr_msg);

/* The first line of path, a regular file (not a symbolic link) owned by the user and not
 * readable by others. -EPERM (type, owner or mode), -EIO (empty first line, NUL byte, first
 * line too long), errors of open. */
int ks_secret_read_file(const char *path, char **ret, char **reterr_msg);

/* Splits a password_secret reference, "key=value key=value ..." (whitespace-separated, keys
 * and values non-empty, no key twice, at most KS_SECRET_MAX_ATTRS), into a NULL-terminated
 * array key, value, key, value, ... owned by the caller (free each, then the array).
 * -EINVAL with a message for anything else. */
int ks_secret_attrs_parse(const char *s, char ***ret, char **reterr_msg);
void ks_secret_attrs_free(char **kv);

/* The command that stores what password_command cmd reads, for a message: "secret-tool
 * store --label=ksync A B ..." for "secret-tool lookup A B ...", "pass insert X" for "pass
 * show X" or "pass X". NULL (and 0) when cmd is none of these. *ret owned by the caller. */
int ks_secret_store_hint(const char *cmd, char **ret);

/* The Debian package that holds a password helper program ("secret-tool": libsecret-tools),
 * or NULL. Static string. */
const char *ks_secret_package_of(const char *program);

/* The secret of the Secret Service item matching attrs (a password_secret reference). A
 * locked item or keyring is unlocked through the service's prompt, waited for at most
 * timeout_s seconds (0: the default) and while *cancel stays 0. -EHOSTDOWN: no Secret
 * Service on the session bus (or no session bus); -ENOENT: no such item; -EACCES: the
 * keyring stayed locked (prompt dismissed); -ETIMEDOUT, -ECANCELED, -EIO (the service's
 * own errors, the message names them). */
int ks_secret_service_lookup(const char *attrs, unsigned timeout_s, const volatile int *cancel,
			     char **ret, char **reterr_msg);

/* A fingerprint of the credentials of a with password (NULL: none), as 64 hex digits:
 * SHA-256 of the URL, the user name and the password, to tell whether any of them changed
 * without keeping the password. */
void ks_secret_fingerprint(const ks_account_config *a, const char *password, char ret[65]);

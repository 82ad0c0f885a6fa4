/* SPDX-License-Identifier: MIT */
#pragma once

/* libksync: the only header daemon/ and cli/ include. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- logging ------------------------------------------------------------------------------ */

enum {
	KS_LOG_ERR = 3,
	KS_LOG_WARNING = 4,
	KS_LOG_NOTICE = 5,
	KS_LOG_INFO = 6,
	KS_LOG_DEBUG = 7,
};

typedef void (*ks_log_fn)(int level, const char *msg, void *userdata);

/* Installs the sink that receives the library's messages (none by default). The one global. */
void ks_log_set_sink(ks_log_fn fn, void *userdata);

/* A hook called after every durable step (a file batch flushed, a transaction committed, a
 * reply to a request that changes the server received). Crash tests install one that
 * ends the process at the Nth step. The only other global besides the log sink. */
typedef void (*ks_step_fn)(const char *what, void *userdata);
void ks_set_step_hook(ks_step_fn fn, void *userdata);

/* ---- configuration ------------------------------------------------------------------------ */

/* What decides a property changed differently on both sides (the losing version is kept). */
enum {
	KS_CONFLICT_MODE_UNSET,
	KS_CONFLICT_MODE_SERVER_WINS,
	KS_CONFLICT_MODE_LOCAL_WINS,
};

typedef struct ks_account_config {
	char *name;
	char *provider;		/* "infomaniak" or NULL */
	char *url;		/* filled from the provider when not given */
	char *username;
	char *password_command;
	char *password_file;
	char *ca_file;
	bool allow_insecure_http;
	unsigned interval;	/* seconds; 0 = use [general] interval */
	int conflict;		/* KS_CONFLICT_MODE_*; [general]'s when not set */
	unsigned line;		/* line of the [account] header, for messages */
} ks_account_config;

typedef struct ks_config {
	char *path;
	unsigned interval;	/* seconds, [general] interval, default 900 */
	int conflict;		/* KS_CONFLICT_MODE_*, default server-wins */
	ks_account_config *accounts;
	size_t n_accounts;
} ks_config;

/* Path of the default config file, $XDG_CONFIG_HOME/ksync/ksync.conf (or ~/.config/...).
 * *ret is owned by the caller. -ENOENT when neither XDG_CONFIG_HOME nor HOME is set. */
int ks_config_default_path(char **ret);

/* Parses and validates path. On success *ret is owned by the caller (ks_config_free()).
 * On failure returns -EINVAL (syntax or validation errors) or the errno of opening the file,
 * and *reterr_msg (if not NULL) receives every problem as "path:line: message" lines,
 * joined with '\n', owned by the caller. */
int ks_config_load(const char *path, ks_config **ret, char **reterr_msg);
ks_config *ks_config_free(ks_config *c);

/* The account called name, or NULL. Borrowed from c. */
const ks_account_config *ks_config_find_account(const ks_config *c, const char *name);

/* Gets the account's password: the first line of password_command's stdout (run with
 * /bin/sh -c, stdin from /dev/null, stderr passed through), or the first line of
 * password_file, which must be a regular file of mode 0600 or stricter owned by the user.
 * *ret is owned by the caller, who wipes it (ks_secret_free()).
 * -EPERM: password_file has wrong permissions; -EIO: the command failed or printed nothing;
 * -ENOKEY: neither is configured (an empty password is then used by callers that allow it).
 * *reterr_msg gets a human-readable reason. */
int ks_account_get_password(const ks_account_config *a, char **ret, char **reterr_msg);

/* Wipes and frees a secret string. Returns NULL. */
char *ks_secret_free(char *s);

/* ---- sync --------------------------------------------------------------------------------- */

typedef struct ks_engine ks_engine;

/* $XDG_DATA_HOME/ksync, or ~/.local/share/ksync. Owned by the caller. */
int ks_data_dir_default(char **ret);

/* Opens the engine on data_dir (created 0700 when missing): the cache data_dir/ksync.db and
 * the trees data_dir/contacts and data_dir/calendars. -EUCLEAN: corrupt cache; -EPROTO: cache
 * written by a newer ksync. */
int ks_engine_new(const char *data_dir, ks_engine **ret);
ks_engine *ks_engine_free(ks_engine *e);

typedef enum ks_sync_event_type {
	KS_SYNC_COLLECTION_DONE,	/* one collection synced; counts set */
	KS_SYNC_COLLECTION_FAILED,	/* one collection failed this run; error and message set */
	KS_SYNC_ACCOUNT_FAILED,		/* the account as a whole failed; collection is NULL */
	KS_SYNC_ITEM_SKIPPED,		/* an item was left out (bad content); message says why */
	KS_SYNC_PROGRESS,		/* done of total items fetched in the collection */
	KS_SYNC_CONFLICT,		/* a conflict was decided; message says how and where the
					 * losing version is kept */
	KS_SYNC_NOTICE,			/* something the user should know, not a failure */
} ks_sync_event_type;

typedef struct ks_sync_event {
	ks_sync_event_type type;
	const char *account;
	const char *collection;	/* "contacts/<name>" or "calendars/<name>", or NULL */
	int error;		/* negative errno for failures */
	const char *message;
	unsigned done, total;
	unsigned added, updated, deleted, skipped;	/* local changes from the server */
	unsigned uploaded, removed, conflicts;		/* server changes from local ones */
	unsigned requests;	/* HTTP requests the collection cost this run */
} ks_sync_event;

typedef void (*ks_sync_event_fn)(const ks_sync_event *ev, void *userdata);

typedef struct ks_sync_opts {
	bool force;		/* ignore stored sync tokens and ctags, compare everything */
	bool allow_mass_delete;	/* let a run delete more than half of a collection */
	bool wait_lock;		/* wait for another process syncing the account */
	ks_sync_event_fn on_event;
	void *userdata;
} ks_sync_opts;

/* Brings every collection of the account down into the cache and the vdir tree.
 * Returns 0 when every collection synced, the number of failed collections (> 0), or a
 * negative errno when the account failed as a whole (credentials, discovery, network);
 * each failure is also reported through o->on_event with a message. */
int ks_sync_account(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o);

/* The error scope of a failure (STYLE: item, collection, account). */
typedef enum ks_error_scope {
	KS_SCOPE_ITEM,
	KS_SCOPE_COLLECTION,
	KS_SCOPE_ACCOUNT,
} ks_error_scope;
ks_error_scope ks_error_scope_of(int r);

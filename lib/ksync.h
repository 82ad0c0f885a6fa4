/* SPDX-License-Identifier: MIT */
#pragma once

/* libksync: the only header daemon/ and cli/ include. */

#include <errno.h>
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

/* "err", "warning", "notice", "info" or "debug" as KS_LOG_*; -EINVAL for anything else. */
int ks_log_level_parse(const char *s);

/* Installs the sink that receives the library's messages (none by default). The one global. */
void ks_log_set_sink(ks_log_fn fn, void *userdata);

/* A hook called after every durable step (a file written and its directory flushed, a file
 * batch flushed, a transaction committed, a reply to a request that changes the server
 * received). Crash tests install one that ends the process at the Nth step. The only other
 * global besides the log sink. */
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
	char *password_secret;	/* Secret Service attributes, "key=value key=value ..." */
	char *ca_file;
	bool allow_insecure_http;
	unsigned interval;	/* seconds; 0 = use [general] interval */
	int conflict;		/* KS_CONFLICT_MODE_*; [general]'s when not set */
	unsigned line;		/* line of the [account] header, for messages */
	int collections;	/* KS_NEW_COLLECTIONS_*; [general]'s when not set */
	unsigned timeout;	/* seconds without data before a request is given up; [general]'s
				 * when 0 */
	unsigned password_timeout;	/* seconds password_command or a keyring prompt may take;
					 * [general]'s when 0 (60 s when neither says) */
	char *include;		/* include =: patterns of collections that sync, or NULL */
	char *exclude;		/* exclude =: patterns of collections that do not (it wins) */
	char *feed;		/* feed =: the iCalendar file of a calendar subscription (https;
				 * url is set to it), or NULL */
	char *calendars_path;	/* calendars_path =: the directory of the account's calendars
				 * (absolute), or NULL for <data_dir>/calendars/<name> */
	char *contacts_path;	/* contacts_path =: the same for its address books */
	char *paths;		/* path = lines: "KIND/NAME\nDIR\n" for each (absolute DIR),
				 * or NULL */
	/* past_days =, future_days =: the time window of events in calendars, in days before
	 * and after now; 0 for no limit on that side ([general]'s when not set) */
	int past_days;
	int future_days;
} ks_account_config;

typedef struct ks_config {
	char *path;
	unsigned interval;	/* seconds, [general] interval, default 900 */
	int conflict;		/* KS_CONFLICT_MODE_*, default server-wins */
	ks_account_config *accounts;
	size_t n_accounts;
	int collections;	/* KS_NEW_COLLECTIONS_*, default all */
	unsigned timeout;	/* seconds, [general] timeout, default 60 */
	unsigned password_timeout;	/* seconds, [general] password_timeout, default 60 */
	bool notifications;	/* [general] notifications: desktop notifications of problems,
				 * default on */
	int log_level;		/* [general] log_level: KS_LOG_*, 0 when not set */
	int past_days;		/* [general] past_days and future_days, 0 when not set */
	int future_days;
	/* What ks_config_load_partial() left out: the problems ("path:line: message" lines,
	 * NULL when none) and the names of the [account] sections they concern
	 * (NULL-terminated, or NULL). */
	char *errors;
	char **invalid_accounts;
	/* Likely mistakes that still parse ("path:line: message" lines, such as a ' #' inside
	 * a value), NULL when none. */
	char *warnings;
} ks_config;

/* Path of the default config file, $XDG_CONFIG_HOME/ksync/ksync.conf (or ~/.config/...).
 * *ret is owned by the caller. -ENOENT when neither XDG_CONFIG_HOME nor HOME is set. */
int ks_config_default_path(char **ret);

/* Parses and validates path. On success *ret is owned by the caller (ks_config_free()).
 * On failure returns -EINVAL (syntax or validation errors) or the errno of opening the file,
 * and *reterr_msg (if not NULL) receives every problem as "path:line: message" lines,
 * joined with '\n', owned by the caller. */
int ks_config_load(const char *path, ks_config **ret, char **reterr_msg);
/* ks_config_load(), except that errors leave out only what they concern: an [account] with
 * an error is not in c->accounts but in c->invalid_accounts, a [general] setting with an
 * error keeps its default, and c->errors holds every problem. Returns 0 for a file without
 * errors, or the number of errors (> 0) with *ret set all the same; a negative errno (and
 * *reterr_msg) when the file cannot be read. */
int ks_config_load_partial(const char *path, ks_config **ret, char **reterr_msg);
ks_config *ks_config_free(ks_config *c);

/* "90", "90s", "15min" or "1h" as seconds. -EINVAL for anything else, -ERANGE when too
 * large. */
int ks_duration_parse(const char *s, unsigned *ret);

/* A validated copy of a, alone in a config of its own (url filled from the provider,
 * relative paths taken from the working directory, the [general] defaults), as
 * ks_config_load() would make it. -EINVAL with the problems in *reterr_msg, one a line,
 * without file and line. */
int ks_config_check_account(const ks_account_config *a, ks_config **ret, char **reterr_msg);

/* The account called name, or NULL. Borrowed from c. */
const ks_account_config *ks_config_find_account(const ks_config *c, const char *name);

/* A deep copy of a into *ret (every string duplicated). -ENOMEM. */
int ks_account_config_copy(const ks_account_config *a, ks_account_config *ret);
/* Frees the strings of a and zeroes it. */
void ks_account_config_done(ks_account_config *a);

/* ---- secrets ------------------------------------------------------------------------------ */

/* Gets the account's password (lib/secret.c): the first line of password_command's stdout
 * (run with /bin/sh -c in a process group of its own, stdin from /dev/null, stderr kept for
 * messages, ended with its group after password_timeout or when *cancel becomes non-zero),
 * or the first line of password_file (a regular file of mode 0600 or stricter owned by the
 * user), or the secret of the Secret Service item matching password_secret (unlocked
 * through the keyring's own prompt, waited for at most password_timeout). cancel may be
 * NULL. *ret is owned by the caller, who wipes it (ks_secret_free()).
 * -EPERM: password_file has wrong permissions; -EIO: the command failed or printed nothing;
 * -ETIMEDOUT; -ECANCELED; -ENOENT: no such file or keyring item; -EHOSTDOWN: no Secret
 * Service; -EACCES: the keyring stayed locked; -ENOKEY: no password is configured (callers
 * then send none). *reterr_msg gets a human-readable reason that says what to do. */
int ks_secret_get(const ks_account_config *a, const volatile int *cancel, char **ret,
		  char **reterr_msg);
/* ks_secret_get() without a cancel flag. */
int ks_account_get_password(const ks_account_config *a, char **ret, char **reterr_msg);

/* Wipes and frees a secret string. Returns NULL. */
char *ks_secret_free(char *s);

/* The password_secret reference ksync uses for its own keyring item of account:
 * "service=ksync account=ACCOUNT". *ret owned by the caller. */
int ks_secret_ref_for_account(const char *account, char **ret);

/* Stores secret in the default keyring of the Secret Service (org.freedesktop.secrets on
 * the session bus) as an item with the attributes of attrs (a password_secret reference)
 * and the label label, replacing an item with the same attributes. A locked keyring is
 * unlocked through the service's prompt, waited for at most timeout_s (0: 60 s).
 * -EHOSTDOWN: no Secret Service (or no session bus); -EACCES: the keyring stayed locked;
 * -EINVAL: bad attrs, or an empty secret or one with a line break; -ETIMEDOUT; -EIO. */
int ks_secret_service_store(const char *attrs, const char *label, const char *secret,
			    unsigned timeout_s, char **reterr_msg);

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
	/* The server refused the account's credentials (HTTP 401, confirmed): credentials
	 * holds their fingerprint, for ks_sync_opts.refused_credentials; message is the
	 * explanation, or NULL when a KS_SYNC_ACCOUNT_FAILED of the run already gave it. */
	KS_SYNC_CREDENTIALS_REFUSED,
	/* A collection the run was to sync and did not reach, because the account failed or
	 * the run stopped: message says why ("not synced: ..."), error is the run's. */
	KS_SYNC_COLLECTION_SKIPPED,
} ks_sync_event_type;

typedef struct ks_sync_event {
	ks_sync_event_type type;
	const char *account;
	const char *collection;	/* "contacts/<name>" or "calendars/<name>", or NULL */
	int error;		/* negative errno for failures */
	const char *message;	/* one line: controls and bidi overrides written as escapes */
	unsigned done, total;
	unsigned added, updated, deleted, skipped;	/* local changes from the server */
	unsigned uploaded, removed, conflicts;		/* server changes from local ones */
	unsigned requests;	/* HTTP requests the collection cost this run */
	unsigned retry_after;	/* KS_SYNC_NOTICE: the server asked to wait this many seconds
				 * (Retry-After of a 429 or 503) before the next run */
	const char *credentials;	/* KS_SYNC_CREDENTIALS_REFUSED: a fingerprint (hex) of
					 * the URL, user name and password; not the password */
	/* KS_SYNC_ITEM_SKIPPED of a local file: its name in the collection's directory, as it
	 * is (message quotes it escaped); NULL for items known only by their href. */
	const char *file;
	/* KS_SYNC_ACCOUNT_FAILED: the password could not be had (password_command,
	 * password_file, the Secret Service), so nothing was asked of the server. */
	bool no_password;
} ks_sync_event;

typedef void (*ks_sync_event_fn)(const ks_sync_event *ev, void *userdata);

typedef struct ks_sync_opts {
	bool force;		/* ignore stored sync tokens and ctags, compare everything */
	bool allow_mass_delete;	/* let a run delete more than half of a collection */
	bool wait_lock;		/* wait for another process syncing the account */
	/* Only sync when a local file changed since the last run: a scan of the directories,
	 * no request when nothing changed (the daemon after a file notification). */
	bool only_if_local_changes;
	/* List the home sets this run (a collection was just created or removed). */
	bool list_collections;
	/* The href of a collection just created: enabled even with `collections = none`. */
	const char *enable_href;
	/* The href of a collection just deleted on the server on purpose: removed here like any
	 * collection gone from the server, without the mass-deletion guard. */
	const char *delete_href;
	/* Sync only this collection (directory name, or "contacts/NAME" / "calendars/NAME"). */
	const char *only_collection;
	/* Set (by another thread or a signal handler) to stop at the next safe point; the run
	 * then returns -ECANCELED. Every point is safe: the next run completes the work. */
	const volatile int *cancel;
	/* The fingerprint of credentials the server refused (KS_SYNC_CREDENTIALS_REFUSED):
	 * when the account's credentials (URL, user name, password) still have it, the run
	 * sends nothing and returns -EKEYREVOKED, so that a wrong password is not tried again
	 * and again (repeated failed logins can lock an account). NULL: none. */
	const char *refused_credentials;
	/* The server to sync with instead of the account's URL (the engine's tests hand in a
	 * store held in memory); NULL: the account's server. Borrowed. */
	struct ks_remote *remote;
	ks_sync_event_fn on_event;
	void *userdata;
} ks_sync_opts;

/* Brings every collection of the account down into the cache and the vdir tree.
 * Returns 0 when every collection synced, the number of failed collections (> 0), or a
 * negative errno when the account failed as a whole (credentials, discovery, network);
 * each failure is also reported through o->on_event with a message. Every enabled
 * collection in the run's scope gets one event that ends it: KS_SYNC_COLLECTION_DONE,
 * KS_SYNC_COLLECTION_FAILED, or (when the account failed first) KS_SYNC_COLLECTION_SKIPPED. -EACCES: the server
 * refused the credentials (HTTP 401; a 401 or 403 on a collection is confirmed with one
 * request to the account's URL, and an unconfirmed one gives -EPERM);
 * -EKEYREVOKED: nothing was sent, the credentials are still o->refused_credentials. */
int ks_sync_account(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o);

/* What ks_sync_account() would do to the account's enabled collections (o->only_collection
 * narrows them; o->force compares everything; o may be NULL), without doing it: the local
 * side by the run's own scan, read-only, and the server's by one listing per collection
 * (sync-collection from the stored token, or a PROPFIND of every etag), compared with the
 * cache. Nothing is written or sent but those listings. *ret_json gets {"account": s,
 * "first_sync": b (the cache knows no collection yet: a first sync lists the server's),
 * "collections": [{"path": s, "readonly": b, "fetch_new": n, "fetch_changed": n,
 * "delete_here": n, "send": n, "delete_on_server": n, "merge": n, "refused": n, each with
 * "<key>_names": [the first 50 file names], "mass_deletion": b (the guard would stop the
 * collection), "truncated": b, "error": s|null}]}, owned by the caller. Errors of the
 * password and the cache, with *reterr_msg. */
int ks_sync_preview(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o,
		    char **ret_json, char **reterr_msg);
/* The JSON of ks_sync_preview() in words, a line per collection ("ACCOUNT/PATH: would fetch
 * 2 new, ...", "nothing to do"), with names the names of the items under each line. *ret is
 * owned by the caller. -EBADMSG for a text that is not such JSON. */
int ks_sync_preview_describe(const char *json, bool names, char **ret);

/* The error scope of a failure (STYLE: item, collection, account). */
typedef enum ks_error_scope {
	KS_SCOPE_ITEM,
	KS_SCOPE_COLLECTION,
	KS_SCOPE_ACCOUNT,
} ks_error_scope;
ks_error_scope ks_error_scope_of(int r);

/* ---- status ------------------------------------------------------------------------------- */

/* What a caller (the daemon) knows of a collection's last run. */
typedef struct ks_collection_state {
	uint64_t last_sync;	/* when a sync of it last completed, unix seconds; 0 when
				 * unknown (the time stored in the cache is used then) */
	uint64_t last_run;	/* when the last run that was to sync it ended, 0 when unknown */
	const char *result;	/* that run's result: "ok", "failed" or "skipped"; NULL */
	const char *error;	/* borrowed */
} ks_collection_state;
typedef void (*ks_collection_state_fn)(const char *path, ks_collection_state *ret, void *userdata);

/* The account's collections as a JSON array (lib/util/ipc.h, Collections), owned by the caller:
 * account, name, path, href, kind, displayname, color, components, readonly, enabled,
 * items, pending (local changes not sent yet, counted without writing anything),
 * pending_files (the first 100 of them, each with why it waits: a refusal that stands, an
 * interrupted upload, a collection that does not sync or is read-only, the next sync),
 * last_sync (state's, else the time the cache holds), last_run, last_result, last_error
 * (from state, which may be NULL), dir. With only_href, just that collection's object
 * (-ENOENT when there is none). */
int ks_engine_collections_json(ks_engine *e, const char *account, const char *only_href,
			       ks_collection_state_fn state, void *userdata, char **ret);
/* The account's open conflicts (those whose copy still exists), newest first, as a JSON
 * array (lib/util/ipc.h, Status): id, account, collection, uid, file, kept, winner, what, time. */
int ks_engine_conflicts_json(ks_engine *e, const char *account, char **ret);
/* Resolves the newest open conflict (one whose copy still exists) that item names: its id
 * (as ks_engine_conflicts_json() gives it) or ACCOUNT/COLLECTION/FILE, COLLECTION being
 * contacts/NAME, calendars/NAME or NAME; account (NULL: any) narrows the search. keep is
 * "local", "server" or "both". The version kept is written into the item's file, like any
 * edit, for the next sync to send (nothing is sent here); "both" keeps the server's version
 * in the item and writes the local one into a new file with a new UID, so that it becomes a
 * new item. Then the copy and its record go. Done under the account's lock. *ret_json gets
 * {"id", "account", "collection", "file", "kept", "new_file": s|null, "changed": b (a file
 * was written, for a sync to send)}, owned by the caller; *ret_target (if not NULL) the
 * collection to sync then, as ACCOUNT/COLLECTION, or NULL when nothing was written.
 * -ENOENT: no such open conflict, or its collection is gone; -EROFS: a read-only
 * collection, where only "server" is possible; -EINVAL; errors of the files and the cache.
 * *reterr_msg (if not NULL) says why in words. */
int ks_conflict_resolve(ks_engine *e, const char *account, const char *item, const char *keep,
			char **ret_json, char **ret_target, char **reterr_msg);
/* What the cache knows of one collection of an account. */
typedef struct ks_collection_info {
	char *href;
	char *path;		/* "contacts/NAME" or "calendars/NAME" */
	char *displayname;	/* NULL when none */
	bool calendar;
	bool readonly;
	bool enabled;
	int items;
} ks_collection_info;

/* The collection of account named by collection (its directory name, or "contacts/NAME" /
 * "calendars/NAME"). -ENOENT when there is none; -EINVAL when a bare name is both an
 * address book's and a calendar's (the caller asks for contacts/NAME or calendars/NAME).
 * Fields owned by *ret (ks_collection_info_done()). */
int ks_engine_find_collection(ks_engine *e, const char *account, const char *collection,
			      ks_collection_info *ret);
void ks_collection_info_done(ks_collection_info *i);

/* Enables or disables a collection, named by its directory name or "contacts/NAME" /
 * "calendars/NAME", in the config file at config_path (unless NULL: see
 * ks_config_set_collection()) and in the cache. Returns 1 when the config file changed, 0
 * when it did not; -ENOENT when the account has no such collection. */
int ks_engine_set_enabled(ks_engine *e, const char *config_path, const char *account,
			  const char *collection, bool enabled, char **reterr_msg);
/* The directories of the account's collections (absolute; NULL-terminated, *ret freed with
 * ks_engine_dirs_free()), as the last run placed them. */
int ks_engine_collection_dirs(ks_engine *e, const char *account, char ***ret);
void ks_engine_dirs_free(char **dirs);
/* Forgets an account: its cache rows, and with delete_files its directories under the data
 * directory (those ksync.conf placed elsewhere are left as they are). */
int ks_engine_forget_account(ks_engine *e, const char *account, bool delete_files);

/* ---- management --------------------------------------------------------------------------- */

/* collections = in ksync.conf: what happens to a collection found on the server for the first
 * time (ks_config.collections, ks_account_config.collections). */
enum {
	KS_NEW_COLLECTIONS_UNSET,	/* account: [general]'s; [general]: all */
	KS_NEW_COLLECTIONS_ALL,		/* synced from the start */
	KS_NEW_COLLECTIONS_NONE,	/* left disabled until enabled by hand */
};

/* The component types of a calendar (equal to the library's KS_COMP_* values). */
enum {
	KS_CALENDAR_EVENTS = 1 << 0,	/* VEVENT */
	KS_CALENDAR_TASKS = 1 << 1,	/* VTODO */
	KS_CALENDAR_JOURNALS = 1 << 2,	/* VJOURNAL */
};

/* Turns names into KS_CALENDAR_* bits: names is NULL-terminated, each element one name or
 * several separated by commas or spaces; VEVENT, VTODO, VJOURNAL (any case) or events, tasks,
 * journals. An empty list gives 0. -EINVAL for an unknown name. */
int ks_calendar_components_parse(const char *const *names, unsigned *ret);

/* The URL a known provider ("infomaniak") stands for, or NULL. Static string. */
const char *ks_config_provider_url(const char *provider);

/* The functions below that talk to the server block until it has answered (a few requests,
 * each bounded by the transport's timeouts): a daemon runs them off its event loop. Each
 * checks the account's settings as ks_config_load() would (url filled from provider, plain
 * http only to loopback, ...), gets the password (ks_account_get_password) and runs discovery.
 * Failures: -EINVAL (settings, or a name or color that cannot be sent), -EACCES (credentials
 * refused, or creation forbidden), -ENOENT (no principal or home set; the message hints at
 * the username), -EEXIST, -EOPNOTSUPP (the server cannot do it), network errors as for a
 * sync (-ETIMEDOUT, -ECONNREFUSED, ...). *reterr_msg (if not NULL) gets a sentence for the
 * user on failure, owned by the caller. Messages from the library also go to the log sink. */

/* Creates an address book called name (displayname; description may be NULL) on the server
 * with an extended MKCOL (RFC 5689), at <addressbook home>/<slug>/, the slug made of name's
 * letters and digits, lowercased, with a random suffix when taken. *ret_href (if not NULL)
 * gets its canonical href, owned by the caller. The collection is not synced: sync the
 * account to get its directory. */
int ks_create_addressbook(const ks_account_config *a, const char *name, const char *description,
			  char **ret_href, char **reterr_msg);

/* Creates a calendar called name with MKCALENDAR (RFC 4791 5.3.1) holding the components
 * (KS_CALENDAR_*; 0: the server's default), colored color ("#RRGGBB", or NULL). Properties
 * a server accepts the collection without (some keep a fixed component set, or need the
 * color set afterwards) are set with PROPPATCH where possible; what the server would not
 * take is reported to the log sink at KS_LOG_NOTICE. Otherwise as ks_create_addressbook(). */
int ks_create_calendar(const ks_account_config *a, const char *name, unsigned components,
		       const char *color, char **ret_href, char **reterr_msg);

/* Gives the collection at href (a calendar, or an address book) the display name name with
 * PROPPATCH, and reads it back. -EEXIST: another collection of that kind is called that
 * (case aside); -EOPNOTSUPP: the server did not keep the name; -ENOENT: no such collection.
 * The cache is not touched: a sync that lists the home sets brings the new name. */
int ks_rename_collection(const ks_account_config *a, const char *href, bool calendar,
			 const char *name, char **reterr_msg);

/* Deletes the collection at href on the server, with everything in it (a collection already
 * gone is no error). -EACCES: the server does not let the account delete it. The cache and
 * the files are left to a sync that lists the home sets (ks_sync_opts.delete_href), which
 * removes them through the same path as any collection deleted on the server. */
int ks_delete_collection(const ks_account_config *a, const char *href, char **reterr_msg);

/* The explanation given when a server refuses an account's credentials (HTTP 401): the
 * user name (Infomaniak: the account id) and, with two-factor authentication, an
 * application password. Static. */
const char *ks_credentials_refused_message(void);

/* Discovery and a listing of the home sets of an account that is not yet configured,
 * touching no cache and no file. *ret_json gets the object AddAccount answers (lib/util/ipc.h):
 * {"name", "url", "principal", "collections": [{"href", "kind", "displayname",
 * "components", "readonly"}]}, owned by the caller. On -EACCES the message explains
 * application passwords for accounts with two-factor authentication. */
int ks_probe_account(const ks_account_config *a, char **ret_json, char **reterr_msg);
/* ks_probe_account() with the password given (NULL: none is sent) instead of fetched: a*s
 * password_command, password_file and password_secret are not looked at. */
int ks_probe_account_with(const ks_account_config *a, const char *password, char **ret_json,
			  char **reterr_msg);

/* Adds "same_as": [names] to the JSON object *json of ks_probe_account(): the accounts of
 * c that the cache e knows (from their last discovery) to have the same principal on the
 * same server as url. *json is replaced. -EBADMSG when *json is not such an object. */
int ks_probe_json_add_same_as(ks_engine *e, const ks_config *c, const char *url,
			      char **json);

/* Appends an [account a->name] section to the config file at path with a's settings (NULL
 * or empty strings, 0 and *_UNSET values are left out; url is left out when it is the
 * provider's). Creates the file (0600) and its directory (0700) when missing. Every other
 * byte of the file is kept. The new file is parsed and validated before it replaces the old
 * one atomically (temporary file, fsync, rename, fsync of the directory); on any failure the
 * old file stays. A symbolic link at path is followed, so the file it points to is updated.
 * -EEXIST: the account is already in the file; -EINVAL: invalid name or value, or the file
 * (old or new) does not parse, with every problem as "path:line: message" lines. */
int ks_config_add_account(const char *path, const ks_account_config *a, char **reterr_msg);

/* Removes the [account name] section from the config file at path: its header and every
 * line up to the next section header, except comment lines after its last setting, which
 * are kept for the section that follows (a last section also takes the blank lines before
 * its header). Atomic and validated as ks_config_add_account(). -ENOENT when the file or
 * the account does not exist. */
int ks_config_remove_account(const char *path, const char *name, char **reterr_msg);

/* include = and exclude = of an account: patterns (fnmatch(3)) separated by commas, each
 * matched against a collection's path ("calendars/NAME", "contacts/NAME"), its directory
 * NAME and its display name. Splits list into a NULL-terminated array (*ret, when ret is
 * not NULL; free it with ks_config_patterns_free()) of *ret_n trimmed patterns; -EINVAL
 * when one is empty. */
int ks_config_split_patterns(const char *list, char ***ret, size_t *ret_n);
void ks_config_patterns_free(char **v);

/* What ksync.conf says of the collection at path (with displayname, or NULL): 1 when
 * include = names it, 0 when exclude = does (exclude wins over include), -1 when neither,
 * so that the collection keeps its state (enable, disable, or collections = when it was
 * first found). */
int ks_account_collection_rule(const ks_account_config *a, const char *path,
			       const char *displayname);

/* The directory ksync.conf gives to the collection at path ("calendars/NAME" or
 * "contacts/NAME"): its path = line, else calendars_path or contacts_path joined with NAME.
 * *ret is NULL when ksync.conf says nothing (the collection lives under the data directory).
 * -EINVAL for a path that is not of that form, -ENOMEM. */
int ks_account_collection_dir(const ks_account_config *a, const char *path, char **ret);

/* Makes the [account name] section of the config file at path say that the collection at
 * coll_path ("calendars/NAME") syncs (enabled) or not: coll_path leaves the other list
 * (include = or exclude =), and joins its own unless a pattern there already names it or,
 * for include =, new collections sync anyway (collections = all). Every other byte is kept;
 * atomic and validated as ks_config_add_account(). Returns 1 when the file changed, 0 when
 * it already said so; -EPERM (with the line to edit) when a pattern of the other list still
 * names the collection, -ENOENT when the file or the account does not exist. */
int ks_config_set_collection(const char *path, const char *name, const char *coll_path,
			     const char *displayname, bool enabled, char **reterr_msg);

/* A synced collection, as ks_clients_config() describes it to khal, khard and todoman. */
typedef struct ks_client_collection {
	const char *account;
	const char *dir;		/* directory name under contacts/<account>/ or
					 * calendars/<account>/ */
	const char *path;		/* its directory when ksync.conf places it elsewhere
					 * (absolute), or NULL */
	bool calendar;			/* false: an address book */
	const char *displayname;	/* NULL: none known */
	const char *color;		/* "#RRGGBB" or NULL */
	unsigned components;		/* KS_CALENDAR_*; 0: unknown (taken as all) */
	bool readonly;
} ks_client_collection;

/* Configuration text for khal (0.10), khard (0.18) and todoman (4.1) that reads the
 * collections under data_dir (an absolute path). cols lists them (for example the enabled
 * collections of the cache); with cols NULL, the directories data_dir/contacts/ACCOUNT/NAME
 * and data_dir/calendars/ACCOUNT/NAME are used, with their displayname and color files, for
 * the accounts of c (every account found when c is NULL). *ret_json gets
 * {"khal": s, "khard": s, "todoman": s}, owned by the caller. -EINVAL for a relative
 * data_dir, errors of reading the directories. */
int ks_clients_config(const ks_config *c, const char *data_dir, const ks_client_collection *cols,
		      size_t n_cols, char **ret_json, char **reterr_msg);

/* ks_clients_config() for the enabled collections of the accounts of c that have their
 * directory, as the cache e knows them (with their components, so that each reader gets a
 * default of its kind). */
int ks_engine_clients_config(ks_engine *e, const ks_config *c, char **ret_json,
			     char **reterr_msg);

/* ---- duplicate contacts ------------------------------------------------------------------- */

/* Groups of likely duplicate contacts in the cache (lib/dup_list.c): cards sharing a normalized
 * name, an e-mail address or a phone number, grouped transitively. A group is named by a
 * stable id, "<address book directory>:<8 hex digits>" (a hash of the account, the address
 * book and the sorted UIDs of its cards), which stays the same until its cards change.
 * JSON shapes are documented in lib/util/ipc.h. *reterr_msg (if not NULL) gets a sentence for the
 * user on failure, owned by the caller. */

/* The groups of the address books of account (every account of c for NULL or ""), or of
 * its one collection (directory name or "contacts/NAME"). *ret_json: {"groups": [...],
 * "cards": n, "addressbooks": n}. -ENOENT: no such account or address book. */
int ks_dup_list_json(ks_engine *e, const ks_config *c, const char *account,
		     const char *collection, char **ret_json, char **reterr_msg);

/* The merge of group id as it would be done, with keep_uid (NULL or "": the most complete
 * card) as the reference: the merged card's lines and where each comes from.
 * -ENOENT: no such group (the cards changed since it was listed); -EINVAL: keep_uid is not
 * in the group. */
int ks_dup_show_json(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     char **ret_json, char **reterr_msg);

/* Merges group id into its reference card on the server and here, under the account's lock:
 * the cards (and group cards naming them) are kept under
 * <data>/conflicts/<account>/contacts/<book>/merge-<time>-<hash>/ with a journal, then the
 * merged card is PUT with If-Match on the reference's cached etag, group cards likewise, and
 * the other cards are DELETEd with If-Match; then files and cache rows follow. A server
 * version that differs from the cache (checked before anything is written, and by every
 * If-Match) stops the merge: -ESTALE, naming the card. -EROFS: read-only address book;
 * -EBUSY: a card was edited locally and is not synced yet; -ENOENT, -EINVAL as for
 * ks_dup_show_json(); network errors as for a sync. With dry_run nothing is written and the
 * answer is the show object with "dry_run": true. */
int ks_dup_merge(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		 bool dry_run, char **ret_json, char **reterr_msg);

/* Undoes the last merge (of account, or of any account for NULL or "") that was not undone:
 * the removed cards are created again (PUT If-None-Match: *), the kept card gets its old
 * content back (If-Match on the etag the merge produced: -ESTALE when it changed since), and
 * group cards their old members. -ENOENT: no merge to undo. */
int ks_dup_undo(ks_engine *e, const ks_config *c, const char *account, char **ret_json,
		char **reterr_msg);

/* ---- JSON --------------------------------------------------------------------------------- */

/* JSON (RFC 8259), the form of the D-Bus answers (lib/util/ipc.h): a parser building a
 * read-only tree, and a streaming writer. Both check UTF-8, so that what ksyncd sends and
 * what ksyncctl reads are always valid JSON and valid D-Bus strings. */

/* Largest text ks_json_parse() accepts. */
#define KS_JSON_MAX_TEXT (16 * 1024 * 1024)
/* Deepest nesting of arrays and objects, for the parser and the writer. */
#define KS_JSON_MAX_DEPTH 64
/* Most values (of any type, members included) in one parsed text. */
#define KS_JSON_MAX_VALUES (1024 * 1024)

typedef enum ks_json_type {
	KS_JSON_NULL,
	KS_JSON_BOOL,
	KS_JSON_NUMBER,
	KS_JSON_STRING,
	KS_JSON_ARRAY,
	KS_JSON_OBJECT,
	_KS_JSON_TYPE_MAX,
	_KS_JSON_TYPE_INVALID = -EINVAL,
} ks_json_type;

/* One value of a parsed text; the root owns the whole tree. */
typedef struct ks_json ks_json;

/* Parses len bytes of text (one JSON value, surrounded by optional whitespace; no BOM).
 * Strings must be valid UTF-8 and are returned as UTF-8; \u escapes are decoded, surrogate
 * pairs included. On success *ret is the root, owned by the caller (ks_json_free()).
 * -EBADMSG: not JSON (syntax, bad UTF-8, a lone surrogate, a U+0000 character, trailing data);
 * -ERANGE: a number beyond the range of a double; -E2BIG: more than KS_JSON_MAX_TEXT bytes,
 * KS_JSON_MAX_DEPTH levels or KS_JSON_MAX_VALUES values; -ENOMEM.
 * On failure *reterr_offset (if not NULL) is the byte offset where parsing stopped. */
int ks_json_parse(const char *text, size_t len, ks_json **ret, size_t *reterr_offset);

/* Frees a tree returned by ks_json_parse(). Accepts NULL; returns NULL. Never pass a value
 * borrowed from inside a tree. */
ks_json *ks_json_free(ks_json *j);
/* For __attribute__((cleanup)). */
static inline void ks_json_freep(ks_json **j)
{
	if (*j)
		ks_json_free(*j);
}

/* The type of j; KS_JSON_NULL for a NULL pointer, so that a missing member reads as null. */
ks_json_type ks_json_get_type(const ks_json *j);

/* Number of elements of an array or members of an object; 0 for anything else. */
size_t ks_json_count(const ks_json *j);

/* Element i of an array or value of member i of an object, or NULL when out of range.
 * Borrowed from the tree. */
const ks_json *ks_json_at(const ks_json *j, size_t i);

/* Name of member i of an object, or NULL. Borrowed from the tree. */
const char *ks_json_key_at(const ks_json *j, size_t i);

/* Value of member key of an object (the last one when a key is repeated), or NULL when j
 * is not an object or has no such member. Borrowed from the tree. */
const ks_json *ks_json_get(const ks_json *j, const char *key);

/* The string of a string value, or NULL for any other type. Borrowed from the tree. */
const char *ks_json_string(const ks_json *j);

/* True for the JSON literal true; false for anything else. */
bool ks_json_is_true(const ks_json *j);

/* The value of a number, stored in *ret when it is integral and fits in int64_t (exactly,
 * when written without fraction or exponent). -EINVAL for any other type; -ERANGE for a
 * number with a non-zero fraction or out of range. */
int ks_json_int(const ks_json *j, int64_t *ret);

/* The value of any number, stored in *ret. -EINVAL for any other type. */
int ks_json_double(const ks_json *j, double *ret);

/* Shorthands for a member of an object, for front ends reading known shapes: the string, or
 * NULL when missing or not a string; the boolean, or def; the integer, or def. */
const char *ks_json_get_string(const ks_json *j, const char *key);
bool ks_json_get_bool(const ks_json *j, const char *key, bool def);
int64_t ks_json_get_int(const ks_json *j, const char *key, int64_t def);

/* The writer. Every call appends to the text, or records the first error and does nothing
 * from then on; each call returns that first error (or 0), so that a sequence of calls can
 * be checked once, with ks_json_writer_finish() or ks_json_writer_steal(). Misuse (a value
 * where a key is due, a key outside an object, unbalanced ends, nesting deeper than
 * KS_JSON_MAX_DEPTH) is -EINVAL; -ENOMEM when memory runs out. */
typedef struct ks_json_writer ks_json_writer;

/* A new writer, with a buffer of its own, owned by the caller (ks_json_writer_free()).
 * pretty: one element per line, indented by two spaces; otherwise no whitespace at all. */
int ks_json_writer_new(bool pretty, ks_json_writer **ret);
/* Frees a writer of ks_json_writer_new() and its text. Accepts NULL; returns NULL. */
ks_json_writer *ks_json_writer_free(ks_json_writer *w);
/* For __attribute__((cleanup)). */
static inline void ks_json_writer_freep(ks_json_writer **w)
{
	if (*w)
		ks_json_writer_free(*w);
}

/* 0 when exactly one complete value was written, the first error otherwise (-EINVAL for an
 * incomplete value). */
int ks_json_writer_finish(const ks_json_writer *w);
/* When exactly one complete value was written, hands its text to the caller (*ret, a
 * NUL-terminated string to free()) and returns 0; the first error otherwise, as
 * ks_json_writer_finish(). The writer then holds nothing and takes no more values. */
int ks_json_writer_steal(ks_json_writer *w, char **ret);

int ks_json_write_object_begin(ks_json_writer *w);
int ks_json_write_object_end(ks_json_writer *w);
int ks_json_write_array_begin(ks_json_writer *w);
int ks_json_write_array_end(ks_json_writer *w);

/* A member name; the member's value follows with any of the calls below. */
int ks_json_write_key(ks_json_writer *w, const char *key);

/* A string, escaped as needed. NULL writes null. Bytes that are not valid UTF-8 are written
 * as U+FFFD, so that the result is always valid UTF-8 (D-Bus refuses anything else). */
int ks_json_write_string(ks_json_writer *w, const char *s);
int ks_json_write_string_len(ks_json_writer *w, const char *s, size_t len);

int ks_json_write_int(ks_json_writer *w, int64_t v);
int ks_json_write_uint(ks_json_writer *w, uint64_t v);
/* A finite double, written so that it reads back as the same value; -EINVAL for NaN and
 * infinities, which JSON cannot express. */
int ks_json_write_double(ks_json_writer *w, double v);
int ks_json_write_bool(ks_json_writer *w, bool v);
int ks_json_write_null(ks_json_writer *w);

/* Writes a parsed value (and everything inside it). Numbers keep the text they were parsed
 * from. */
int ks_json_write_value(ks_json_writer *w, const ks_json *j);
/* Writes the value of a JSON text (the answer of another ks_*_json() call, say), parsed
 * first: a text that is not JSON is the writer's error, as for ks_json_parse(). */
int ks_json_write_text(ks_json_writer *w, const char *text);

/* SPDX-License-Identifier: MIT */
#pragma once

/* The D-Bus interface between ksyncctl (and any desktop front end) and ksyncd, on the user
 * bus. KS_IPC_VERSION is bumped on any change of a signature below; every method takes the
 * caller's version first and the daemon refuses a different one with the error
 * KS_IPC_ERROR_VERSION. Structured answers are JSON strings (objects documented below), so
 * that ksyncctl --json and scripts get them as they are.
 *
 * Methods (interface KS_IPC_INTERFACE, object KS_IPC_PATH):
 *   Version(u version) -> (s daemon_version)
 *   Sync(u version, s target, b force, b allow_mass_delete) -> (u run_id)
 *       target: "" (every account), "ACCOUNT" or "ACCOUNT/COLLECTION" where COLLECTION is
 *       the directory name or "contacts/NAME" / "calendars/NAME". Starts at once (or queues
 *       behind a run of the same account) and returns; SyncFinished tells the end.
 *   Preview(u version, s target, b force) -> (s json)
 *       What Sync would do, done nothing of: {"accounts": [the object of ks_sync_preview()
 *       (lib/ksync.h), or {"account": s, "error": s}]}; answers when every account in
 *       target has been looked at (one listing per collection).
 *   Status(u version) -> (s json)
 *       {"version": s, "config": {"path": s, "errors": [s], "warnings": [s],
 *        "invalid_accounts": [s]}, "accounts": [{"name": s, "url": s, "subscription": b
 *        (feed = in ksync.conf), "state": "idle"|
 *        "syncing"|"backoff"|"stopped" (credentials refused), "last_sync": unix|null,
 *        "last_result": "ok"|"failed"|null, "last_error": s|null, "next_sync": unix|null, "retry_in": seconds|null,
 *        "collections": [{"name": s, "path": "contacts/NAME", "kind": "addressbook"|
 *          "calendar", "displayname": s|null, "color": s|null, "components": [s],
 *          "readonly": b, "enabled": b, "items": n, "pending": n (local changes not
 *          on the server yet), "pending_files": [{"file": s, "change": "new"|"modified"|
 *          "deleted"|"renamed", "refused": b, "status": HTTP status|null, "since":
 *          unix|null (of the refusal), "reason": s}]|null (the first 100, and why each
 *          waits),
 *          "last_sync": unix|null (the last completed sync; kept in ksync.db across
 *          restarts), "last_run": unix|null (the last run that was to sync it, since
 *          ksyncd started), "last_result": "ok"|"failed"|"skipped"|null (that run's:
 *          skipped when the account failed before the collection was reached),
 *          "last_error": s|null, "dir": s}],
 *        "conflicts": [{"collection": s, "file": s, "kept": s, "winner": s,
 *          "what": s|null, "time": unix}]}]}
 *   Collections(u version, s account) -> (s json)      account "" = all
 *       {"collections": [same objects as in Status, plus "account": s, "href": s]}
 *   SetEnabled(u version, s account_collection, b enabled) -> ()
 *   CreateAddressBook(u version, s account, s name, s description) -> (s json)
 *   CreateCalendar(u version, s account, s name, as components, s color) -> (s json)
 *       Create the collection on the server (extended MKCOL / MKCALENDAR), sync it, and
 *       return its object as in Collections once its directory exists.
 *   ProbeAccount(u version, s name, s url, s username, s password, a{sv} options)
 *              -> (s json)
 *       Runs discovery and lists the home sets with these settings, sending password ("":
 *       none), and answers {"name": s, "url": s, "principal": s, "collections": [{"href": s,
 *       "kind": s, "displayname": s|null, "components": [s], "readonly": b}], "same_as":
 *       [names of configured accounts with the same principal on that server]}. Writes
 *       nothing: ksyncctl writes the account into the config file itself, then calls
 *       Reload. options: "ca_file" (s, an absolute path, read only as the certificates to
 *       verify the server with), "allow_insecure_http" (b), "timeout" (u, seconds); any
 *       other key is refused, as is anything that would make ksyncd run a command or
 *       read a password it was told of. Every text argument of every method is checked
 *       (length, no control characters) and refused with InvalidArgs.
 *   RemoveAccount(u version, s name, b delete_local_data) -> ()
 *   Clients(u version) -> (s json)
 *       {"khal": s, "khard": s, "todoman": s}: configuration text ready to paste.
 *   Reload(u version) -> ()
 *   Duplicates(u version, s target) -> (s json)
 *       Groups of likely duplicate contacts in the cache; target "" (every account),
 *       "ACCOUNT" or "ACCOUNT/ADDRESSBOOK". {"groups": [{"id": s, "account": s,
 *       "collection": s, "displayname": s|null, "readonly": b, "why": ["name"|"email"|
 *       "phone"], "reference": uid, "differs": [property names whose values differ],
 *       "cards": [{"uid": s, "href": s, "file": s, "name": s|null, "org": s|null,
 *         "emails": [s], "phones": [s], "properties": n, "reference": b,
 *         "fields": {NAME: [values]} for the names in differs}]}],
 *        "addressbooks": n, "cards": n}
 *   DuplicateGroup(u version, s group, s keep_uid) -> (s json)
 *       What merging group would give (keep_uid "" = the most complete card):
 *       {"id", "account", "collection", "displayname", "readonly", "why", "reference": uid,
 *        "cards": [{"uid", "name", "file", "reference": b, "adds": n}],
 *        "lines": [{"text": s, "from": uid|null, "added": b}], "merged": s,
 *        "group_cards": [uid of group cards whose members are rewritten]}
 *   MergeDuplicates(u version, s group, s keep_uid, b dry_run) -> (s json)
 *       Merges the group on the server and here (see ks_dup_merge in lib/ksync.h);
 *       answers the DuplicateGroup object plus "dry_run": b, "kept": uid,
 *       "removed": [uid], "backup": s|null (the directory holding the old cards).
 *   UndoMerge(u version, s account) -> (s json)
 *       Undoes the last merge of account ("" = any): {"id", "account", "collection",
 *       "kept": uid, "restored": [uid], "backup": s, "notice": s|null}
 *   RenameCollection(u version, s account_collection, s name) -> (s json)
 *       Sets the display name on the server (refused when another collection of that
 *       kind shows it), then syncs the account, listing the home sets; answers the
 *       collection's object as in Collections once that sync has ended.
 *   DeleteCollection(u version, s account_collection, b allow_mass_delete) -> (s json)
 *       Deletes the collection on the server (refused for two items or more without
 *       allow_mass_delete), then syncs the account, which removes it here as any collection
 *       deleted on the server; answers {"account", "path", "href", "items", "synced": b}
 *       once that sync has ended.
 *   Conflicts(u version, s account) -> (s json)      account "" = all
 *       {"conflicts": [{"id": n, "account": s, "collection": s, "uid": s|null, "file": s,
 *        "path": s|null (the item's file; null when its collection is gone), "kept": s
 *        (the copy of the losing version), "winner": "server"|"local", "what": s|null,
 *        "time": unix}]}: the open conflicts (whose copy still exists), newest first.
 *   ResolveConflict(u version, s item, s keep) -> (s json)
 *       item: an id, or ACCOUNT/COLLECTION/FILE; keep: "local", "server" or "both". The
 *       version kept is written into the item's file ("both": the local one into a new
 *       file with a new UID), the copy removed, and the collection synced, which sends it;
 *       answers {"id", "account", "collection", "file", "kept", "new_file": s|null,
 *       "changed": b, "synced": b (only when a file was written: whether that sync was
 *       ok)} once that sync has ended.
 *   The four answer when the work (run in a worker thread) is done; failures are
 *   KS_IPC_ERROR_FAILED with a message for the user (KS_IPC_ERROR_NO_COLLECTION for an
 *   unknown address book in Duplicates).
 *
 * Signals:
 *   SyncStarted(u run_id, s account)
 *   SyncProgress(u run_id, s account, s collection, u done, u total)
 *   SyncFinished(u run_id, s account, b ok, s json)
 *       json: {"collections": [{"path": s, "ok": b, "synced": b, "error": s|null,
 *              "added": n, "updated": n, "deleted": n, "uploaded": n, "removed": n,
 *              "conflicts": n, "skipped": n}], "errors": [s], "notices": [s]}
 *       Only the collections this run was to sync (all enabled ones of the account, or the
 *       one asked for), each once: "ok" when it synced, else "error" says why; "synced"
 *       false when the run never reached it (the account failed first: "error" is
 *       "not synced: ..."). Counters are what this run changed: "added", "updated",
 *       "deleted" in the files (an upload of this run read back is none of them; a merge
 *       that took server changes is an update), "uploaded" and "removed" on the server.
 *       A Sync call over several accounts ends with one SyncFinished per account, all
 *       with its run_id, then one with account "" summing them up.
 *   Alert(s account, s kind, s collection, s summary, s body)
 *       A problem the user should hear of: kind "conflict" (a conflict kept a copy),
 *       "credentials" (the server refused them), "mass-deletion" (the guard stopped a
 *       collection) or "refused" (the server refuses an item); collection "" when it
 *       concerns the account. Sent once per account and kind until what it says changes
 *       (a new conflict, another collection or file); the desktop notification, unless
 *       [general] notifications is off, says the same.
 *   AlertCleared(s account, s kind)
 *       A run over the whole account no longer met that kind of problem.
 *
 * Errors (D-Bus error names): KS_IPC_ERROR_VERSION, KS_IPC_ERROR_NO_ACCOUNT,
 * KS_IPC_ERROR_NO_COLLECTION, KS_IPC_ERROR_FAILED (message says why), KS_IPC_ERROR_AUTH and
 * KS_IPC_ERROR_NETWORK (methods that talk to the server: ProbeAccount, CreateAddressBook,
 * CreateCalendar, RenameCollection, DeleteCollection, MergeDuplicates, UndoMerge), plus the
 * standard org.freedesktop.DBus.Error.InvalidArgs. */

#define KS_IPC_VERSION 2u
#define KS_IPC_BUS_NAME "io.ksync.Sync1"
#define KS_IPC_PATH "/io/ksync/Sync1"
#define KS_IPC_INTERFACE "io.ksync.Sync1"

#define KS_IPC_ERROR_VERSION "io.ksync.Sync1.Error.Version"
#define KS_IPC_ERROR_NO_ACCOUNT "io.ksync.Sync1.Error.NoSuchAccount"
#define KS_IPC_ERROR_NO_COLLECTION "io.ksync.Sync1.Error.NoSuchCollection"
#define KS_IPC_ERROR_FAILED "io.ksync.Sync1.Error.Failed"
/* Failures of methods that talk to the server: the credentials were refused, or the server
 * could not be reached (refused or failed connection, timeout, unverifiable certificate). */
#define KS_IPC_ERROR_AUTH "io.ksync.Sync1.Error.Authentication"
#define KS_IPC_ERROR_NETWORK "io.ksync.Sync1.Error.Network"

/* SPDX-License-Identifier: MIT */
#pragma once

/* The planner: what the engine does with one item, from what its cache row, its file and the
 * server say of it. It reads nothing and writes nothing: the engine finds out the states
 * (reading files, asking the cache and the server) and carries the action out. One decision
 * is about one item, as the engine meets it in a run:
 *
 *   ks_plan_fetched()   the server's version of an item arrived (new, or changed);
 *   ks_plan_gone()      the server no longer has an item;
 *   ks_plan_local()     a local change is to be sent;
 *   ks_plan_written()   the server answered the request that sent it.
 *
 * The rules every decision keeps: a file edited here is never overwritten or deleted (the
 * upload merges it, or it goes up as a new item), an item's file is deleted only when it is
 * as ksync last wrote it, and nothing refused or read-only is sent. */

#include <stdbool.h>

/* What the item's file is like next to its cache row. */
typedef enum ks_plan_file {
	KS_PLAN_FILE_NONE,		/* no row, and no file holds the item's UID */
	KS_PLAN_FILE_AS_RECORDED,	/* the row's file, as ksync last wrote or saw it */
	KS_PLAN_FILE_EDITED,		/* the row's file, with other bytes */
	KS_PLAN_FILE_DAMAGED,		/* edited into something that is no item */
	KS_PLAN_FILE_MISSING,		/* the row's file is gone, and no other holds its UID */
	KS_PLAN_FILE_RENAMED,		/* the row's file is gone; a file without a row has its UID */
	KS_PLAN_FILE_OTHER,		/* no regular file (a symbolic link, a FIFO) */
	KS_PLAN_FILE_UNTRACKED_SAME,	/* no row; a file with the UID holds the server's bytes */
	KS_PLAN_FILE_UNTRACKED_OTHER,	/* no row; a file with the UID holds other bytes */
	_KS_PLAN_FILE_MAX,
} ks_plan_file;

typedef enum ks_plan_action {
	KS_PLAN_NOTHING,
	/* The server's version into the file (named anew for a new item) and the row. */
	KS_PLAN_WRITE,
	/* Only the row: the file holds the server's bytes already. */
	KS_PLAN_RECORD,
	/* Keep the damaged file aside as a conflict copy, then write the server's version. */
	KS_PLAN_REPAIR,
	/* Leave file and row: the upload that follows merges the local change with this one. */
	KS_PLAN_DEFER,
	/* Leave file and row, and no upload takes care of it (no regular file): the server's
	 * change is held until the file is back. */
	KS_PLAN_HOLD,
	/* The file without a row is the item: a row without a base, and the upload merges. */
	KS_PLAN_ADOPT,
	/* Delete the file and the row. */
	KS_PLAN_DELETE_FILE,
	/* Forget the row only: the file (edited, renamed, or gone already) stays as it is, and
	 * one that is still there goes up as a new item. */
	KS_PLAN_FORGET,
	/* Send a new item (PUT If-None-Match: *). */
	KS_PLAN_UPLOAD_NEW,
	/* Send the change (PUT If-Match: the row's etag). */
	KS_PLAN_UPLOAD,
	/* Send the deletion (DELETE If-Match: the row's etag). */
	KS_PLAN_DELETE_REMOTE,
	/* Fetch the server's version and merge: a write the server refused on its condition,
	 * or one that has no etag to be conditioned on. */
	KS_PLAN_MERGE,
	/* Keep the local change as a conflict copy and put the server's version back. */
	KS_PLAN_REVERT,
	/* Not sent: refused (now, or before and unchanged since); the file stays, said why. */
	KS_PLAN_REFUSE,
	/* The request failed: the item stays as it is for the next run. */
	KS_PLAN_FAIL,
	_KS_PLAN_ACTION_MAX,
} ks_plan_action;

/* The server's version of an item arrived. file is the state of its file (for an item
 * without a row: NONE, UNTRACKED_SAME or UNTRACKED_OTHER); same_bytes says that the server's
 * bytes are those of the row; force is a --force run, the only one that tells DAMAGED from
 * EDITED. WRITE, RECORD, REPAIR, DEFER, HOLD or ADOPT. */
ks_plan_action ks_plan_fetched(ks_plan_file file, bool same_bytes, bool force);

/* The server no longer has an item whose file is file; deleting is true when a deletion of
 * it was sent by a run a crash cut short. NOTHING (no row), DELETE_FILE or FORGET. */
ks_plan_action ks_plan_gone(ks_plan_file file, bool deleting);

/* A local change: what the scan found of a file next to its row. */
typedef enum ks_plan_change {
	KS_PLAN_CHANGE_NEW,		/* a file without a row */
	KS_PLAN_CHANGE_MODIFIED,
	KS_PLAN_CHANGE_DELETED,		/* confirmed by the second look */
	KS_PLAN_CHANGE_MOVED,		/* renamed with its bytes, or back after a moment */
	KS_PLAN_CHANGE_IGNORED,		/* no regular file, or unreadable */
	_KS_PLAN_CHANGE_MAX,
} ks_plan_change;

typedef struct ks_plan_local_in {
	ks_plan_change change;
	bool refused;		/* refused before, and the same bytes (or deletion) still */
	bool readonly;		/* the collection may not be written */
	bool has_etag;		/* the row knows the server's etag */
} ks_plan_local_in;

/* What to send for a local change: NOTHING, REFUSE, REVERT, UPLOAD_NEW, UPLOAD,
 * DELETE_REMOTE or MERGE. */
ks_plan_action ks_plan_local(const ks_plan_local_in *in);

/* The server's answer to a write: result (0 or a negative errno) and status (the HTTP status,
 * 0 when none came) of the PUT (deletion false) or DELETE (true) of an item, sent as an update
 * of a known item or not. RECORD (a PUT taken), FORGET (a DELETE done, or the item already
 * gone), MERGE, REFUSE (that item's refusal: the rest of the run goes on) or FAIL. */
ks_plan_action ks_plan_written(bool deletion, bool update, int result, long status);

/* The action's name, for messages and tests. */
const char *ks_plan_action_name(ks_plan_action a);
const char *ks_plan_file_name(ks_plan_file f);

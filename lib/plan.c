/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "macro.h"
#include "plan_p.h"
#include "refusal_p.h"

ks_plan_action ks_plan_fetched(ks_plan_file file, bool same_bytes, bool force)
{
	switch (file) {
	case KS_PLAN_FILE_NONE:
		return KS_PLAN_WRITE;
	case KS_PLAN_FILE_AS_RECORDED:
		/* Same bytes under a new etag (a --force run, a read-back): the file and its
		 * readers are left in peace. */
		return same_bytes ? KS_PLAN_RECORD : KS_PLAN_WRITE;
	case KS_PLAN_FILE_MISSING:
		/* Deleted here, changed there: the change comes back rather than be lost. */
		return KS_PLAN_WRITE;
	case KS_PLAN_FILE_DAMAGED:
		/* Only --force takes a damaged file for one to repair; otherwise it is an edit
		 * like another, which the upload reports. */
		return force ? KS_PLAN_REPAIR : KS_PLAN_DEFER;
	case KS_PLAN_FILE_EDITED:
	case KS_PLAN_FILE_RENAMED:
		/* The upload that follows merges the two; writing the server's version under
		 * the old name of a renamed file would make two files with one UID. */
		return KS_PLAN_DEFER;
	case KS_PLAN_FILE_OTHER:
		return KS_PLAN_HOLD;
	case KS_PLAN_FILE_UNTRACKED_SAME:
		/* A crash or a rebuilt cache left the very bytes: the file is the item. */
		return KS_PLAN_RECORD;
	case KS_PLAN_FILE_UNTRACKED_OTHER:
		return KS_PLAN_ADOPT;
	case _KS_PLAN_FILE_MAX:
		break;
	}
	return KS_PLAN_DEFER;
}

ks_plan_action ks_plan_gone(ks_plan_file file, bool deleting)
{
	switch (file) {
	case KS_PLAN_FILE_NONE:
	case KS_PLAN_FILE_UNTRACKED_SAME:
	case KS_PLAN_FILE_UNTRACKED_OTHER:
		return KS_PLAN_NOTHING;
	case KS_PLAN_FILE_AS_RECORDED:
		/* Our own deletion, sent before a crash, of a file that is back since (moved
		 * away and back): the user wants it after all, and it goes up as a new item. */
		return deleting ? KS_PLAN_FORGET : KS_PLAN_DELETE_FILE;
	case KS_PLAN_FILE_EDITED:
	case KS_PLAN_FILE_DAMAGED:
	case KS_PLAN_FILE_MISSING:
	case KS_PLAN_FILE_RENAMED:
	case KS_PLAN_FILE_OTHER:
		/* Deleted there, edited here: the edit wins, uploaded again as a new item. A
		 * missing or renamed file has nothing left to delete. */
		return KS_PLAN_FORGET;
	case _KS_PLAN_FILE_MAX:
		break;
	}
	return KS_PLAN_NOTHING;
}

ks_plan_action ks_plan_local(const ks_plan_local_in *in)
{
	if (in->change == KS_PLAN_CHANGE_MOVED || in->change == KS_PLAN_CHANGE_IGNORED ||
	    in->change >= _KS_PLAN_CHANGE_MAX)
		return KS_PLAN_NOTHING;
	if (in->refused)
		return KS_PLAN_REFUSE;
	if (in->readonly)
		return KS_PLAN_REVERT;
	if (in->change == KS_PLAN_CHANGE_NEW)
		return KS_PLAN_UPLOAD_NEW;
	/* A row without an etag cannot be conditioned: the server's version is fetched and
	 * merged instead of being overwritten or deleted blindly. */
	if (!in->has_etag)
		return KS_PLAN_MERGE;
	return in->change == KS_PLAN_CHANGE_DELETED ? KS_PLAN_DELETE_REMOTE : KS_PLAN_UPLOAD;
}

ks_plan_action ks_plan_written(bool deletion, bool update, int result, long status)
{
	if (result == 0)
		return deletion ? KS_PLAN_FORGET : KS_PLAN_RECORD;
	if (deletion && result == -ENOENT)
		return KS_PLAN_FORGET;
	/* The condition failed (changed there), or the item to update is gone there: merge. */
	if (result == -ESTALE || (result == -ENOENT && update))
		return KS_PLAN_MERGE;
	/* A 4xx to one item's request (a strict server's validation, a calendar that takes no
	 * tasks, a UID another item has), or a multistatus saying why, is that item's. */
	if (ks_refusal_is_item_status(status) || status == 207)
		return KS_PLAN_REFUSE;
	return KS_PLAN_FAIL;
}

const char *ks_plan_action_name(ks_plan_action a)
{
	static const char *const names[] = {
		[KS_PLAN_NOTHING] = "nothing",
		[KS_PLAN_WRITE] = "write",
		[KS_PLAN_RECORD] = "record",
		[KS_PLAN_REPAIR] = "repair",
		[KS_PLAN_DEFER] = "defer",
		[KS_PLAN_HOLD] = "hold",
		[KS_PLAN_ADOPT] = "adopt",
		[KS_PLAN_DELETE_FILE] = "delete-file",
		[KS_PLAN_FORGET] = "forget",
		[KS_PLAN_UPLOAD_NEW] = "upload-new",
		[KS_PLAN_UPLOAD] = "upload",
		[KS_PLAN_DELETE_REMOTE] = "delete-remote",
		[KS_PLAN_MERGE] = "merge",
		[KS_PLAN_REVERT] = "revert",
		[KS_PLAN_REFUSE] = "refuse",
		[KS_PLAN_FAIL] = "fail",
	};

	return (unsigned) a < ELEMENTSOF(names) && names[a] ? names[a] : "?";
}

const char *ks_plan_file_name(ks_plan_file f)
{
	static const char *const names[] = {
		[KS_PLAN_FILE_NONE] = "none",
		[KS_PLAN_FILE_AS_RECORDED] = "as-recorded",
		[KS_PLAN_FILE_EDITED] = "edited",
		[KS_PLAN_FILE_DAMAGED] = "damaged",
		[KS_PLAN_FILE_MISSING] = "missing",
		[KS_PLAN_FILE_RENAMED] = "renamed",
		[KS_PLAN_FILE_OTHER] = "other",
		[KS_PLAN_FILE_UNTRACKED_SAME] = "untracked-same",
		[KS_PLAN_FILE_UNTRACKED_OTHER] = "untracked-other",
	};

	return (unsigned) f < ELEMENTSOF(names) && names[f] ? names[f] : "?";
}

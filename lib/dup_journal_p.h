/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dup_plan_p.h"
#include "engine_p.h"
#include "ksync.h"

/* The journal of a merge of duplicates (lib/dup_journal.c): the copies of every card the merge
 * changes or removes, kept before any request under
 * conflicts/<account>/contacts/<book>/merge-<time>-<hash>/, and journal.json, which records each
 * step of the merge and of its undo as it is done, so that a crash or a failure at any point
 * leaves what is needed to undo it, and an undo cut off goes on where it stopped. */

/* One card the merge touched. */
typedef struct dup_jentry {
	char *uid, *href, *filename, *etag, *etag_after, *file;
	bool done;		/* removed: deleted on the server; group: rewritten */
	/* The undo of this step went through (a card put back, or left as it was found),
	 * and the etag it left: an undo cut off halfway goes on from there when run again. */
	bool undone;
	char *etag_undone;
} dup_jentry;

/* Made with { .dirfd = -1 }. */
typedef struct dup_journal {
	char *dir;		/* the backup directory, holding the copies and the journal */
	int dirfd;		/* open on it, -1 when not */
	char *id, *account, *collection;
	/* "started" (copies kept, nothing sent), "partial" (the merged card written), "done",
	 * "undoing", "undone" */
	char *state;
	int64_t time_ns;
	dup_jentry kept;
	dup_jentry *removed;
	size_t n_removed;
	dup_jentry *groups;
	size_t n_groups;
} dup_journal;

void ks_dup_journal_done(dup_journal *J);

/* Keeps a copy of every card p changes or removes, and a journal in state "started", before
 * any request, in a new directory below the conflicts directory of l (never through a symbolic
 * link: -ELOOP): a crash or a failure at any later point leaves them to restore from. Where the
 * directory cannot be made, *reterr_msg (if not NULL) says why. */
int ks_dup_journal_begin(ks_local *l, const dup_plan *p, dup_journal *J, char **reterr_msg);
/* Writes the journal (atomically, flushed): the undo of a merge must survive a crash. */
int ks_dup_journal_save(const dup_journal *J);
/* Sets the state and saves the journal. */
int ks_dup_journal_set_state(dup_journal *J, const char *state);
/* Records that the undo of step en went through, leaving etag (or nothing, when the step was
 * left as it was found), and saves the journal. */
int ks_dup_journal_mark_undone(dup_journal *J, dup_jentry *en, const char *etag);
/* Removes the copies and the journal: for a merge that changed nothing. */
void ks_dup_journal_remove(const dup_journal *J);
/* The copy of the card of en kept by the merge. *ret is the caller's. */
int ks_dup_journal_read_copy(const dup_journal *J, const dup_jentry *en, char **ret,
			     size_t *ret_len);
/* The newest merge of account (any for NULL or "") that can be undone ("partial", "done" or
 * "undoing"), by its journal; -ENOENT when there is none. Directories are opened as the
 * local store opens them: -ELOOP (*reterr_msg says where) when a symbolic link is on the way
 * to an account's copies. */
int ks_dup_journal_find_last(ks_engine *e, const ks_config *c, const char *account,
			     dup_journal *ret, char **reterr_msg);

/* SPDX-License-Identifier: MIT */
/* The planner, every input: each decision against its table, then every combination of what
 * the row, the file and the server say of one item carried through a run (the pull's
 * decision, then the push's and the server's answer) on a model of the item's versions, which
 * must lose neither the local edit nor the server's change. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "plan_p.h"

#define A(x) KS_PLAN_##x

static void test_fetched_table(void **state)
{
	/* [file][same_bytes][force] */
	static const ks_plan_action want[_KS_PLAN_FILE_MAX][2][2] = {
		[KS_PLAN_FILE_NONE] = { { A(WRITE), A(WRITE) }, { A(WRITE), A(WRITE) } },
		[KS_PLAN_FILE_AS_RECORDED] = { { A(WRITE), A(WRITE) }, { A(RECORD), A(RECORD) } },
		[KS_PLAN_FILE_EDITED] = { { A(DEFER), A(DEFER) }, { A(DEFER), A(DEFER) } },
		[KS_PLAN_FILE_DAMAGED] = { { A(DEFER), A(REPAIR) }, { A(DEFER), A(REPAIR) } },
		[KS_PLAN_FILE_MISSING] = { { A(WRITE), A(WRITE) }, { A(WRITE), A(WRITE) } },
		[KS_PLAN_FILE_RENAMED] = { { A(DEFER), A(DEFER) }, { A(DEFER), A(DEFER) } },
		[KS_PLAN_FILE_OTHER] = { { A(HOLD), A(HOLD) }, { A(HOLD), A(HOLD) } },
		[KS_PLAN_FILE_UNTRACKED_SAME] = { { A(RECORD), A(RECORD) },
						  { A(RECORD), A(RECORD) } },
		[KS_PLAN_FILE_UNTRACKED_OTHER] = { { A(ADOPT), A(ADOPT) },
						   { A(ADOPT), A(ADOPT) } },
	};

	for (int f = 0; f < _KS_PLAN_FILE_MAX; f++)
		for (int same = 0; same < 2; same++)
			for (int force = 0; force < 2; force++) {
				ks_plan_action got = ks_plan_fetched(f, same, force);
				if (got != want[f][same][force])
					fail_msg("fetched(%s, same=%d, force=%d): %s, want %s",
						 ks_plan_file_name(f), same, force,
						 ks_plan_action_name(got),
						 ks_plan_action_name(want[f][same][force]));
			}
}

static void test_gone_table(void **state)
{
	/* [file][deleting] */
	static const ks_plan_action want[_KS_PLAN_FILE_MAX][2] = {
		[KS_PLAN_FILE_NONE] = { A(NOTHING), A(NOTHING) },
		[KS_PLAN_FILE_AS_RECORDED] = { A(DELETE_FILE), A(FORGET) },
		[KS_PLAN_FILE_EDITED] = { A(FORGET), A(FORGET) },
		[KS_PLAN_FILE_DAMAGED] = { A(FORGET), A(FORGET) },
		[KS_PLAN_FILE_MISSING] = { A(FORGET), A(FORGET) },
		[KS_PLAN_FILE_RENAMED] = { A(FORGET), A(FORGET) },
		[KS_PLAN_FILE_OTHER] = { A(FORGET), A(FORGET) },
		[KS_PLAN_FILE_UNTRACKED_SAME] = { A(NOTHING), A(NOTHING) },
		[KS_PLAN_FILE_UNTRACKED_OTHER] = { A(NOTHING), A(NOTHING) },
	};

	for (int f = 0; f < _KS_PLAN_FILE_MAX; f++)
		for (int d = 0; d < 2; d++)
			if (ks_plan_gone(f, d) != want[f][d])
				fail_msg("gone(%s, deleting=%d): %s, want %s", ks_plan_file_name(f),
					 d, ks_plan_action_name(ks_plan_gone(f, d)),
					 ks_plan_action_name(want[f][d]));
}

static void test_local_table(void **state)
{
	for (int ch = 0; ch < _KS_PLAN_CHANGE_MAX; ch++)
		for (unsigned bits = 0; bits < 8; bits++) {
			ks_plan_local_in in = {
				.change = ch, .refused = bits & 1, .readonly = bits & 2,
				.has_etag = bits & 4,
			};
			ks_plan_action want;
			if (ch == KS_PLAN_CHANGE_MOVED || ch == KS_PLAN_CHANGE_IGNORED)
				want = A(NOTHING);
			else if (in.refused)
				want = A(REFUSE);
			else if (in.readonly)
				want = A(REVERT);
			else if (ch == KS_PLAN_CHANGE_NEW)
				want = A(UPLOAD_NEW);
			else if (!in.has_etag)
				want = A(MERGE);
			else if (ch == KS_PLAN_CHANGE_DELETED)
				want = A(DELETE_REMOTE);
			else
				want = A(UPLOAD);
			ks_plan_action got = ks_plan_local(&in);
			if (got != want)
				fail_msg("local(change %d, bits %u): %s, want %s", ch, bits,
					 ks_plan_action_name(got), ks_plan_action_name(want));
		}
}

static void test_written_table(void **state)
{
	static const struct {
		bool deletion, update;
		int result;
		long status;
		ks_plan_action want;
	} cases[] = {
		{ false, false, 0, 201, A(RECORD) },
		{ false, true, 0, 204, A(RECORD) },
		{ true, true, 0, 204, A(FORGET) },
		{ true, true, -ENOENT, 404, A(FORGET) },
		{ true, true, -ESTALE, 412, A(MERGE) },
		{ false, true, -ESTALE, 412, A(MERGE) },
		{ false, false, -ESTALE, 412, A(MERGE) },	/* If-None-Match: * met an item */
		{ false, true, -ENOENT, 404, A(MERGE) },	/* the item to update is gone */
		{ false, false, -ENOENT, 404, A(FAIL) },	/* the collection is gone */
		{ false, false, -EPROTO, 207, A(REFUSE) },	/* Xandikos: 207 holding 412 */
		{ true, true, -EPROTO, 207, A(REFUSE) },
		{ false, true, -EACCES, 403, A(REFUSE) },
		{ false, false, -EPROTO, 400, A(REFUSE) },
		{ false, false, -EPROTO, 409, A(REFUSE) },
		{ false, false, -EPROTO, 415, A(REFUSE) },
		{ false, true, -EACCES, 401, A(FAIL) },	/* credentials: the account's */
		{ false, true, -EAGAIN, 429, A(FAIL) },
		{ false, true, -EIO, 500, A(FAIL) },
		{ false, true, -ENOSPC, 507, A(FAIL) },
		{ false, true, -ETIMEDOUT, 0, A(FAIL) },
		{ true, true, -ECONNREFUSED, 0, A(FAIL) },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		ks_plan_action got = ks_plan_written(cases[i].deletion, cases[i].update,
						     cases[i].result, cases[i].status);
		if (got != cases[i].want)
			fail_msg("written case %zu: %s, want %s", i, ks_plan_action_name(got),
				 ks_plan_action_name(cases[i].want));
	}
}

/* ---- one item through a run, on a model of its versions ----------------------------------- */

/* What a version holds, as bits: the base both sides had, the local edit, the server's
 * change. A merge holds both edits (the merge keeps what it cannot combine as a conflict
 * copy, which counts as kept). */
enum { V_BASE = 1, V_LOCAL = 2, V_SERVER = 4 };

typedef struct model {
	bool row;
	bool etag;		/* the row knows the server's etag */
	ks_plan_file file;
	unsigned local;		/* what the file holds (0: no file) */
	unsigned server;	/* what the server holds (0: gone) */
	bool server_moved;	/* the server's etag is not the row's */
	unsigned kept;		/* what conflict copies hold */
	unsigned held;		/* server changes left to a later run */
	bool uploaded;
} model;

/* The states a file can be in with a row, and without one. */
static const ks_plan_file with_row[] = {
	KS_PLAN_FILE_AS_RECORDED, KS_PLAN_FILE_EDITED, KS_PLAN_FILE_DAMAGED,
	KS_PLAN_FILE_MISSING, KS_PLAN_FILE_RENAMED, KS_PLAN_FILE_OTHER,
};
static const ks_plan_file without_row[] = {
	KS_PLAN_FILE_NONE, KS_PLAN_FILE_UNTRACKED_SAME, KS_PLAN_FILE_UNTRACKED_OTHER,
};

enum server_change { S_UNCHANGED, S_CHANGED, S_SAME_BYTES, S_GONE, _S_MAX };

static unsigned file_content(ks_plan_file f)
{
	switch (f) {
	case KS_PLAN_FILE_AS_RECORDED:
		return V_BASE;
	case KS_PLAN_FILE_EDITED:
	case KS_PLAN_FILE_DAMAGED:
	case KS_PLAN_FILE_RENAMED:
	case KS_PLAN_FILE_OTHER:
	case KS_PLAN_FILE_UNTRACKED_OTHER:
		return V_LOCAL;
	case KS_PLAN_FILE_UNTRACKED_SAME:
		return V_SERVER;
	default:
		return 0;
	}
}

/* The pull: the server's change meets the file. */
static void pull(model *m, enum server_change sc, bool force)
{
	ks_plan_action a;

	if (sc == S_UNCHANGED || (!m->row && !m->server))
		return;
	if (sc == S_GONE) {
		a = ks_plan_gone(m->file, false);
		assert_true(a == A(NOTHING) || a == A(DELETE_FILE) || a == A(FORGET));
		if (a == A(DELETE_FILE)) {
			/* Only a file as ksync left it is ever deleted. */
			assert_int_equal(m->local, V_BASE);
			m->local = 0;
		}
		if (a != A(NOTHING)) {
			m->row = false;
			m->file = m->local ? KS_PLAN_FILE_UNTRACKED_OTHER : KS_PLAN_FILE_NONE;
		}
		return;
	}
	a = ks_plan_fetched(m->file, sc == S_SAME_BYTES, force);
	switch (a) {
	case A(WRITE):
		/* Never over a file holding an edit. */
		assert_false(m->local & V_LOCAL);
		m->local = m->server;
		m->row = true;
		m->etag = true;
		m->server_moved = false;
		m->file = KS_PLAN_FILE_AS_RECORDED;
		break;
	case A(RECORD):
		assert_int_equal(m->local, m->server);
		m->row = true;
		m->etag = true;
		m->server_moved = false;
		m->file = KS_PLAN_FILE_AS_RECORDED;
		break;
	case A(REPAIR):
		assert_true(force);
		m->kept |= m->local;
		m->local = m->server;
		m->row = true;
		m->etag = true;
		m->server_moved = false;
		m->file = KS_PLAN_FILE_AS_RECORDED;
		break;
	case A(DEFER):
		/* The upload merges: the row stays as it was. */
		break;
	case A(HOLD):
		m->held |= m->server;
		break;
	case A(ADOPT):
		/* A row without a base or an etag: the file is the item's local version. */
		m->row = true;
		m->etag = false;
		m->file = KS_PLAN_FILE_EDITED;
		break;
	default:
		fail_msg("fetched gave %s", ks_plan_action_name(a));
	}
}

/* The push: the file's change meets the server. */
static void push(model *m, bool readonly)
{
	ks_plan_local_in in = { .readonly = readonly, .has_etag = m->row && m->etag };

	switch (m->file) {
	case KS_PLAN_FILE_AS_RECORDED:
	case KS_PLAN_FILE_NONE:
		return;
	case KS_PLAN_FILE_OTHER:
		in.change = KS_PLAN_CHANGE_IGNORED;
		break;
	case KS_PLAN_FILE_MISSING:
		in.change = KS_PLAN_CHANGE_DELETED;
		break;
	case KS_PLAN_FILE_RENAMED:
		/* The scan finds the row's file gone and a file with its UID: one edit. */
		in.change = KS_PLAN_CHANGE_MODIFIED;
		break;
	case KS_PLAN_FILE_UNTRACKED_SAME:
	case KS_PLAN_FILE_UNTRACKED_OTHER:
		in.change = KS_PLAN_CHANGE_NEW;
		break;
	default:
		in.change = KS_PLAN_CHANGE_MODIFIED;
		break;
	}
	ks_plan_action a = ks_plan_local(&in);
	if (a == A(NOTHING))
		return;
	if (a == A(REVERT)) {
		/* Read-only: the local change is kept aside, the server's version back. */
		m->kept |= m->local;
		m->local = m->server;
		return;
	}
	assert_false(readonly);
	bool deletion = a == A(DELETE_REMOTE);
	bool update = a == A(UPLOAD) || deletion;
	int result = 0;
	long status = 204;
	if (a == A(UPLOAD_NEW) && m->server) {
		result = -ESTALE;	/* If-None-Match: * met the server's item */
		status = 412;
	} else if (update && !m->server) {
		result = -ENOENT;
		status = 404;
	} else if (update && m->server_moved) {
		result = -ESTALE;	/* If-Match: the server changed since */
		status = 412;
	}
	if (a != A(MERGE))
		a = ks_plan_written(deletion, update, result, status);
	switch (a) {
	case A(RECORD):
		m->server = m->local;
		m->uploaded = true;
		break;
	case A(FORGET):
		m->server = 0;
		m->local = 0;
		break;
	case A(MERGE):
		/* Both versions meet; a deletion merged with a change keeps the change. */
		m->local = m->server = m->local | m->server;
		break;
	default:
		fail_msg("push gave %s", ks_plan_action_name(a));
	}
	m->file = KS_PLAN_FILE_AS_RECORDED;
}

static void check_run(ks_plan_file file, bool row, enum server_change sc, bool force,
		      bool readonly)
{
	model m = { .row = row, .etag = row, .file = file, .local = file_content(file) };
	char what[160];

	snprintf(what, sizeof(what), "file %s, row %d, server %d, force %d, readonly %d",
		 ks_plan_file_name(file), row, sc, force, readonly);
	if (row)
		m.server = sc == S_CHANGED ? V_SERVER : sc == S_GONE ? 0 : V_BASE;
	else
		m.server = sc == S_GONE || sc == S_UNCHANGED ? 0 : V_SERVER;
	if (file == KS_PLAN_FILE_UNTRACKED_SAME && !m.server)
		return;		/* same bytes as nothing: no such state */
	m.server_moved = sc == S_CHANGED || sc == S_SAME_BYTES;
	unsigned edit = m.local & V_LOCAL, change = m.server & V_SERVER;

	pull(&m, sc, force);
	push(&m, readonly);

	/* The local edit is somewhere: in the file, on the server, or in a copy kept aside. */
	if (edit && !((m.local | m.server | m.kept) & V_LOCAL))
		fail_msg("%s: the local edit was lost", what);
	/* So is the server's change, or it waits for a later run. */
	if (change && !((m.local | m.server | m.kept | m.held) & V_SERVER))
		fail_msg("%s: the server's change was lost", what);
	/* Nothing is sent to a read-only collection. */
	if (readonly && m.uploaded)
		fail_msg("%s: uploaded to a read-only collection", what);
}

static void test_every_run(void **state)
{
	unsigned runs = 0;

	for (int force = 0; force < 2; force++)
		for (int ro = 0; ro < 2; ro++)
			for (int sc = 0; sc < _S_MAX; sc++) {
				for (size_t i = 0; i < ELEMENTSOF(with_row); i++, runs++)
					check_run(with_row[i], true, sc, force, ro);
				for (size_t i = 0; i < ELEMENTSOF(without_row); i++, runs++)
					check_run(without_row[i], false, sc, force, ro);
			}
	assert_int_equal(runs, 2 * 2 * _S_MAX * (ELEMENTSOF(with_row) + ELEMENTSOF(without_row)));
}

/* The no-loss cases by name, each a decision the engine once got wrong or nearly did. */
static void test_no_loss_cases(void **state)
{
	/* Deleted on the server, edited here: the edit stays and goes up as a new item. */
	assert_int_equal(ks_plan_gone(KS_PLAN_FILE_EDITED, false), A(FORGET));
	/* Moved away, deleted there by a run a crash cut short, moved back: the file stays. */
	assert_int_equal(ks_plan_gone(KS_PLAN_FILE_AS_RECORDED, true), A(FORGET));
	/* Renamed here while the server changed it: no second file with the UID. */
	assert_int_equal(ks_plan_fetched(KS_PLAN_FILE_RENAMED, false, false), A(DEFER));
	/* A new server item whose UID a new local file has: one item, merged. */
	assert_int_equal(ks_plan_fetched(KS_PLAN_FILE_UNTRACKED_OTHER, false, false), A(ADOPT));
	/* A symlink where the file was: nothing written through it, the change held. */
	assert_int_equal(ks_plan_fetched(KS_PLAN_FILE_OTHER, false, true), A(HOLD));
	assert_int_equal(ks_plan_gone(KS_PLAN_FILE_OTHER, false), A(FORGET));
	/* Xandikos's 207 to a PUT is a refusal, not a success. */
	assert_int_equal(ks_plan_written(false, false, -EPROTO, 207), A(REFUSE));
	/* A refused change stays refused even in a read-only collection: not reverted. */
	assert_int_equal(ks_plan_local(&(ks_plan_local_in) {
		.change = KS_PLAN_CHANGE_MODIFIED, .refused = true, .readonly = true,
		.has_etag = true }), A(REFUSE));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fetched_table),
		cmocka_unit_test(test_gone_table),
		cmocka_unit_test(test_local_table),
		cmocka_unit_test(test_written_table),
		cmocka_unit_test(test_every_run),
		cmocka_unit_test(test_no_loss_cases),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/* The three-way merge. The input is base, local and remote joined by MERGE_SEP ("\n~~~~\n");
 * an empty base means none. With one separator there is no base; with none, the input is
 * both local and remote. Both policies are run, and on success the result must be a single
 * object with the inputs' UID, and the same_as_* flags must be true to their word. */

#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "item_p.h"
#include "merge_p.h"

#define MERGE_SEP "\n~~~~\n"

typedef struct part {
	const char *data;
	size_t len;
} part;

static void split(const char *s, size_t len, part *ret_first, part *ret_rest)
{
	const char *sep = memmem(s, len, MERGE_SEP, strlen(MERGE_SEP));

	if (!sep) {
		*ret_first = (part) { s, len };
		*ret_rest = (part) { NULL, 0 };
		return;
	}
	*ret_first = (part) { s, (size_t) (sep - s) };
	size_t skip = (size_t) (sep - s) + strlen(MERGE_SEP);
	*ret_rest = (part) { sep + strlen(MERGE_SEP), len - skip };
}

static int same_bytes(const char *a, size_t a_len, const char *b, size_t b_len)
{
	return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

static void check_result(const ks_merge_result *m, part local, part remote)
{
	fuzz_check(m->data && m->data[m->len] == 0);
	if (m->same_as_local)
		fuzz_check(same_bytes(m->data, m->len, local.data, local.len));
	if (m->same_as_remote)
		fuzz_check(same_bytes(m->data, m->len, remote.data, remote.len));
	if (!m->conflict)
		fuzz_check(!m->summary);

	ks_item_info li = {}, ri = {};
	int lr = ks_item_parse_info(local.data, local.len, &li, NULL);
	int rr = ks_item_parse_info(remote.data, remote.len, &ri, NULL);
	/* ks_merge() refuses an input with several UIDs, as the item parser counts them. */
	fuzz_check(lr != -ENOTUNIQ && rr != -ENOTUNIQ);
	if (lr >= 0 && rr >= 0 && li.kind == ri.kind && strcmp(li.uid, ri.uid) == 0) {
		ks_item_info mi = {};
		char *err = NULL;
		int r = ks_item_parse_info(m->data, m->len, &mi, &err);
		if (r < 0) {
			fprintf(stderr, "merged object does not parse: %s\n%s\n", err ? err : "",
				m->data);
			abort();
		}
		fuzz_check(mi.kind == ri.kind);
		fuzz_check(strcmp(mi.uid, ri.uid) == 0);
		ks_item_info_done(&mi);
		free(err);
	}
	ks_item_info_done(&li);
	ks_item_info_done(&ri);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	part base, local, remote, rest;
	bool has_base = true;

	split((const char *) data, size, &base, &rest);
	if (!rest.data) {
		/* Both sides alike, no base. */
		local = remote = base;
		has_base = false;
	} else {
		split(rest.data, rest.len, &local, &remote);
		if (!remote.data) {
			/* Two parts: local and remote, no base. */
			remote = local;
			local = base;
			has_base = false;
		} else if (base.len == 0)
			has_base = false;
	}

	for (int policy = 0; policy < _KS_CONFLICT_MAX; policy++) {
		ks_merge_result m = {};
		int r = ks_merge(has_base ? base.data : NULL, has_base ? base.len : 0,
				 local.data, local.len, remote.data, remote.len,
				 (ks_conflict_policy) policy, &m);
		if (r >= 0) {
			check_result(&m, local, remote);
			ks_merge_result_done(&m);
		} else
			fuzz_check(r == -EBADMSG || r == -ENOTUNIQ || r == -EFBIG || r == -ENOMEM);
	}

	/* Both sides alike: never a conflict, and the result is remote's bytes. */
	ks_merge_result m = {};
	int r = ks_merge(has_base ? base.data : NULL, has_base ? base.len : 0, remote.data,
			 remote.len, remote.data, remote.len, KS_CONFLICT_LOCAL_WINS, &m);
	if (r >= 0) {
		fuzz_check(!m.conflict);
		fuzz_check(m.same_as_remote);
		fuzz_check(same_bytes(m.data, m.len, remote.data, remote.len));
		ks_merge_result_done(&m);
	}
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* Duplicate contacts: keys, grouping, the merged card and the rewriting of group members.
 * The input is up to 8 vCards joined by DUP_SEP ("\n~~~~\n"). Keys must be in their
 * normal form, groups well formed, and a merge of cards that parse must give one card that
 * parses, with the reference's UID. */

#include <errno.h>
#include <string.h>

#include "dup_p.h"
#include "fuzz.h"
#include "vcard_p.h"

#define DUP_SEP "\n~~~~\n"
#define MAX_CARDS 8

static void check_key(const char *k, bool email, bool phone)
{
	if (!k)
		return;
	fuzz_check(*k);
	for (const char *p = k; *p; p++) {
		fuzz_check(!(*p >= 'A' && *p <= 'Z'));
		if (phone)
			fuzz_check(*p >= '0' && *p <= '9');
	}
	if (phone)
		fuzz_check(strlen(k) >= 6 && strlen(k) <= 9);
	if (email)
		fuzz_check(strchr(k, '@') && k[0] != '@');
	if (!email && !phone)
		fuzz_check(k[0] != ' ' && k[strlen(k) - 1] != ' ' && !strstr(k, "  "));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data;
	const char *part[MAX_CARDS];
	size_t len[MAX_CARDS], n = 0;
	ks_dup_card cards[MAX_CARDS] = {};
	bool all = true;

	while (n < MAX_CARDS) {
		const char *sep = memmem(s, size, DUP_SEP, strlen(DUP_SEP));
		part[n] = s;
		len[n] = sep ? (size_t) (sep - s) : size;
		n++;
		if (!sep)
			break;
		size -= (size_t) (sep - s) + strlen(DUP_SEP);
		s = sep + strlen(DUP_SEP);
	}

	for (size_t i = 0; i < n; i++) {
		int r = ks_dup_card_parse(part[i], len[i], &cards[i]);
		if (r < 0) {
			fuzz_check(r == -EBADMSG || r == -EFBIG || r == -ENOMEM);
			cards[i] = (ks_dup_card) { .is_group = true };
			all = false;
			continue;
		}
		check_key(cards[i].name_key, false, false);
		fuzz_check(!cards[i].name_key == !cards[i].name || cards[i].name);
		for (size_t k = 0; k < cards[i].n_emails; k++)
			check_key(cards[i].email_keys[k], true, false);
		for (size_t k = 0; k < cards[i].n_phones; k++)
			check_key(cards[i].phone_keys[k], false, true);
	}

	ks_dup_groups g = {};
	if (ks_dup_find_groups(cards, n, &g) >= 0) {
		size_t total = 0;
		for (size_t k = 0; k < g.n_groups; k++) {
			fuzz_check(g.start[k + 1] - g.start[k] >= 2);
			fuzz_check(g.why[k] != 0);
			for (size_t m = g.start[k]; m < g.start[k + 1]; m++) {
				fuzz_check(g.members[m] < n && !cards[g.members[m]].is_group);
				if (m > g.start[k])
					fuzz_check(g.members[m] > g.members[m - 1]);
			}
			total += g.start[k + 1] - g.start[k];
		}
		fuzz_check(total <= n);
	}
	ks_dup_groups_done(&g);
	for (size_t i = 0; i < n; i++)
		ks_dup_card_done(&cards[i]);

	if (!all)
		return 0;
	ks_dup_merged m = {};
	int r = ks_dup_merge_cards(part, len, n, 0, &m);
	if (r < 0) {
		fuzz_check(r == -EFBIG || r == -ENOMEM);
		return 0;
	}
	fuzz_check(m.data && m.data[m.len] == 0 && strlen(m.data) == m.len);
	fuzz_check(m.n_added <= m.n_lines);
	ks_vcard *out = NULL, *in = NULL;
	size_t n_out = 0, n_in = 0;
	r = ks_vcard_parse(m.data, m.len, &out, &n_out, NULL);
	if (r < 0 && r != -EFBIG) {
		fprintf(stderr, "merged card does not parse:\n%s\n", m.data);
		fuzz_check(r >= 0);
	}
	if (r >= 0) {
		fuzz_check(n_out == 1);
		fuzz_check(ks_vcard_parse(part[0], len[0], &in, &n_in, NULL) >= 0);
		const ks_vcard_prop *u0 = ks_vcard_get(&in[0], "UID");
		const ks_vcard_prop *u1 = ks_vcard_get(&out[0], "UID");
		fuzz_check(!u0 == !u1);
		if (u0)
			fuzz_check(strcmp(u0->value, u1->value) == 0);
	}
	ks_vcard_free_array(out, n_out);
	ks_vcard_free_array(in, n_in);
	ks_dup_merged_done(&m);

	/* The other cards' UIDs are members of the first card, taken as a group card. */
	const char *old[] = { "gone", "x" };
	char *rw = NULL;
	size_t rw_len = 0;
	r = ks_dup_rewrite_members(part[0], len[0], old, 2, "kept", &rw, &rw_len);
	fuzz_check(r >= -ENOMEM || r == -EFBIG);
	if (r > 0) {
		r = ks_vcard_parse(rw, rw_len, &out, &n_out, NULL);
		fuzz_check(r >= 0 || r == -EFBIG);
		if (r >= 0)
			ks_vcard_free_array(out, n_out);
	}
	free(rw);
	return 0;
}

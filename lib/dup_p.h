/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vcard_p.h"

/* Duplicate contacts: the pure part, without I/O: the keys, the grouping and the choice of a
 * group's reference card (lib/dup_group.c), the merged card (lib/dup_merge.c). Reading the
 * address books from the cache and listing them is lib/dup_list.c; the merge and its undo on
 * the server and in the files is lib/dup_apply.c, with its journal in lib/dup_journal.c.
 *
 * Two cards are likely duplicates when they share a normalized name, an e-mail address or a
 * phone number; groups are the connected sets (union-find over the keys). */

/* The name key: the name case-folded and decomposed (NFKD, libunistring), its accents dropped,
 * Latin letters with a stroke or a hook and ligatures written as plain letters (ø o, đ d,
 * æ ae), every run of characters other than letters, digits and marks a single separator,
 * and the words sorted, so that "Müller, Jürgen", "jurgen  MULLER" and "Jürgen Müller",
 * "Ștefan"/"Stefan", "ИВАН"/"иван" and "Straße"/"STRASSE" have the same key. *ret is NULL
 * when nothing is left. Owned by the caller; -ENOMEM. */
int ks_dup_name_key(const char *name, char **ret);

/* The e-mail key: trimmed, "mailto:" dropped, ASCII lower-cased; NULL without an '@'. */
int ks_dup_email_key(const char *email, char **ret);

/* The phone key: the digits only (a "tel:" URI's too); numbers with at least 9 digits keep
 * their last 9, so that +41 79 123 45 67, 0041791234567 and 079 123 45 67 are one number
 * (the country code or the national trunk 0 falls outside the last 9 digits); numbers of 6 to
 * 8 digits keep them all; shorter ones (extensions, short codes) give NULL. */
int ks_dup_phone_key(const char *tel, char **ret);

/* What grouping and listing need of one card. Strings owned by the struct. */
typedef struct ks_dup_card {
	char *name;		/* FN, or "Given Family" from N; NULL when neither */
	char *name_key;
	char **emails;		/* display values */
	char **email_keys;	/* NULL entries for values that give no key */
	size_t n_emails;
	char **phones;
	char **phone_keys;
	size_t n_phones;
	char *org;
	size_t n_props;		/* how complete the card is: its properties, UID and REV aside */
	bool is_group;		/* KIND:group or X-ADDRESSBOOKSERVER-KIND:group: not a contact */
} ks_dup_card;

/* Reads the first vCard of data. -EBADMSG for what is not a vCard; -ENOMEM. */
int ks_dup_card_parse(const char *data, size_t len, ks_dup_card *ret);
void ks_dup_card_done(ks_dup_card *c);

enum {
	KS_DUP_BY_NAME = 1 << 0,
	KS_DUP_BY_EMAIL = 1 << 1,
	KS_DUP_BY_PHONE = 1 << 2,
};

/* The groups of cards[0..n): members[start[g]..start[g+1]) are the indexes of group g (at
 * least two, ascending), why[g] the KS_DUP_BY_* bits of the keys that joined them. Groups are
 * ordered by their first member. Group cards never belong to a group. */
typedef struct ks_dup_groups {
	size_t *members;
	size_t *start;		/* n_groups + 1 entries */
	unsigned *why;
	size_t n_groups;
} ks_dup_groups;

int ks_dup_find_groups(const ks_dup_card *cards, size_t n, ks_dup_groups *ret);
void ks_dup_groups_done(ks_dup_groups *g);

/* The reference of group g of cards[0..): the most complete card: the most properties, then
 * the most bytes (len[i]), then the smallest UID (uids[i]), so that the choice is the same on
 * every run. Returns an index into cards. */
size_t ks_dup_default_reference(const ks_dup_groups *groups, size_t g, const ks_dup_card *cards,
				const size_t *len, const char *const *uids);

/* The id of group g: "<name>:" and 8 hex digits of SHA-256 of account, href (the address
 * book's) and the sorted UIDs (uids[i] of card i) of its members, so that the id stays while
 * the same cards make the group. Owned by the caller; -ENOMEM. */
int ks_dup_group_id(const ks_dup_groups *groups, size_t g, const char *const *uids,
		    const char *account, const char *href, const char *name, char **ret);

/* The unescaped text of a property value, without the blanks around it; *ret is NULL when
 * nothing is left. Owned by the caller; -ENOMEM. */
int ks_dup_text_value(const char *raw, char **ret);

/* A value for showing: unescaped, on one line, at most 80 bytes cut on a UTF-8 boundary;
 * "(image or data)" for PHOTO, LOGO, SOUND and KEY. NULL when out of memory. */
char *ks_dup_display_value(const ks_vcard_prop *p);

/* One line of a merged card, unfolded, for showing where it came from. */
typedef struct ks_dup_line {
	char *text;
	size_t from;		/* index of the card it comes from, SIZE_MAX: made of several */
	bool added;		/* not in the reference card as it was */
} ks_dup_line;

typedef struct ks_dup_merged {
	char *data;		/* the merged vCard, CRLF, folded, NUL-terminated */
	size_t len;
	ks_dup_line *lines;	/* its content lines between BEGIN and END */
	size_t n_lines;
	size_t n_added;		/* lines with added set */
} ks_dup_merged;

/* Merges the cards data[0..n) into data[ref] (RFC 6350 properties, vCard 2.1 to 4.0):
 * - UID, VERSION, PRODID and REV are the reference's;
 * - a single-valued property (FN, N, BDAY, ORG, PHOTO, ...) keeps the reference's value, and
 *   is taken from the first other card that has it when the reference has none;
 * - multi-valued ones (EMAIL, TEL, ADR, URL, IMPP, RELATED, X-...) become the union without
 *   repeats (e-mail addresses compared as ks_dup_email_key, numbers as ks_dup_phone_key,
 *   other values case-insensitively with blanks collapsed); a grouped property
 *   ("item1.EMAIL") is added with its companions (item1.X-ABLABEL) under a group name free in
 *   the result;
 * - CATEGORIES and NICKNAME become one line with the union of their comma-separated values;
 * - NOTE texts are joined, each once, separated by an empty line.
 * Cards are read in order, so the first other card wins where several could add a single
 * value. -EBADMSG when a card does not parse; -EINVAL for ref >= n; -ENOMEM. */
int ks_dup_merge_cards(const char *const *data, const size_t *len, size_t n, size_t ref,
		       ks_dup_merged *ret);
void ks_dup_merged_done(ks_dup_merged *m);

/* Rewrites the members of a group card (vCard 4 KIND:group MEMBER, Apple
 * X-ADDRESSBOOKSERVER-MEMBER, values "urn:uuid:UID" or a bare UID) that name one of old[0..n)
 * to name keep, without repeating a member. Returns 1 and the new card in *ret (owned by the
 * caller) when something changed, 0 (and *ret untouched) when the card names none of them. */
int ks_dup_rewrite_members(const char *data, size_t len, const char *const *old, size_t n_old,
			   const char *keep, char **ret, size_t *ret_len);

/* The names of the properties whose values differ between the cards parsed[0..n), as the
 * merge compares values: a name differs when one of its values is not on every card (a NULL
 * entry, a card that did not parse, has none). UID, VERSION, PRODID, REV and X- properties
 * are left out. *ret (sorted, each name once) and its strings are owned by the caller, also
 * on failure (-ENOMEM). */
int ks_dup_differing_props(ks_vcard *const *parsed, size_t n, char ***ret, size_t *ret_n);

/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "buf_p.h"
#include "dup_p.h"
#include "hash_p.h"
#include "macro.h"
#include "text_p.h"
#include "vcard_p.h"

/* Duplicate contacts, the pure part: which cards are likely the same person (the keys, the
 * groups they make) and which card of a group the others merge into. No I/O. */

typedef struct key_ref key_ref;

static int key_ref_cmp(const void *a, const void *b);
static size_t uf_find(size_t *parent, size_t i);
static void uf_union(size_t *parent, size_t a, size_t b);
static int name_of_n(const char *raw, char **ret);
static int strv_add(char ***v, size_t n, char *s);
static bool value_is_group(const char *raw);
static const char *latin_base(ucs4_t c);
static bool is_dropped(ucs4_t c);
static int str_cmp(const void *a, const void *b);
static const char *skip_prefix_nocase(const char *s, const char *prefix);

/* ---- grouping ----------------------------------------------------------------------------- */

struct key_ref {
	const char *key;
	size_t card;
	unsigned kind;
};

int ks_dup_find_groups(const ks_dup_card *cards, size_t n, ks_dup_groups *ret)
{
	_cleanup_free_ key_ref *keys = NULL;
	_cleanup_free_ size_t *parent = NULL, *size = NULL, *gid = NULL;
	_cleanup_free_ unsigned *why_of_root = NULL;
	_cleanup_(ks_dup_groups_done) ks_dup_groups g = {};
	size_t n_keys = 0, cap = 0;

	assert(cards || n == 0);
	parent = malloc((n + 1) * sizeof(size_t));
	size = calloc(n + 1, sizeof(size_t));
	gid = malloc((n + 1) * sizeof(size_t));
	why_of_root = calloc(n + 1, sizeof(unsigned));
	if (!parent || !size || !gid || !why_of_root)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ks_dup_card *c = &cards[i];

		parent[i] = i;
		if (c->is_group)
			continue;
		size_t want = n_keys + 1 + c->n_emails + c->n_phones;
		while (cap < want) {
			size_t ncap = cap ? cap * 2 : 64;
			key_ref *nk = realloc(keys, ncap * sizeof(*nk));
			if (!nk)
				return -ENOMEM;
			keys = nk;
			cap = ncap;
		}
		if (c->name_key)
			keys[n_keys++] = (key_ref) { c->name_key, i, KS_DUP_BY_NAME };
		for (size_t k = 0; k < c->n_emails; k++)
			if (c->email_keys[k])
				keys[n_keys++] = (key_ref) { c->email_keys[k], i, KS_DUP_BY_EMAIL };
		for (size_t k = 0; k < c->n_phones; k++)
			if (c->phone_keys[k])
				keys[n_keys++] = (key_ref) { c->phone_keys[k], i, KS_DUP_BY_PHONE };
	}
	if (n_keys > 1)
		qsort(keys, n_keys, sizeof(*keys), key_ref_cmp);
	for (size_t i = 1; i < n_keys; i++)
		if (keys[i].kind == keys[i - 1].kind && keys[i].card != keys[i - 1].card &&
		    strcmp(keys[i].key, keys[i - 1].key) == 0)
			uf_union(parent, keys[i].card, keys[i - 1].card);
	/* Why: after every union, so that the bits land on the final roots. */
	for (size_t i = 1; i < n_keys; i++)
		if (keys[i].kind == keys[i - 1].kind && keys[i].card != keys[i - 1].card &&
		    strcmp(keys[i].key, keys[i - 1].key) == 0)
			why_of_root[uf_find(parent, keys[i].card)] |= keys[i].kind;

	for (size_t i = 0; i < n; i++)
		size[uf_find(parent, i)]++;
	size_t n_members = 0;
	for (size_t i = 0; i < n; i++) {
		gid[i] = SIZE_MAX;
		if (parent[i] == i && size[i] >= 2) {
			gid[i] = g.n_groups++;
			n_members += size[i];
		}
	}
	g.members = malloc((n_members + 1) * sizeof(size_t));
	g.start = calloc(g.n_groups + 1, sizeof(size_t));
	g.why = calloc(g.n_groups + 1, sizeof(unsigned));
	if (!g.members || !g.start || !g.why)
		return -ENOMEM;
	/* Counting sort by group: members come out ascending within each group. */
	for (size_t i = 0; i < n; i++) {
		size_t root = uf_find(parent, i);
		if (gid[root] != SIZE_MAX)
			g.start[gid[root] + 1]++;
	}
	for (size_t k = 0; k < g.n_groups; k++)
		g.start[k + 1] += g.start[k];
	_cleanup_free_ size_t *fill = malloc((g.n_groups + 1) * sizeof(size_t));
	if (!fill)
		return -ENOMEM;
	memcpy(fill, g.start, (g.n_groups + 1) * sizeof(size_t));
	for (size_t i = 0; i < n; i++) {
		size_t root = uf_find(parent, i);
		if (gid[root] == SIZE_MAX)
			continue;
		g.members[fill[gid[root]]++] = i;
		g.why[gid[root]] = why_of_root[root];
	}
	*ret = g;
	g = (ks_dup_groups) {};
	return 0;
}

void ks_dup_groups_done(ks_dup_groups *g)
{
	if (!g)
		return;
	free(g->members);
	free(g->start);
	free(g->why);
	*g = (ks_dup_groups) {};
}

size_t ks_dup_default_reference(const ks_dup_groups *groups, size_t g, const ks_dup_card *cards,
				const size_t *len, const char *const *uids)
{
	size_t best = groups->members[groups->start[g]];

	for (size_t k = groups->start[g] + 1; k < groups->start[g + 1]; k++) {
		size_t x = groups->members[k];
		if (cards[x].n_props != cards[best].n_props) {
			if (cards[x].n_props > cards[best].n_props)
				best = x;
		} else if (len[x] != len[best]) {
			if (len[x] > len[best])
				best = x;
		} else if (strcmp(uids[x], uids[best]) < 0)
			best = x;
	}
	return best;
}

int ks_dup_group_id(const ks_dup_groups *groups, size_t g, const char *const *uids,
		    const char *account, const char *href, const char *name, char **ret)
{
	size_t n = groups->start[g + 1] - groups->start[g];
	_cleanup_free_ const char **sorted = calloc(n + 1, sizeof(char *));
	ks_sha256 c;
	uint8_t d[32];

	if (!sorted)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		sorted[i] = uids[groups->members[groups->start[g] + i]];
	qsort(sorted, n, sizeof(*sorted), str_cmp);
	ks_sha256_init(&c);
	ks_sha256_update(&c, account, strlen(account) + 1);
	ks_sha256_update(&c, href, strlen(href) + 1);
	for (size_t i = 0; i < n; i++)
		ks_sha256_update(&c, sorted[i], strlen(sorted[i]) + 1);
	ks_sha256_final(&c, d);
	return asprintf(ret, "%s:%02x%02x%02x%02x", name, d[0], d[1], d[2], d[3]) < 0 ? -ENOMEM : 0;
}

static int key_ref_cmp(const void *a, const void *b)
{
	const key_ref *x = a, *y = b;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	return x->card < y->card ? -1 : x->card > y->card;
}

static size_t uf_find(size_t *parent, size_t i)
{
	while (parent[i] != i) {
		parent[i] = parent[parent[i]];
		i = parent[i];
	}
	return i;
}

static void uf_union(size_t *parent, size_t a, size_t b)
{
	a = uf_find(parent, a);
	b = uf_find(parent, b);
	/* The smaller index is the root: a group is named by its first member. */
	if (a < b)
		parent[b] = a;
	else if (b < a)
		parent[a] = b;
}

/* ---- reading cards ------------------------------------------------------------------------ */

int ks_dup_card_parse(const char *data, size_t len, ks_dup_card *ret)
{
	_cleanup_(ks_dup_card_done) ks_dup_card c = {};
	ks_vcard *cards = NULL;
	size_t n_cards = 0;
	int r;

	r = ks_vcard_parse(data, len, &cards, &n_cards, NULL);
	if (r < 0)
		return r;
	const ks_vcard *v = &cards[0];
	const char *n_raw = NULL;

	for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
		const ks_vcard_prop *p = &v->props[i];
		_cleanup_free_ char *t = NULL, *k = NULL;

		if (strcmp(p->name, "UID") != 0 && strcmp(p->name, "REV") != 0 &&
		    strcmp(p->name, "PRODID") != 0)
			c.n_props++;
		if (strcmp(p->name, "FN") == 0 && !c.name)
			r = ks_dup_text_value(p->value, &c.name);
		else if (strcmp(p->name, "N") == 0 && !n_raw)
			n_raw = p->value;
		else if (strcmp(p->name, "ORG") == 0 && !c.org) {
			r = ks_dup_text_value(p->value, &c.org);
			/* "Company;Department": the company is enough to tell cards apart. */
			if (r >= 0 && c.org)
				c.org[strcspn(c.org, ";")] = 0;
		} else if ((strcmp(p->name, "KIND") == 0 ||
			    strcmp(p->name, "X-ADDRESSBOOKSERVER-KIND") == 0) &&
			   value_is_group(p->value))
			c.is_group = true;
		else if (strcmp(p->name, "EMAIL") == 0 || strcmp(p->name, "TEL") == 0) {
			bool email = p->name[0] == 'E';
			r = ks_dup_text_value(p->value, &t);
			if (r < 0 || !t)
				continue;
			r = email ? ks_dup_email_key(t, &k) : ks_dup_phone_key(t, &k);
			if (r < 0)
				break;
			char ***vals = email ? &c.emails : &c.phones;
			char ***keys = email ? &c.email_keys : &c.phone_keys;
			size_t *cnt = email ? &c.n_emails : &c.n_phones;
			r = strv_add(vals, *cnt, t);
			if (r >= 0) {
				t = NULL;
				r = strv_add(keys, *cnt, k);
				if (r < 0) {
					free((*vals)[*cnt]);
					break;
				}
				k = NULL;
				(*cnt)++;
			}
		}
	}
	if (r >= 0 && !c.name && n_raw)
		r = name_of_n(n_raw, &c.name);
	if (r >= 0)
		r = ks_dup_name_key(c.name, &c.name_key);
	ks_vcard_free_array(cards, n_cards);
	if (r < 0)
		return r;
	*ret = c;
	c = (ks_dup_card) {};
	return 0;
}

void ks_dup_card_done(ks_dup_card *c)
{
	if (!c)
		return;
	free(c->name);
	free(c->name_key);
	for (size_t i = 0; i < c->n_emails; i++) {
		free(c->emails[i]);
		free(c->email_keys[i]);
	}
	free(c->emails);
	free(c->email_keys);
	for (size_t i = 0; i < c->n_phones; i++) {
		free(c->phones[i]);
		free(c->phone_keys[i]);
	}
	free(c->phones);
	free(c->phone_keys);
	free(c->org);
	*c = (ks_dup_card) {};
}

/* The unescaped, trimmed text of a property value; NULL (and 0) when empty. */
int ks_dup_text_value(const char *raw, char **ret)
{
	_cleanup_free_ char *u = ks_vcard_unescape(raw);

	if (!u)
		return -ENOMEM;
	const char *s = u;
	while (ks_is_trim(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && ks_is_trim(s[n - 1]))
		n--;
	*ret = n ? strndup(s, n) : NULL;
	return n && !*ret ? -ENOMEM : 0;
}

char *ks_dup_display_value(const ks_vcard_prop *p)
{
	static const char *const binary[] = { "PHOTO", "LOGO", "SOUND", "KEY" };
	char *t = NULL;

	for (size_t i = 0; i < ELEMENTSOF(binary); i++)
		if (strcmp(p->name, binary[i]) == 0)
			return strdup("(image or data)");
	if (ks_dup_text_value(p->value, &t) < 0)
		return NULL;
	if (!t)
		return strdup("");
	for (char *q = t; *q; q++)
		if (*q == '\n' || *q == '\r' || *q == '\t')
			*q = ' ';
	size_t n = strlen(t);
	if (n > 80) {
		n = 80;
		while (n > 0 && ((uint8_t) t[n] & 0xc0) == 0x80)
			n--;
		t[n] = 0;
	}
	return t;
}

/* "Given Family" of an N value (Family;Given;Additional;Prefix;Suffix). */
static int name_of_n(const char *raw, char **ret)
{
	_cleanup_free_ char *fam = NULL, *giv = NULL;
	const char *part[2] = {};
	size_t plen[2] = {}, k = 0;
	int r;

	for (const char *s = raw, *start = raw; k < 2; s++) {
		if (s[0] == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == ';' || !*s) {
			part[k] = start;
			plen[k++] = (size_t) (s - start);
			if (!*s)
				break;
			start = s + 1;
		}
	}
	for (size_t i = 0; i < k; i++) {
		_cleanup_free_ char *p = strndup(part[i], plen[i]);
		if (!p)
			return -ENOMEM;
		r = ks_dup_text_value(p, i == 0 ? &fam : &giv);
		if (r < 0)
			return r;
	}
	if (fam && giv)
		return asprintf(ret, "%s %s", giv, fam) < 0 ? -ENOMEM : 0;
	*ret = giv ? TAKE_PTR(giv) : TAKE_PTR(fam);
	return 0;
}

static int strv_add(char ***v, size_t n, char *s)
{
	char **nv = realloc(*v, (n + 1) * sizeof(char *));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[n] = s;
	return 0;
}

static bool value_is_group(const char *raw)
{
	_cleanup_free_ char *t = NULL;

	return ks_dup_text_value(raw, &t) >= 0 && t && ks_streq_nocase(t, "group");
}

/* ---- keys --------------------------------------------------------------------------------- */

int ks_dup_name_key(const char *name, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf w = {};
	_cleanup_free_ char **words = NULL;
	_cleanup_free_ uint8_t *folded = NULL;
	size_t n_words = 0, cap = 0, n = 0;
	int r = 0;

	assert(ret);
	if (!name) {
		*ret = NULL;
		return 0;
	}
	/* Unicode's compatibility caseless form: "ＭÜLLER", "Müller" and "mu\u0308ller" all become
	 * "mu" U+0308 "ller"; ß becomes "ss", final sigma σ. A byte that is not UTF-8 becomes
	 * U+FFFD, a separator. */
	folded = u8_casefold((const uint8_t *) name, strlen(name), NULL, UNINORM_NFKD, NULL, &n);
	if (!folded)
		return errno > 0 ? -errno : -ENOMEM;
	/* The folded text without accents, words separated by NULs. */
	for (size_t i = 0; i < n && r >= 0;) {
		ucs4_t c;
		int k = u8_mbtouc(&c, folded + i, n - i);
		const uint8_t *at = folded + i;

		i += (size_t) k;
		if (is_dropped(c))
			continue;
		/* Letters, digits and the marks left are words; anything else separates them. */
		if (!uc_is_general_category(c, UC_CATEGORY_L) &&
		    !uc_is_general_category(c, UC_CATEGORY_N) &&
		    !uc_is_general_category(c, UC_CATEGORY_M)) {
			if (w.len > 0 && w.data[w.len - 1] != 0)
				r = ks_buf_append(&w, "", 1);
			continue;
		}
		const char *base = latin_base(c);
		if (base)
			r = ks_buf_append(&w, base, strlen(base));
		else
			r = ks_buf_append(&w, at, (size_t) k);
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < w.len; i += strlen(w.data + i) + 1) {
		if (!w.data[i])
			continue;
		char **nw = ks_array_grow(words, &cap, n_words, sizeof(*nw));
		if (!nw)
			return -ENOMEM;
		words = nw;
		words[n_words++] = w.data + i;
	}
	if (n_words == 0) {
		*ret = NULL;
		return 0;
	}
	qsort(words, n_words, sizeof(*words), str_cmp);
	ks_buf k = {};
	for (size_t i = 0; i < n_words && r >= 0; i++)
		r = ks_buf_printf(&k, "%s%s", i ? " " : "", words[i]);
	if (r < 0) {
		ks_buf_done(&k);
		return r;
	}
	*ret = ks_buf_steal(&k);
	return *ret ? 0 : -ENOMEM;
}

static const char *skip_prefix_nocase(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);

	for (size_t i = 0; i < n; i++)
		if (!s[i] || ks_ascii_lower(s[i]) != prefix[i])
			return s;
	return s + n;
}

int ks_dup_email_key(const char *email, char **ret)
{
	assert(ret);
	*ret = NULL;
	if (!email)
		return 0;
	while (ks_is_trim(*email))
		email++;
	email = skip_prefix_nocase(email, "mailto:");
	size_t n = strlen(email);
	while (n > 0 && ks_is_trim(email[n - 1]))
		n--;
	char *k = strndup(email, n);
	if (!k)
		return -ENOMEM;
	for (char *p = k; *p; p++)
		*p = ks_ascii_lower(*p);
	if (!strchr(k, '@') || k[0] == '@') {
		free(k);
		return 0;
	}
	*ret = k;
	return 0;
}

int ks_dup_phone_key(const char *tel, char **ret)
{
	char digits[64];
	size_t n = 0;

	assert(ret);
	*ret = NULL;
	if (!tel)
		return 0;
	for (const char *s = tel; *s; s++) {
		/* ";ext=12" of a tel: URI and anything after it is not the number. */
		if (*s == ';')
			break;
		if (*s >= '0' && *s <= '9' && n < sizeof(digits) - 1)
			digits[n++] = *s;
	}
	digits[n] = 0;
	if (n < 6)
		return 0;
	*ret = strdup(n >= 9 ? digits + n - 9 : digits);
	return *ret ? 0 : -ENOMEM;
}

/* Latin letters that case folding and NFKD leave whole (a stroke, a bar, a hook or a ligature
 * is not a combining mark), after case folding, with the letters a person writes for them. */
static const struct {
	ucs4_t c;
	const char *base;
} latin_whole[] = {
	{ 0x00e6, "ae" },	/* æ */
	{ 0x00f0, "d" },	/* ð */
	{ 0x00f8, "o" },	/* ø */
	{ 0x00fe, "th" },	/* þ */
	{ 0x0111, "d" },	/* đ */
	{ 0x0127, "h" },	/* ħ */
	{ 0x0131, "i" },	/* ı */
	{ 0x0138, "k" },	/* ĸ */
	{ 0x0142, "l" },	/* ł */
	{ 0x014b, "n" },	/* ŋ */
	{ 0x0153, "oe" },	/* œ */
	{ 0x0167, "t" },	/* ŧ */
	{ 0x0199, "k" },	/* ƙ */
	{ 0x01b4, "y" },	/* ƴ */
	{ 0x0253, "b" },	/* ɓ */
	{ 0x0257, "d" },	/* ɗ */
};

/* The letters latin_whole gives for c; NULL when c is not one of them. */
static const char *latin_base(ucs4_t c)
{
	for (size_t i = 0; c >= 0x80 && i < ELEMENTSOF(latin_whole); i++)
		if (latin_whole[i].c == c)
			return latin_whole[i].base;
	return NULL;
}

/* What a name loses: the combining marks that are accents on Latin, Greek and Cyrillic letters
 * (the Combining Diacritical Marks blocks), invisible format characters (soft hyphen, joiners),
 * and U+00B7, which joins Catalan "l·l" and is what NFKD leaves of "ŀ". The marks of other
 * scripts stay: a Devanagari vowel sign or a Japanese voicing mark makes another name. */
static bool is_dropped(ucs4_t c)
{
	return (c >= 0x300 && c <= 0x36f) || (c >= 0x1ab0 && c <= 0x1aff) ||
	       (c >= 0x1dc0 && c <= 0x1dff) || (c >= 0x20d0 && c <= 0x20ff) ||
	       (c >= 0xfe20 && c <= 0xfe2f) || c == 0xb7 ||
	       uc_is_general_category(c, UC_CATEGORY_Cf);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

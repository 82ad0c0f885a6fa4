/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unicase.h>
#include <unictype.h>
#include <unistd.h>
#include <uninorm.h>
#include <unistr.h>

#include "buf_p.h"
#include "cache_p.h"
#include "dav_p.h"
#include "dup_p.h"
#include "engine_p.h"
#include "fsutil_p.h"
#include "hash_p.h"
#include "json_p.h"
#include "ksync.h"
#include "limits.h"
#include "macro.h"
#include "merge_p.h"
#include "scan_p.h"
#include "session_p.h"
#include "text_p.h"
#include "vcard_p.h"

/* ---- normalization ------------------------------------------------------------------------ */

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

/* ---- reading cards ------------------------------------------------------------------------ */

/* The unescaped, trimmed text of a property value; NULL (and 0) when empty. */
static int text_value(const char *raw, char **ret)
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
		r = text_value(p, i == 0 ? &fam : &giv);
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

	return text_value(raw, &t) >= 0 && t && ks_streq_nocase(t, "group");
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
			r = text_value(p->value, &c.name);
		else if (strcmp(p->name, "N") == 0 && !n_raw)
			n_raw = p->value;
		else if (strcmp(p->name, "ORG") == 0 && !c.org) {
			r = text_value(p->value, &c.org);
			/* "Company;Department": the company is enough to tell cards apart. */
			if (r >= 0 && c.org)
				c.org[strcspn(c.org, ";")] = 0;
		} else if ((strcmp(p->name, "KIND") == 0 ||
			    strcmp(p->name, "X-ADDRESSBOOKSERVER-KIND") == 0) &&
			   value_is_group(p->value))
			c.is_group = true;
		else if (strcmp(p->name, "EMAIL") == 0 || strcmp(p->name, "TEL") == 0) {
			bool email = p->name[0] == 'E';
			r = text_value(p->value, &t);
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

/* ---- grouping ----------------------------------------------------------------------------- */

typedef struct key_ref {
	const char *key;
	size_t card;
	unsigned kind;
} key_ref;

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

void ks_dup_groups_done(ks_dup_groups *g)
{
	if (!g)
		return;
	free(g->members);
	free(g->start);
	free(g->why);
	*g = (ks_dup_groups) {};
}

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

/* ---- merging ------------------------------------------------------------------------------ */

/* A small set of strings (open addressing), for what the merged card holds already. */
typedef struct strset {
	char **slot;
	size_t cap;
	size_t n;
} strset;

static void strset_done(strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slot[i]);
	free(s->slot);
	*s = (strset) {};
}

static uint64_t str_hash(const char *s)
{
	uint64_t h = UINT64_C(1469598103934665603);

	for (; *s; s++)
		h = (h ^ (uint8_t) *s) * UINT64_C(1099511628211);
	return h;
}

static bool strset_has(const strset *s, const char *k)
{
	if (!s->cap)
		return false;
	for (size_t i = str_hash(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slot[i])
			return false;
		if (strcmp(s->slot[i], k) == 0)
			return true;
	}
}

/* Adds k (taking it). Returns 1 when added, 0 when it was there (k freed). */
static int strset_add(strset *s, char *k)
{
	if (!k)
		return -ENOMEM;
	if (strset_has(s, k)) {
		free(k);
		return 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		char **ns = calloc(ncap, sizeof(char *));
		if (!ns) {
			free(k);
			return -ENOMEM;
		}
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->slot[i])
				continue;
			size_t j = str_hash(s->slot[i]) & (ncap - 1);
			while (ns[j])
				j = (j + 1) & (ncap - 1);
			ns[j] = s->slot[i];
		}
		free(s->slot);
		s->slot = ns;
		s->cap = ncap;
	}
	size_t j = str_hash(k) & (s->cap - 1);
	while (s->slot[j])
		j = (j + 1) & (s->cap - 1);
	s->slot[j] = k;
	s->n++;
	return 1;
}

/* A value compared case-insensitively with its blanks collapsed. */
static int loose_value(const char *raw, char **ret)
{
	_cleanup_free_ char *t = NULL;
	int r = text_value(raw, &t);

	if (r < 0)
		return r;
	if (!t)
		return (*ret = strdup("")) ? 0 : -ENOMEM;
	char *o = t;
	bool blank = false;
	for (const char *s = t; *s; s++) {
		if (ks_is_trim(*s)) {
			blank = true;
			continue;
		}
		if (blank && o != t)
			*o++ = ' ';
		blank = false;
		*o++ = ks_ascii_lower(*s);
	}
	*o = 0;
	*ret = TAKE_PTR(t);
	return 0;
}

/* "NAME\x1fvalue key" for a multi-valued property. */
static int multi_key(const ks_vcard_prop *p, char **ret)
{
	_cleanup_free_ char *t = NULL, *k = NULL;
	int r = text_value(p->value, &t);

	if (r < 0)
		return r;
	if (t && strcmp(p->name, "EMAIL") == 0)
		r = ks_dup_email_key(t, &k);
	else if (t && strcmp(p->name, "TEL") == 0)
		r = ks_dup_phone_key(t, &k);
	if (r >= 0 && !k)
		r = loose_value(p->value, &k);
	if (r < 0)
		return r;
	return asprintf(ret, "%s\x1f%s", p->name, k) < 0 ? -ENOMEM : 0;
}

static bool is_meta(const char *name)
{
	return strcmp(name, "UID") == 0 || strcmp(name, "VERSION") == 0 ||
	       strcmp(name, "PRODID") == 0 || strcmp(name, "REV") == 0;
}

static bool is_list_prop(const char *name)
{
	return strcmp(name, "CATEGORIES") == 0 || strcmp(name, "NICKNAME") == 0;
}

/* Apple's labels and the like belong to the grouped property they label. */
static bool is_companion(const ks_vcard_prop *p)
{
	return p->group && strncmp(p->name, "X-AB", 4) == 0;
}

static bool is_multi(const char *name)
{
	return ks_merge_vcard_multi(name) || strncmp(name, "X-", 2) == 0;
}

static bool has_encoding(const ks_vcard_prop *p)
{
	return ks_vcard_param_get(p, "ENCODING") != NULL;
}

typedef struct out_line {
	const ks_vcard_prop *p;
	char *group;		/* owned; replaces p->group when set */
	char *value;		/* owned; replaces p->value when set */
	size_t from;
	bool added;
} out_line;

typedef struct merge_state {
	out_line *lines;
	size_t n, cap;
	strset multi;		/* keys of the multi-valued lines */
	strset single;		/* names of the single-valued properties */
	strset groups;		/* group names in use, upper-case */
	unsigned next_group;
	/* NOTE and the comma lists: where their line is, and what it holds. */
	size_t note_at, cats_at, nick_at;
	ks_buf note;
	strset note_texts;
	ks_buf cats, nick;
	strset cats_items, nick_items;
} merge_state;

static void merge_state_done(merge_state *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->lines[i].group);
		free(m->lines[i].value);
	}
	free(m->lines);
	strset_done(&m->multi);
	strset_done(&m->single);
	strset_done(&m->groups);
	ks_buf_done(&m->note);
	strset_done(&m->note_texts);
	ks_buf_done(&m->cats);
	ks_buf_done(&m->nick);
	strset_done(&m->cats_items);
	strset_done(&m->nick_items);
}

static int add_line(merge_state *m, const ks_vcard_prop *p, size_t from, bool added,
		    char *group)
{
	out_line *nl = ks_array_grow(m->lines, &m->cap, m->n, sizeof(*nl));

	if (!nl) {
		free(group);
		return -ENOMEM;
	}
	m->lines = nl;
	m->lines[m->n++] = (out_line) { .p = p, .from = from, .added = added, .group = group };
	return 0;
}

static char *upper_dup(const char *s)
{
	char *u = strdup(s);

	if (u)
		for (char *p = u; *p; p++)
			*p = ks_ascii_upper(*p);
	return u;
}

/* A group name not used in the merged card. */
static int fresh_group(merge_state *m, char **ret)
{
	for (;;) {
		char name[32];
		snprintf(name, sizeof(name), "item%u", ++m->next_group);
		_cleanup_free_ char *u = upper_dup(name);
		if (!u)
			return -ENOMEM;
		if (strset_has(&m->groups, u))
			continue;
		int r = strset_add(&m->groups, TAKE_PTR(u));
		if (r < 0)
			return r;
		return (*ret = strdup(name)) ? 0 : -ENOMEM;
	}
}

/* Adds the comma-separated items of p's value to list not seen yet; returns how many. */
static int add_list_items(ks_buf *list, strset *seen, const char *raw)
{
	int added = 0, r;

	for (const char *s = raw, *start = raw;; s++) {
		if (s[0] == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s && *s != ',')
			continue;
		_cleanup_free_ char *item = strndup(start, (size_t) (s - start)), *k = NULL;
		if (!item)
			return -ENOMEM;
		r = loose_value(item, &k);
		if (r < 0)
			return r;
		if (*k) {
			r = strset_add(seen, TAKE_PTR(k));
			if (r < 0)
				return r;
			if (r > 0) {
				size_t a = 0, b = strlen(item);
				while (a < b && ks_is_trim(item[a]))
					a++;
				while (b > a && ks_is_trim(item[b - 1]))
					b--;
				r = ks_buf_printf(list, "%s%.*s", list->len ? "," : "", (int) (b - a),
						  item + a);
				if (r < 0)
					return r;
				added++;
			}
		}
		if (!*s)
			break;
		start = s + 1;
	}
	return added;
}

static int add_note(merge_state *m, const char *raw)
{
	_cleanup_free_ char *k = NULL;
	int r = loose_value(raw, &k);

	if (r < 0)
		return r;
	if (!*k)
		return 0;
	r = strset_add(&m->note_texts, TAKE_PTR(k));
	if (r <= 0)
		return r;
	/* An empty line between the texts: "\n\n" escaped. */
	r = ks_buf_printf(&m->note, "%s%s", m->note.len ? "\\n\\n" : "", raw);
	return r < 0 ? r : 1;
}

/* A gathered line (NOTE, CATEGORIES, NICKNAME) got text from card from too. */
static void mark_added(out_line *l, size_t from)
{
	l->added = true;
	if (l->from != from)
		l->from = SIZE_MAX;
}

/* One property of a card other than the reference. */
static int merge_prop(merge_state *m, const ks_vcard_prop *p, size_t from, strset *group_map,
		      char ***map_to, size_t *n_map)
{
	int r;

	if (is_meta(p->name) || is_companion(p))
		return 0;
	if (strcmp(p->name, "NOTE") == 0 && !has_encoding(p)) {
		r = add_note(m, p->value);
		if (r > 0 && m->note_at == SIZE_MAX) {
			r = add_line(m, p, from, true, NULL);
			m->note_at = m->n - 1;
		} else if (r > 0)
			mark_added(&m->lines[m->note_at], from);
		return r < 0 ? r : 0;
	}
	if (is_list_prop(p->name) && !has_encoding(p)) {
		bool cats = p->name[0] == 'C';
		size_t *at = cats ? &m->cats_at : &m->nick_at;
		r = add_list_items(cats ? &m->cats : &m->nick, cats ? &m->cats_items : &m->nick_items,
				   p->value);
		if (r > 0 && *at == SIZE_MAX) {
			r = add_line(m, p, from, true, NULL);
			*at = m->n - 1;
		} else if (r > 0)
			mark_added(&m->lines[*at], from);
		return r < 0 ? r : 0;
	}

	if (is_multi(p->name)) {
		_cleanup_free_ char *k = NULL;
		r = multi_key(p, &k);
		if (r < 0)
			return r;
		r = strset_add(&m->multi, TAKE_PTR(k));
		if (r <= 0)
			return r;
	} else {
		r = strset_add(&m->single, strdup(p->name));
		if (r <= 0)
			return r;
	}
	_cleanup_free_ char *g = NULL;
	if (p->group) {
		/* The group gets a new name; its companions follow under it. */
		r = fresh_group(m, &g);
		if (r < 0)
			return r;
		_cleanup_free_ char *old = upper_dup(p->group);
		if (!old)
			return -ENOMEM;
		if (!strset_has(group_map, old)) {
			char **nm = realloc(*map_to, (*n_map + 2) * sizeof(char *));
			if (!nm)
				return -ENOMEM;
			*map_to = nm;
			nm[(*n_map)++] = strdup(old);
			nm[(*n_map)++] = strdup(g);
			if (!nm[*n_map - 1] || !nm[*n_map - 2])
				return -ENOMEM;
			r = strset_add(group_map, TAKE_PTR(old));
			if (r < 0)
				return r;
		} else {
			for (size_t i = 0; i < *n_map; i += 2)
				if (strcmp((*map_to)[i], old) == 0) {
					free(g);
					g = strdup((*map_to)[i + 1]);
					if (!g)
						return -ENOMEM;
				}
		}
	}
	return add_line(m, p, from, true, TAKE_PTR(g));
}

static int write_line(ks_buf *b, const out_line *l, ks_buf *text)
{
	const ks_vcard_prop *p = l->p;
	const char *group = l->group ? l->group : p->group;
	int r;

	ks_buf_reset(text);
	/* A name holding a dot (the reader splits the group off at the first one) keeps an
	 * empty group in front, or it would be read back as a group and another name. */
	r = ks_buf_printf(text, "%s%s%s", group ? group : "",
			  group || strchr(p->name, '.') ? "." : "", p->name);
	for (size_t i = 0; r >= 0 && i < p->n_params; i++) {
		const char *v = p->params[i].value;
		bool quote = v[strcspn(v, ":;")] != 0;
		r = ks_buf_printf(text, ";%s=%s", p->params[i].name, quote ? "\"" : "");
		/* A DQUOTE cannot be written inside a parameter value (vCard 2.1 bare values
		 * may hold one): it would open a quoted string when the card is read again. */
		for (const char *c = v; r >= 0 && *c; c += strcspn(c, "\"")) {
			while (*c == '"')
				c++;
			r = ks_buf_append(text, c, strcspn(c, "\""));
		}
		if (r >= 0 && quote)
			r = ks_buf_puts(text, "\"");
	}
	if (r >= 0)
		r = ks_buf_printf(text, ":%s", l->value ? l->value : p->value);
	if (r < 0)
		return r;
	/* vCard 2.1 quoted-printable values may not be folded. */
	if (has_encoding(p) && ks_streq_nocase(ks_vcard_param_get(p, "ENCODING"),
					       "QUOTED-PRINTABLE")) {
		r = ks_buf_append(b, text->data, text->len);
		return r < 0 ? r : ks_buf_append(b, "\r\n", 2);
	}
	return ks_merge_fold_line(b, text->data, text->len);
}

void ks_dup_merged_done(ks_dup_merged *m)
{
	if (!m)
		return;
	free(m->data);
	for (size_t i = 0; i < m->n_lines; i++)
		free(m->lines[i].text);
	free(m->lines);
	*m = (ks_dup_merged) {};
}

typedef struct parsed_card {
	ks_vcard *v;
	size_t n;
} parsed_card;

static void parsed_free_all(parsed_card *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++)
		ks_vcard_free_array(p[i].v, p[i].n);
	free(p);
}

/* Writes the lines of m as a card of that version into *ret. */
static int write_card(const merge_state *m, const char *version, ks_dup_merged *ret)
{
	_cleanup_(ks_buf_done) ks_buf b = { .max = KS_CARD_MAX }, text = {};
	_cleanup_(ks_dup_merged_done) ks_dup_merged out = {};
	int r;

	out.lines = calloc(m->n + 1, sizeof(*out.lines));
	if (!out.lines)
		return -ENOMEM;
	r = ks_buf_printf(&b, "BEGIN:VCARD\r\nVERSION:%s\r\n", version ? version : "3.0");
	for (size_t i = 0; r >= 0 && i < m->n; i++) {
		r = write_line(&b, &m->lines[i], &text);
		if (r < 0)
			break;
		out.lines[i] = (ks_dup_line) { .text = strdup(text.data), .from = m->lines[i].from,
					       .added = m->lines[i].added };
		out.n_lines++;
		if (!out.lines[i].text)
			r = -ENOMEM;
		if (m->lines[i].added)
			out.n_added++;
	}
	if (r >= 0)
		r = ks_buf_puts(&b, "END:VCARD\r\n");
	if (r < 0)
		return r;
	out.len = b.len;
	out.data = ks_buf_steal(&b);
	if (!out.data)
		return -ENOMEM;
	*ret = out;
	out = (ks_dup_merged) {};
	return 0;
}

int ks_dup_merge_cards(const char *const *data, const size_t *len, size_t n, size_t ref,
		       ks_dup_merged *ret)
{
	_cleanup_(merge_state_done) merge_state m = { .note_at = SIZE_MAX, .cats_at = SIZE_MAX,
						      .nick_at = SIZE_MAX };
	parsed_card *cards = NULL;
	int r = 0;

	assert(data && len && ret);
	if (ref >= n)
		return -EINVAL;
	cards = calloc(n, sizeof(*cards));
	if (!cards)
		return -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = ks_vcard_parse(data[i], len[i], &cards[i].v, &cards[i].n, NULL);
	if (r < 0)
		goto out;

	/* The reference as it is, the NOTE and comma lists gathered into their first line. */
	const ks_vcard *rc = &cards[ref].v[0];
	for (size_t i = 0; r >= 0 && i < rc->n_props; i++)
		if (rc->props[i].group) {
			r = strset_add(&m.groups, upper_dup(rc->props[i].group));
			if (r > 0 && strncmp(rc->props[i].group, "item", 4) == 0) {
				unsigned k = (unsigned) strtoul(rc->props[i].group + 4, NULL, 10);
				if (k > m.next_group && k < 100000)
					m.next_group = k;
			}
		}
	for (size_t i = 0; r >= 0 && i < rc->n_props; i++) {
		const ks_vcard_prop *p = &rc->props[i];
		if (strcmp(p->name, "NOTE") == 0 && !has_encoding(p)) {
			r = add_note(&m, p->value);
			if (r >= 0 && m.note_at == SIZE_MAX) {
				r = add_line(&m, p, ref, false, NULL);
				m.note_at = m.n - 1;
			}
			continue;
		}
		if (is_list_prop(p->name) && !has_encoding(p)) {
			bool cats = p->name[0] == 'C';
			size_t *at = cats ? &m.cats_at : &m.nick_at;
			r = add_list_items(cats ? &m.cats : &m.nick,
					   cats ? &m.cats_items : &m.nick_items, p->value);
			if (r >= 0 && *at == SIZE_MAX) {
				r = add_line(&m, p, ref, false, NULL);
				*at = m.n - 1;
			}
			continue;
		}
		if (!is_meta(p->name) && !is_companion(p)) {
			_cleanup_free_ char *k = NULL;
			if (is_multi(p->name)) {
				r = multi_key(p, &k);
				if (r >= 0)
					r = strset_add(&m.multi, TAKE_PTR(k));
			} else
				r = strset_add(&m.single, strdup(p->name));
			if (r < 0)
				break;
		}
		r = add_line(&m, p, ref, false, NULL);
	}

	for (size_t c = 0; r >= 0 && c < n; c++) {
		if (c == ref)
			continue;
		const ks_vcard *v = &cards[c].v[0];
		_cleanup_(strset_done) strset group_map = {};
		char **map = NULL;
		size_t n_map = 0;

		for (size_t i = 0; r >= 0 && i < v->n_props; i++)
			r = merge_prop(&m, &v->props[i], c, &group_map, &map, &n_map);
		/* Companions of the grouped properties that were added. */
		for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
			const ks_vcard_prop *p = &v->props[i];
			if (!is_companion(p))
				continue;
			for (size_t k = 0; r >= 0 && k < n_map; k += 2)
				if (ks_streq_nocase(map[k], p->group))
					r = add_line(&m, p, c, true, strdup(map[k + 1]));
		}
		for (size_t k = 0; k < n_map; k++)
			free(map[k]);
		free(map);
	}
	if (r < 0)
		goto out;

	/* The gathered values replace those of the lines that hold them. */
	struct {
		size_t at;
		ks_buf *b;
	} gathered[] = { { m.note_at, &m.note }, { m.cats_at, &m.cats }, { m.nick_at, &m.nick } };
	for (size_t i = 0; i < ELEMENTSOF(gathered); i++) {
		if (gathered[i].at == SIZE_MAX)
			continue;
		out_line *l = &m.lines[gathered[i].at];
		l->value = ks_buf_steal(gathered[i].b);
		if (!l->value) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = write_card(&m, cards[ref].v[0].version, ret);
out:
	parsed_free_all(cards, n);
	return r < 0 ? r : 0;
}

int ks_dup_rewrite_members(const char *data, size_t len, const char *const *old, size_t n_old,
			   const char *keep, char **ret, size_t *ret_len)
{
	_cleanup_(merge_state_done) merge_state m = {};
	ks_vcard *cards = NULL;
	size_t n_cards = 0;
	bool changed = false;
	int r;

	r = ks_vcard_parse(data, len, &cards, &n_cards, NULL);
	if (r < 0)
		return r;
	const ks_vcard *v = &cards[0];
	for (size_t i = 0; r >= 0 && i < v->n_props; i++) {
		const ks_vcard_prop *p = &v->props[i];
		bool member = strcmp(p->name, "MEMBER") == 0 ||
			      strcmp(p->name, "X-ADDRESSBOOKSERVER-MEMBER") == 0;
		_cleanup_free_ char *nv = NULL;

		if (member) {
			const char *val = p->value;
			while (ks_is_trim(*val))
				val++;
			const char *uid = skip_prefix_nocase(val, "urn:uuid:");
			size_t ul = strlen(uid);
			while (ul > 0 && ks_is_trim(uid[ul - 1]))
				ul--;
			for (size_t k = 0; k < n_old; k++)
				if (strlen(old[k]) == ul && strncmp(old[k], uid, ul) == 0) {
					if (asprintf(&nv, "%.*s%s", (int) (uid - val), val, keep) < 0)
						r = -ENOMEM;
					changed = true;
					break;
				}
			if (r < 0)
				break;
			_cleanup_free_ char *k = NULL;
			if (asprintf(&k, "%s\x1f%s", p->name, skip_prefix_nocase(nv ? nv : val,
										  "urn:uuid:")) < 0) {
				r = -ENOMEM;
				break;
			}
			r = strset_add(&m.multi, TAKE_PTR(k));
			if (r < 0)
				break;
			if (r == 0) {
				changed = true;
				continue;	/* named twice now */
			}
		}
		r = add_line(&m, p, 0, false, NULL);
		if (r >= 0 && nv)
			m.lines[m.n - 1].value = TAKE_PTR(nv);
	}
	if (r >= 0 && changed) {
		ks_dup_merged out = {};
		r = write_card(&m, v->version, &out);
		if (r >= 0) {
			*ret = TAKE_PTR(out.data);
			*ret_len = out.len;
			ks_dup_merged_done(&out);
			r = 1;
		}
	} else if (r >= 0)
		r = 0;
	ks_vcard_free_array(cards, n_cards);
	return r;
}

/* ---- address books in the cache ----------------------------------------------------------- */

typedef struct book_item {
	char *href, *etag, *uid, *filename;
	char *data;
	size_t len;
	ks_dup_card card;
} book_item;

typedef struct book {
	const char *account;	/* borrowed from the config */
	ks_collection col;
	book_item *items;
	size_t n, cap;
	ks_dup_groups g;
} book;

static void book_done(book *b)
{
	for (size_t i = 0; i < b->n; i++) {
		book_item *it = &b->items[i];
		free(it->href);
		free(it->etag);
		free(it->uid);
		free(it->filename);
		free(it->data);
		ks_dup_card_done(&it->card);
	}
	free(b->items);
	ks_dup_groups_done(&b->g);
	ks_collection_done(&b->col);
	*b = (book) {};
}

static int on_item(const char *href, const char *etag, const char *uid, const char *filename,
		   const char *data, size_t len, void *userdata)
{
	book *b = userdata;
	book_item *ni = ks_array_grow(b->items, &b->cap, b->n, sizeof(*ni));

	if (!ni)
		return -ENOMEM;
	b->items = ni;
	book_item *it = &b->items[b->n];
	*it = (book_item) {
		.href = strdup(href ? href : ""), .etag = etag ? strdup(etag) : NULL,
		.uid = strdup(uid ? uid : href ? href : ""), .filename = strdup(filename ? filename : ""),
		.data = malloc(len + 1), .len = len,
	};
	b->n++;
	if (!it->href || (etag && !it->etag) || !it->uid || !it->filename || !it->data)
		return -ENOMEM;
	memcpy(it->data, data, len);
	it->data[len] = 0;
	int r = ks_dup_card_parse(it->data, len, &it->card);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		/* What cannot be read is never offered for a merge. */
		it->card = (ks_dup_card) { .is_group = true };
	return 0;
}

static int book_load(ks_engine *e, const char *account, const ks_collection *col, book *ret)
{
	book b = { .account = account };
	int r;

	b.col = *col;
	b.col.account = col->account ? strdup(col->account) : NULL;
	b.col.href = strdup(col->href);
	b.col.name = strdup(col->name);
	b.col.displayname = col->displayname ? strdup(col->displayname) : NULL;
	b.col.color = b.col.description = b.col.sync_token = b.col.ctag = NULL;
	if (!b.col.href || !b.col.name) {
		book_done(&b);
		return -ENOMEM;
	}
	r = ks_cache_begin_read(e->cache);
	if (r >= 0) {
		r = ks_cache_foreach_item_data(e->cache, col->id, on_item, &b);
		ks_cache_end_read(e->cache);
	}
	if (r >= 0) {
		/* The cards sit inside the items: gather them for the grouping. */
		_cleanup_free_ ks_dup_card *cards = calloc(b.n + 1, sizeof(*cards));
		if (!cards)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < b.n; i++)
			cards[i] = b.items[i].card;
		if (r >= 0)
			r = ks_dup_find_groups(cards, b.n, &b.g);
	}
	if (r < 0) {
		book_done(&b);
		return r;
	}
	*ret = b;
	return 0;
}

static int uid_cmp(const void *a, const void *b)
{
	return strcmp(**(const char *const *const *) a, **(const char *const *const *) b);
}

/* "<book>:<8 hex>" of group g. */
static int group_id(const book *b, size_t g, char **ret)
{
	size_t n = b->g.start[g + 1] - b->g.start[g];
	_cleanup_free_ const char **uids = calloc(n, sizeof(char *));
	_cleanup_free_ const char ***refs = calloc(n, sizeof(char **));
	ks_sha256 c;
	uint8_t d[32];

	if (!uids || !refs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uids[i] = b->items[b->g.members[b->g.start[g] + i]].uid;
		refs[i] = &uids[i];
	}
	qsort(refs, n, sizeof(*refs), uid_cmp);
	ks_sha256_init(&c);
	ks_sha256_update(&c, b->account, strlen(b->account) + 1);
	ks_sha256_update(&c, b->col.href, strlen(b->col.href) + 1);
	for (size_t i = 0; i < n; i++)
		ks_sha256_update(&c, *refs[i], strlen(*refs[i]) + 1);
	ks_sha256_final(&c, d);
	return asprintf(ret, "%s:%02x%02x%02x%02x", b->col.name, d[0], d[1], d[2], d[3]) < 0
		       ? -ENOMEM : 0;
}

/* The most complete card of group g: the most properties, then the most bytes, then the
 * smallest UID, so that the choice is the same on every run. */
static size_t default_reference(const book *b, size_t g)
{
	size_t best = b->g.members[b->g.start[g]];

	for (size_t k = b->g.start[g] + 1; k < b->g.start[g + 1]; k++) {
		const book_item *x = &b->items[b->g.members[k]], *y = &b->items[best];
		if (x->card.n_props != y->card.n_props) {
			if (x->card.n_props > y->card.n_props)
				best = b->g.members[k];
		} else if (x->len != y->len) {
			if (x->len > y->len)
				best = b->g.members[k];
		} else if (strcmp(x->uid, y->uid) < 0)
			best = b->g.members[k];
	}
	return best;
}

static bool collection_named(const ks_collection *col, const char *name)
{
	if (!name || !*name)
		return true;
	if (strncmp(name, "contacts/", 9) == 0)
		name += 9;
	return strcmp(col->name, name) == 0;
}

typedef int (*book_fn)(book *b, void *userdata);

/* Calls fn for every enabled address book of account (all of c's for NULL or "") named
 * collection (all for NULL or ""). Returns how many were visited, or fn's negative value. */
static int foreach_book(ks_engine *e, const ks_config *c, const char *account,
			const char *collection, book_fn fn, void *userdata, char **reterr_msg)
{
	int visited = 0, r = 0;

	if (account && *account && !ks_config_find_account(c, account))
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	for (size_t a = 0; r >= 0 && a < c->n_accounts; a++) {
		const char *name = c->accounts[a].name;
		ks_collection *cols = NULL;
		size_t n_cols = 0;

		if (account && *account && strcmp(account, name) != 0)
			continue;
		r = ks_cache_list_collections(e->cache, name, &cols, &n_cols);
		for (size_t i = 0; r >= 0 && i < n_cols; i++) {
			book b = {};
			if (cols[i].kind != KS_COLLECTION_ADDRESSBOOK || !cols[i].enabled ||
			    !collection_named(&cols[i], collection))
				continue;
			r = book_load(e, name, &cols[i], &b);
			if (r >= 0) {
				visited++;
				r = fn(&b, userdata);
			}
			book_done(&b);
		}
		ks_collection_free_array(cols, n_cols);
	}
	if (r < 0)
		return r;
	if (visited == 0 && collection && *collection)
		return ks_set_error(reterr_msg, -ENOENT, "no address book '%s'%s%s", collection,
			       account && *account ? " in account " : "",
			       account && *account ? account : "");
	return visited;
}

/* ---- listing ------------------------------------------------------------------------------ */

/* The display text of a value: unescaped, one line, at most 80 bytes on a UTF-8 boundary. */
static char *display_value(const ks_vcard_prop *p)
{
	static const char *const binary[] = { "PHOTO", "LOGO", "SOUND", "KEY" };
	char *t = NULL;

	for (size_t i = 0; i < ELEMENTSOF(binary); i++)
		if (strcmp(p->name, binary[i]) == 0)
			return strdup("(image or data)");
	if (text_value(p->value, &t) < 0)
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

typedef struct name_key {
	char *key;		/* "NAME\x1fvalue key" */
	size_t card;
} name_key;

static int name_key_cmp(const void *a, const void *b)
{
	const name_key *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->card < y->card ? -1 : x->card > y->card);
}

static bool listed_prop(const ks_vcard_prop *p)
{
	return !is_meta(p->name) && strncmp(p->name, "X-", 2) != 0;
}

/* Writes the names of the properties whose values differ between the cards of group g as
 * "differs", and keeps them in *ret (sorted, unique) for the cards' "fields". */
static int write_differs(ks_json_writer *w, ks_vcard **parsed, size_t n, char ***ret,
			 size_t *ret_n)
{
	name_key *keys = NULL;
	size_t n_keys = 0, cap = 0;
	char **names = NULL;
	size_t n_names = 0;
	int r = 0;

	for (size_t c = 0; r >= 0 && c < n; c++) {
		if (!parsed[c])
			continue;
		for (size_t i = 0; r >= 0 && i < parsed[c]->n_props; i++) {
			const ks_vcard_prop *p = &parsed[c]->props[i];
			char *k = NULL;
			if (!listed_prop(p))
				continue;
			r = multi_key(p, &k);
			if (r < 0)
				break;
			name_key *nk = ks_array_grow(keys, &cap, n_keys, sizeof(*nk));
			if (!nk) {
				free(k);
				r = -ENOMEM;
				break;
			}
			keys = nk;
			keys[n_keys++] = (name_key) { k, c };
		}
	}
	if (r >= 0 && n_keys > 1)
		qsort(keys, n_keys, sizeof(*keys), name_key_cmp);
	/* A name differs when one of its values is not on every card. */
	for (size_t i = 0; r >= 0 && i < n_keys;) {
		size_t j = i, cards = 0;
		while (j < n_keys && strcmp(keys[j].key, keys[i].key) == 0) {
			if (j == i || keys[j].card != keys[j - 1].card)
				cards++;
			j++;
		}
		if (cards < n) {
			size_t nl = strcspn(keys[i].key, "\x1f");
			if (!n_names || strlen(names[n_names - 1]) != nl ||
			    strncmp(names[n_names - 1], keys[i].key, nl) != 0) {
				char **nn = realloc(names, (n_names + 1) * sizeof(char *));
				if (!nn || !(nn[n_names] = strndup(keys[i].key, nl))) {
					names = nn ? nn : names;
					r = -ENOMEM;
					break;
				}
				names = nn;
				n_names++;
			}
		}
		i = j;
	}
	for (size_t i = 0; i < n_keys; i++)
		free(keys[i].key);
	free(keys);
	if (r >= 0) {
		ks_json_write_key(w, "differs");
		ks_json_write_array_begin(w);
		for (size_t i = 0; i < n_names; i++)
			ks_json_write_string(w, names[i]);
		r = ks_json_write_array_end(w);
	}
	*ret = names;
	*ret_n = n_names;
	return r;
}

static void write_strings(ks_json_writer *w, const char *key, char *const *v, size_t n)
{
	ks_json_write_key(w, key);
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < n; i++)
		ks_json_write_string(w, v[i]);
	ks_json_write_array_end(w);
}

static void write_why(ks_json_writer *w, unsigned why)
{
	ks_json_write_key(w, "why");
	ks_json_write_array_begin(w);
	if (why & KS_DUP_BY_NAME)
		ks_json_write_string(w, "name");
	if (why & KS_DUP_BY_EMAIL)
		ks_json_write_string(w, "email");
	if (why & KS_DUP_BY_PHONE)
		ks_json_write_string(w, "phone");
	ks_json_write_array_end(w);
}

static void write_book_fields(ks_json_writer *w, const book *b, const char *id)
{
	ks_json_write_key(w, "id");
	ks_json_write_string(w, id);
	ks_json_write_key(w, "account");
	ks_json_write_string(w, b->account);
	ks_json_write_key(w, "collection");
	ks_json_write_string(w, b->col.name);
	ks_json_write_key(w, "displayname");
	ks_json_write_string(w, b->col.displayname);
	ks_json_write_key(w, "readonly");
	ks_json_write_bool(w, b->col.readonly);
}

static int write_group(ks_json_writer *w, const book *b, size_t g)
{
	_cleanup_free_ char *id = NULL;
	size_t n = b->g.start[g + 1] - b->g.start[g], ref = default_reference(b, g);
	_cleanup_free_ ks_vcard **parsed = calloc(n + 1, sizeof(ks_vcard *));
	_cleanup_free_ size_t *n_parsed = calloc(n + 1, sizeof(size_t));
	char **differs = NULL;
	size_t n_differs = 0;
	int r;

	if (!parsed || !n_parsed)
		return -ENOMEM;
	r = group_id(b, g, &id);
	if (r < 0)
		return r;
	for (size_t k = 0; r >= 0 && k < n; k++) {
		const book_item *it = &b->items[b->g.members[b->g.start[g] + k]];
		r = ks_vcard_parse(it->data, it->len, &parsed[k], &n_parsed[k], NULL);
		if (r == -ENOMEM)
			break;
		r = 0;
	}
	if (r < 0)
		goto out;
	ks_json_write_object_begin(w);
	write_book_fields(w, b, id);
	write_why(w, b->g.why[g]);
	ks_json_write_key(w, "reference");
	ks_json_write_string(w, b->items[ref].uid);
	r = write_differs(w, parsed, n, &differs, &n_differs);
	if (r < 0)
		goto out;
	ks_json_write_key(w, "cards");
	ks_json_write_array_begin(w);
	for (size_t k = 0; r >= 0 && k < n; k++) {
		size_t idx = b->g.members[b->g.start[g] + k];
		const book_item *it = &b->items[idx];

		ks_json_write_object_begin(w);
		ks_json_write_key(w, "uid");
		ks_json_write_string(w, it->uid);
		ks_json_write_key(w, "href");
		ks_json_write_string(w, it->href);
		ks_json_write_key(w, "file");
		ks_json_write_string(w, it->filename);
		ks_json_write_key(w, "name");
		ks_json_write_string(w, it->card.name);
		ks_json_write_key(w, "org");
		ks_json_write_string(w, it->card.org);
		write_strings(w, "emails", it->card.emails, it->card.n_emails);
		write_strings(w, "phones", it->card.phones, it->card.n_phones);
		ks_json_write_key(w, "properties");
		ks_json_write_uint(w, it->card.n_props);
		ks_json_write_key(w, "reference");
		ks_json_write_bool(w, idx == ref);
		ks_json_write_key(w, "fields");
		ks_json_write_object_begin(w);
		for (size_t d = 0; parsed[k] && d < n_differs; d++) {
			ks_json_write_key(w, differs[d]);
			ks_json_write_array_begin(w);
			for (size_t i = 0; i < parsed[k]->n_props; i++) {
				const ks_vcard_prop *p = &parsed[k]->props[i];
				if (strcmp(p->name, differs[d]) != 0)
					continue;
				_cleanup_free_ char *t = display_value(p);
				if (!t) {
					r = -ENOMEM;
					break;
				}
				ks_json_write_string(w, t);
			}
			ks_json_write_array_end(w);
		}
		ks_json_write_object_end(w);
		r = r < 0 ? r : ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	r = r < 0 ? r : ks_json_write_object_end(w);
out:
	for (size_t k = 0; k < n; k++)
		ks_vcard_free_array(parsed[k], n_parsed[k]);
	for (size_t d = 0; d < n_differs; d++)
		free(differs[d]);
	free(differs);
	return r;
}

typedef struct list_ctx {
	ks_json_writer *w;
	size_t cards;
} list_ctx;

static int list_book(book *b, void *userdata)
{
	list_ctx *L = userdata;
	int r = 0;

	L->cards += b->n;
	for (size_t g = 0; r >= 0 && g < b->g.n_groups; g++)
		r = write_group(L->w, b, g);
	return r;
}

int ks_dup_list_json(ks_engine *e, const ks_config *c, const char *account,
		     const char *collection, char **ret_json, char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;
	list_ctx L = { .w = &w };
	int r;

	assert(e && c && ret_json);
	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "groups");
	ks_json_write_array_begin(&w);
	r = foreach_book(e, c, account, collection, list_book, &L, reterr_msg);
	if (r < 0)
		return r;
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "addressbooks");
	ks_json_write_int(&w, r);
	ks_json_write_key(&w, "cards");
	ks_json_write_uint(&w, L.cards);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0)
		return r;
	*ret_json = ks_buf_steal(&buf);
	return *ret_json ? 0 : -ENOMEM;
}

/* ---- one group ---------------------------------------------------------------------------- */

typedef struct plan {
	book b;
	size_t g;
	char *id;
	size_t ref;		/* item index of the reference */
	size_t *members;	/* item indexes, the reference first */
	size_t n_members;
	ks_dup_merged merged;
	/* Group cards whose members name a removed card, and their new text. */
	size_t *groups;
	char **group_data;
	size_t *group_len;
	size_t n_groups;
} plan;

static void plan_done(plan *p)
{
	for (size_t i = 0; i < p->n_groups; i++)
		free(p->group_data[i]);
	free(p->groups);
	free(p->group_data);
	free(p->group_len);
	free(p->members);
	free(p->id);
	ks_dup_merged_done(&p->merged);
	book_done(&p->b);
	*p = (plan) {};
}

typedef struct find_ctx {
	const char *id;
	const char *hex;
	plan *p;
	bool found;
} find_ctx;

static int find_book(book *b, void *userdata)
{
	find_ctx *F = userdata;

	if (F->found)
		return 0;
	for (size_t g = 0; g < b->g.n_groups; g++) {
		_cleanup_free_ char *id = NULL;
		int r = group_id(b, g, &id);
		if (r < 0)
			return r;
		if (strcmp(id, F->id) != 0)
			continue;
		F->found = true;
		F->p->b = *b;
		*b = (book) {};
		F->p->g = g;
		F->p->id = TAKE_PTR(id);
		return 0;
	}
	return 0;
}

/* Finds group id and works out its merge. */
static int plan_make(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     plan *ret, char **reterr_msg)
{
	_cleanup_(plan_done) plan p = {};
	_cleanup_free_ char *coll = NULL;
	const char *colon = id ? strrchr(id, ':') : NULL;
	find_ctx F = { .id = id, .p = &p };
	int r;

	if (!colon || colon == id || strlen(colon + 1) != 8)
		return ks_set_error(reterr_msg, -EINVAL, "'%s' is not a group id (ADDRESSBOOK:XXXXXXXX, "
			       "as 'ksyncctl duplicates' lists them)", id ? id : "");
	coll = strndup(id, (size_t) (colon - id));
	if (!coll)
		return -ENOMEM;
	r = foreach_book(e, c, NULL, coll, find_book, &F, reterr_msg);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "no group '%s': no address book '%s' is synced", id,
			       coll);
	if (r < 0)
		return r;
	if (!F.found)
		return ks_set_error(reterr_msg, -ENOENT, "no group '%s': its cards changed since it was "
			       "listed, or it was merged; list the duplicates again", id);

	book *b = &p.b;
	size_t n = b->g.start[p.g + 1] - b->g.start[p.g];
	p.ref = default_reference(b, p.g);
	if (keep_uid && *keep_uid) {
		bool in = false;
		for (size_t k = b->g.start[p.g]; k < b->g.start[p.g + 1]; k++)
			if (strcmp(b->items[b->g.members[k]].uid, keep_uid) == 0) {
				p.ref = b->g.members[k];
				in = true;
			}
		if (!in)
			return ks_set_error(reterr_msg, -EINVAL, "no card with UID '%s' in group %s",
				       keep_uid, id);
	}
	p.members = calloc(n, sizeof(size_t));
	_cleanup_free_ const char **data = calloc(n, sizeof(char *));
	_cleanup_free_ size_t *len = calloc(n, sizeof(size_t));
	_cleanup_free_ const char **old = calloc(n, sizeof(char *));
	if (!p.members || !data || !len || !old)
		return -ENOMEM;
	p.members[p.n_members++] = p.ref;
	for (size_t k = b->g.start[p.g]; k < b->g.start[p.g + 1]; k++)
		if (b->g.members[k] != p.ref)
			p.members[p.n_members++] = b->g.members[k];
	for (size_t i = 0; i < n; i++) {
		data[i] = b->items[p.members[i]].data;
		len[i] = b->items[p.members[i]].len;
		if (i > 0)
			old[i - 1] = b->items[p.members[i]].uid;
	}
	r = ks_dup_merge_cards(data, len, n, 0, &p.merged);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot merge the cards of %s: %s", id, strerror(-r));

	/* Group cards that name a card going away name the kept one instead. */
	for (size_t i = 0; i < b->n; i++) {
		char *nd = NULL;
		size_t nl = 0;
		if (!b->items[i].card.is_group)
			continue;
		r = ks_dup_rewrite_members(b->items[i].data, b->items[i].len, old, n - 1,
					   b->items[p.ref].uid, &nd, &nl);
		if (r == -ENOMEM)
			return r;
		if (r <= 0)
			continue;
		size_t k = p.n_groups;
		size_t *ng = realloc(p.groups, (k + 1) * sizeof(size_t));
		if (ng)
			p.groups = ng;
		char **nda = realloc(p.group_data, (k + 1) * sizeof(char *));
		if (nda)
			p.group_data = nda;
		size_t *nla = realloc(p.group_len, (k + 1) * sizeof(size_t));
		if (nla)
			p.group_len = nla;
		if (!ng || !nda || !nla) {
			free(nd);
			return -ENOMEM;
		}
		p.groups[k] = i;
		p.group_data[k] = nd;
		p.group_len[k] = nl;
		p.n_groups++;
	}
	*ret = p;
	p = (plan) {};
	return 0;
}

static void write_plan(ks_json_writer *w, const plan *p)
{
	const book *b = &p->b;

	write_book_fields(w, b, p->id);
	write_why(w, b->g.why[p->g]);
	ks_json_write_key(w, "reference");
	ks_json_write_string(w, b->items[p->ref].uid);
	ks_json_write_key(w, "cards");
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < p->n_members; i++) {
		const book_item *it = &b->items[p->members[i]];
		unsigned adds = 0;
		for (size_t l = 0; l < p->merged.n_lines; l++)
			if (p->merged.lines[l].added && p->merged.lines[l].from == i)
				adds++;
		ks_json_write_object_begin(w);
		ks_json_write_key(w, "uid");
		ks_json_write_string(w, it->uid);
		ks_json_write_key(w, "name");
		ks_json_write_string(w, it->card.name);
		ks_json_write_key(w, "file");
		ks_json_write_string(w, it->filename);
		ks_json_write_key(w, "reference");
		ks_json_write_bool(w, i == 0);
		ks_json_write_key(w, "adds");
		ks_json_write_uint(w, adds);
		ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	ks_json_write_key(w, "lines");
	ks_json_write_array_begin(w);
	for (size_t l = 0; l < p->merged.n_lines; l++) {
		const ks_dup_line *ln = &p->merged.lines[l];
		ks_json_write_object_begin(w);
		ks_json_write_key(w, "text");
		ks_json_write_string(w, ln->text);
		ks_json_write_key(w, "from");
		if (ln->from == SIZE_MAX)
			ks_json_write_null(w);
		else
			ks_json_write_string(w, b->items[p->members[ln->from]].uid);
		ks_json_write_key(w, "added");
		ks_json_write_bool(w, ln->added);
		ks_json_write_object_end(w);
	}
	ks_json_write_array_end(w);
	ks_json_write_key(w, "merged");
	ks_json_write_string_len(w, p->merged.data, p->merged.len);
	ks_json_write_key(w, "group_cards");
	ks_json_write_array_begin(w);
	for (size_t i = 0; i < p->n_groups; i++)
		ks_json_write_string(w, b->items[p->groups[i]].uid);
	ks_json_write_array_end(w);
}

static int finish_json(ks_json_writer *w, ks_buf *buf, char **ret)
{
	int r = ks_json_writer_finish(w);

	if (r < 0)
		return r;
	*ret = ks_buf_steal(buf);
	return *ret ? 0 : -ENOMEM;
}

int ks_dup_show_json(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		     char **ret_json, char **reterr_msg)
{
	_cleanup_(plan_done) plan p = {};
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;
	int r;

	assert(e && c && ret_json);
	r = plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r < 0)
		return r;
	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	write_plan(&w, &p);
	ks_json_write_object_end(&w);
	return finish_json(&w, &buf, ret_json);
}

/* ---- merging on the server ---------------------------------------------------------------- */

typedef struct job {
	ks_engine *e;
	const ks_account_config *acc;
	const ks_collection *col;
	ks_dav *dav;
	int dirfd;
	int lock_fd;
	char **reterr_msg;
} job;

static void job_done(job *j)
{
	ks_dav_free(j->dav);
	if (j->dirfd >= 0)
		close(j->dirfd);
	if (j->lock_fd >= 0)
		close(j->lock_fd);
	*j = (job) { .dirfd = -1, .lock_fd = -1 };
}

static int job_start(job *j, ks_engine *e, const ks_config *c, const char *account,
		     const ks_collection *col, char **reterr_msg)
{
	_cleanup_free_ char *why = NULL;
	int r;

	*j = (job) { .e = e, .col = col, .dirfd = -1, .lock_fd = -1, .reterr_msg = reterr_msg };
	j->acc = ks_config_find_account(c, account);
	if (!j->acc)
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	_cleanup_free_ char *where = NULL;
	r = ks_engine_open_collection_dir(e, account, col, false, &j->dirfd, &where);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "cannot open %s: %s", where ? where : col->name,
				    r == -ELOOP ? "a symbolic link is on the way, which ksync does "
						  "not follow" : strerror(-r));
	r = ks_session_new(j->acc, &j->dav, &why);
	if (r < 0)
		return ks_set_error(reterr_msg, r, "%s", why ? why : strerror(-r));
	return 0;
}

static int64_t stat_ns(const struct stat *st)
{
	return (int64_t) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Whether the file of the item at href is as ksync last wrote or saw it (no local edit that
 * a sync has yet to send), and no upload of it is under way. */
static int check_local(job *j, const char *href, const char *label)
{
	ks_cache_item it = {};
	struct stat st;
	int r = ks_cache_get_item(j->e->cache, j->col->id, href, &it);

	if (r < 0)
		return r;
	if (fstatat(j->dirfd, it.filename, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = ks_set_error(j->reterr_msg, -EBUSY, "the file of %s (%s) was removed here and the "
			    "removal is not synced yet: run 'ksyncctl sync' first", label,
			    it.filename);
	else if (!ks_scan_stat_matches(&st, it.mtime_ns, it.ino, it.size)) {
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		char hex[65];
		r = ks_fs_read_file(j->dirfd, it.filename, KS_CARD_MAX, &data, &len);
		if (r >= 0) {
			ks_sha256_hex(data, len, hex);
			if (!it.hash || strcmp(hex, it.hash) != 0)
				r = ks_set_error(j->reterr_msg, -EBUSY, "%s (%s) was edited here and the "
					    "edit is not synced yet: run 'ksyncctl sync' first",
					    label, it.filename);
		}
	}
	ks_cache_item_done(&it);
	return r;
}

static int check_intents(job *j, const char *const *hrefs, size_t n)
{
	ks_intent *in = NULL;
	size_t n_in = 0;
	int r = ks_cache_list_intents(j->e->cache, j->col->id, &in, &n_in);

	for (size_t i = 0; r >= 0 && i < n_in; i++)
		for (size_t k = 0; k < n; k++)
			if (strcmp(in[i].href, hrefs[k]) == 0)
				r = ks_set_error(j->reterr_msg, -EBUSY, "an upload of %s is under way: "
					    "run 'ksyncctl sync' first", hrefs[k]);
	ks_intents_free(in, n_in);
	return r;
}

static const char *vcard_type = "text/vcard; charset=utf-8";

/* Asks the server for the items at hrefs (GET, in parallel) and checks that each still has
 * the etag the cache holds: before anything is written, so that a card changed elsewhere
 * since the last sync stops the merge with nothing changed. */
static int check_server(job *j, const char *const *hrefs, const char *const *etags,
			const char *const *labels, size_t n)
{
	_cleanup_free_ ks_dav_request *reqs = calloc(n + 1, sizeof(*reqs));
	int r;

	if (!reqs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		reqs[i] = (ks_dav_request) { .method = "GET", .url = hrefs[i], .accept = vcard_type };
	r = ks_dav_run(j->dav, reqs, n);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		if (reqs[i].result == -ENOENT)
			r = ks_set_error(j->reterr_msg, -ESTALE, "%s was deleted on the server since the "
				    "last sync; nothing was merged. Run 'ksyncctl sync' and list "
				    "the duplicates again.", labels[i]);
		else if (reqs[i].result < 0)
			r = ks_set_error(j->reterr_msg, reqs[i].result, "cannot read %s from the server: "
				    "%s", labels[i], reqs[i].errmsg[0] ? reqs[i].errmsg
								       : strerror(-reqs[i].result));
		else if (etags[i] && reqs[i].etag && strcmp(etags[i], reqs[i].etag) != 0)
			r = ks_set_error(j->reterr_msg, -ESTALE, "%s changed on the server since the last "
				    "sync; nothing was merged. Run 'ksyncctl sync' and look at the "
				    "group again.", labels[i]);
	}
	for (size_t i = 0; i < n; i++)
		ks_dav_request_done(&reqs[i]);
	return r;
}

/* A conditional PUT or DELETE; *ret_etag (PUT) gets the reply's ETag or NULL. */
static int send_one(job *j, const char *method, const char *href, const char *data, size_t len,
		    const char *if_match, char **ret_etag, char *errmsg, size_t errlen)
{
	ks_dav_request req = {
		.method = method, .url = href, .body = data, .body_len = len,
		.content_type = data ? vcard_type : NULL, .if_match = if_match,
		.if_none_match = if_match ? NULL : "*",
	};
	int r = ks_dav_run_one(j->dav, &req);

	if (r >= 0 && ret_etag)
		*ret_etag = TAKE_PTR(req.etag);
	if (r < 0 && errmsg)
		snprintf(errmsg, errlen, "%s", req.errmsg);
	ks_dav_request_done(&req);
	return r;
}

/* Writes the item's file and its row as the server now holds it: read back, since servers
 * may store a card otherwise than it was sent (Radicale writes it anew), and the file and
 * the cache should hold the server's bytes. When the read fails, what was sent (with the
 * reply's etag) is recorded; the next sync corrects it. */
static int store_item(job *j, const char *href, const char *etag, const char *filename,
		      const char *data, size_t len)
{
	_cleanup_free_ char *got = NULL, *got_etag = NULL;
	ks_item_info info = {};
	struct stat st;
	char hex[65];
	int r;

	ks_dav_request req = { .method = "GET", .url = href, .accept = vcard_type };
	r = ks_dav_run_one(j->dav, &req);
	if (r >= 0 && req.body_text && req.etag) {
		got = TAKE_PTR(req.body_text);
		got_etag = TAKE_PTR(req.etag);
		data = got;
		len = strlen(got);
		etag = got_etag;
	}
	ks_dav_request_done(&req);
	r = ks_fs_write_atomic(j->dirfd, filename, data, len, true);
	if (r >= 0)
		r = ks_fs_fsync_dir(j->dirfd);
	if (r >= 0 && fstatat(j->dirfd, filename, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	if (r < 0)
		return r;
	r = ks_item_parse_info(data, len, &info, NULL);
	if (r == -ENOMEM)
		return r;
	ks_sha256_hex(data, len, hex);
	ks_item_row row = {
		.href = href, .etag = etag, .filename = filename, .data = data, .len = len,
		.info = r >= 0 ? &info : NULL, .hash = hex, .mtime_ns = stat_ns(&st),
		.ino = (int64_t) st.st_ino, .size = (int64_t) st.st_size,
	};
	r = ks_cache_begin(j->e->cache);
	if (r >= 0) {
		r = ks_cache_put_item(j->e->cache, j->col->id, &row);
		if (r >= 0)
			r = ks_cache_commit(j->e->cache);
		if (r < 0)
			ks_cache_rollback(j->e->cache);
	}
	ks_item_info_done(&info);
	return r;
}

/* The server no longer has href: its file goes, then its row (a crash between the two
 * leaves a row for a missing file, which the next sync's listing clears). */
static int drop_item(job *j, const char *href, const char *filename)
{
	int r = 0;

	if (unlinkat(j->dirfd, filename, 0) < 0 && errno != ENOENT)
		return -errno;
	r = ks_fs_fsync_dir(j->dirfd);
	if (r >= 0)
		r = ks_cache_begin(j->e->cache);
	if (r >= 0) {
		r = ks_cache_delete_item(j->e->cache, j->col->id, href);
		if (r >= 0)
			r = ks_cache_commit(j->e->cache);
		if (r < 0)
			ks_cache_rollback(j->e->cache);
	}
	return r;
}

/* ---- the journal of a merge --------------------------------------------------------------- */

#define JOURNAL "journal.json"

typedef struct jentry {
	char *uid, *href, *filename, *etag, *etag_after, *file;
	bool done;		/* removed: deleted on the server; group: rewritten */
	/* The undo of this step went through (a card put back, or left as it was found),
	 * and the etag it left: an undo cut off halfway goes on from there when run again. */
	bool undone;
	char *etag_undone;
} jentry;

typedef struct journal {
	char *dir;		/* the backup directory, holding the copies and JOURNAL */
	char *id, *account, *collection, *state;
	int64_t time_ns;
	jentry kept;
	jentry *removed;
	size_t n_removed;
	jentry *groups;
	size_t n_groups;
} journal;

static void jentry_done(jentry *e)
{
	free(e->uid);
	free(e->href);
	free(e->filename);
	free(e->etag);
	free(e->etag_after);
	free(e->file);
	free(e->etag_undone);
	*e = (jentry) {};
}

static void journal_done(journal *J)
{
	free(J->dir);
	free(J->id);
	free(J->account);
	free(J->collection);
	free(J->state);
	jentry_done(&J->kept);
	for (size_t i = 0; i < J->n_removed; i++)
		jentry_done(&J->removed[i]);
	free(J->removed);
	for (size_t i = 0; i < J->n_groups; i++)
		jentry_done(&J->groups[i]);
	free(J->groups);
	*J = (journal) {};
}

static void write_jentry(ks_json_writer *w, const jentry *e)
{
	ks_json_write_object_begin(w);
	ks_json_write_key(w, "uid");
	ks_json_write_string(w, e->uid);
	ks_json_write_key(w, "href");
	ks_json_write_string(w, e->href);
	ks_json_write_key(w, "filename");
	ks_json_write_string(w, e->filename);
	ks_json_write_key(w, "etag");
	ks_json_write_string(w, e->etag);
	ks_json_write_key(w, "etag_after");
	ks_json_write_string(w, e->etag_after);
	ks_json_write_key(w, "file");
	ks_json_write_string(w, e->file);
	ks_json_write_key(w, "done");
	ks_json_write_bool(w, e->done);
	ks_json_write_key(w, "undone");
	ks_json_write_bool(w, e->undone);
	ks_json_write_key(w, "etag_undone");
	ks_json_write_string(w, e->etag_undone);
	ks_json_write_object_end(w);
}

/* Writes the journal (atomically, flushed): the undo of a merge must survive a crash. */
static int journal_save(const journal *J)
{
	_cleanup_(ks_buf_done) ks_buf b = {};
	ks_json_writer w;
	int fd, r;

	ks_json_writer_init(&w, &b, true);
	ks_json_write_object_begin(&w);
	ks_json_write_key(&w, "version");
	ks_json_write_int(&w, 1);
	ks_json_write_key(&w, "state");
	ks_json_write_string(&w, J->state);
	ks_json_write_key(&w, "id");
	ks_json_write_string(&w, J->id);
	ks_json_write_key(&w, "account");
	ks_json_write_string(&w, J->account);
	ks_json_write_key(&w, "collection");
	ks_json_write_string(&w, J->collection);
	ks_json_write_key(&w, "time_ns");
	ks_json_write_int(&w, J->time_ns);
	ks_json_write_key(&w, "kept");
	write_jentry(&w, &J->kept);
	ks_json_write_key(&w, "removed");
	ks_json_write_array_begin(&w);
	for (size_t i = 0; i < J->n_removed; i++)
		write_jentry(&w, &J->removed[i]);
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "groups");
	ks_json_write_array_begin(&w);
	for (size_t i = 0; i < J->n_groups; i++)
		write_jentry(&w, &J->groups[i]);
	ks_json_write_array_end(&w);
	ks_json_write_object_end(&w);
	r = ks_json_writer_finish(&w);
	if (r < 0)
		return r;
	fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = ks_fs_write_atomic(fd, JOURNAL, b.data, b.len, true);
	if (r >= 0)
		r = ks_fs_fsync_dir(fd);
	close(fd);
	return r;
}

static char *json_dup(const ks_json *j, const char *key)
{
	const char *s = ks_json_get_string(j, key);

	return s ? strdup(s) : NULL;
}

static int read_jentry(const ks_json *j, jentry *e)
{
	*e = (jentry) {
		.uid = json_dup(j, "uid"), .href = json_dup(j, "href"),
		.filename = json_dup(j, "filename"), .etag = json_dup(j, "etag"),
		.etag_after = json_dup(j, "etag_after"), .file = json_dup(j, "file"),
		.done = ks_json_get_bool(j, "done", false),
		.undone = ks_json_get_bool(j, "undone", false),
		.etag_undone = json_dup(j, "etag_undone"),
	};
	return e->uid && e->href && e->filename && e->file ? 0 : -EBADMSG;
}

static int read_jentries(const ks_json *arr, jentry **ret, size_t *ret_n)
{
	size_t n = ks_json_count(arr);
	jentry *v = calloc(n + 1, sizeof(*v));
	int r = 0;

	if (!v)
		return -ENOMEM;
	*ret = v;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = read_jentry(ks_json_at(arr, i), &v[i]);
		*ret_n = i + 1;
	}
	return r;
}

static int journal_load(const char *dir, journal *ret)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	journal J = {};
	size_t len = 0;
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = ks_fs_read_file(fd, JOURNAL, KS_JSON_MAX_TEXT, &text, &len);
	close(fd);
	if (r < 0)
		return r;
	r = ks_json_parse(text, len, &j, NULL);
	if (r < 0)
		return r;
	J.dir = strdup(dir);
	J.id = json_dup(j, "id");
	J.account = json_dup(j, "account");
	J.collection = json_dup(j, "collection");
	J.state = json_dup(j, "state");
	J.time_ns = ks_json_get_int(j, "time_ns", 0);
	r = J.dir && J.id && J.account && J.collection && J.state ? 0 : -EBADMSG;
	if (r >= 0)
		r = read_jentry(ks_json_get(j, "kept"), &J.kept);
	if (r >= 0)
		r = read_jentries(ks_json_get(j, "removed"), &J.removed, &J.n_removed);
	if (r >= 0)
		r = read_jentries(ks_json_get(j, "groups"), &J.groups, &J.n_groups);
	if (r < 0) {
		journal_done(&J);
		return r;
	}
	*ret = J;
	return 0;
}

static int jentry_of(const book_item *it, jentry *ret)
{
	*ret = (jentry) {
		.uid = strdup(it->uid), .href = strdup(it->href), .filename = strdup(it->filename),
		.etag = it->etag ? strdup(it->etag) : NULL, .file = strdup(it->filename),
	};
	return ret->uid && ret->href && ret->filename && ret->file &&
	       (!it->etag || ret->etag) ? 0 : -ENOMEM;
}

/* Keeps a copy of every card the merge overwrites or removes, and the journal, before any
 * request: a crash or a failure at any later point leaves them to restore from. */
static int backup(ks_engine *e, const plan *p, journal *J)
{
	const book *b = &p->b;
	struct timespec ts;
	char stamp[32];
	struct tm tm;
	int fd, r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	J->time_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
	if (asprintf(&J->dir, "%s/conflicts/%s/contacts/%s/merge-%s-%s", e->data_dir, b->account,
		     b->col.name, stamp, strchr(p->id, ':') + 1) < 0) {
		J->dir = NULL;
		return -ENOMEM;
	}
	J->id = strdup(p->id);
	J->account = strdup(b->account);
	J->collection = strdup(b->col.name);
	J->state = strdup("started");
	J->removed = calloc(p->n_members, sizeof(jentry));
	J->groups = calloc(p->n_groups + 1, sizeof(jentry));
	if (!J->id || !J->account || !J->collection || !J->state || !J->removed || !J->groups)
		return -ENOMEM;
	r = ks_fs_mkdir_p(J->dir);
	if (r < 0)
		return r;
	r = jentry_of(&b->items[p->ref], &J->kept);
	for (size_t i = 1; r >= 0 && i < p->n_members; i++) {
		r = jentry_of(&b->items[p->members[i]], &J->removed[J->n_removed]);
		J->n_removed++;
	}
	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		r = jentry_of(&b->items[p->groups[i]], &J->groups[J->n_groups]);
		J->n_groups++;
	}
	if (r < 0)
		return r;
	fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; r >= 0 && i < p->n_members; i++) {
		const book_item *it = &b->items[p->members[i]];
		r = ks_fs_write_atomic(fd, it->filename, it->data, it->len, true);
	}
	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		const book_item *it = &b->items[p->groups[i]];
		r = ks_fs_write_atomic(fd, it->filename, it->data, it->len, true);
	}
	if (r >= 0)
		r = ks_fs_fsync_dir(fd);
	close(fd);
	if (r >= 0)
		r = journal_save(J);
	return r;
}

static void remove_backup(const journal *J)
{
	int fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return;
	(void) unlinkat(fd, JOURNAL, 0);
	(void) unlinkat(fd, J->kept.file, 0);
	for (size_t i = 0; i < J->n_removed; i++)
		(void) unlinkat(fd, J->removed[i].file, 0);
	for (size_t i = 0; i < J->n_groups; i++)
		(void) unlinkat(fd, J->groups[i].file, 0);
	close(fd);
	(void) rmdir(J->dir);
}

static int set_state(journal *J, const char *state)
{
	free(J->state);
	J->state = strdup(state);
	return J->state ? journal_save(J) : -ENOMEM;
}

/* Records in the journal that the undo of step en went through, leaving etag (or nothing, when
 * the step was left as it was found). */
static int mark_undone(journal *J, jentry *en, const char *etag)
{
	char *e = etag ? strdup(etag) : NULL;

	if (etag && !e)
		return -ENOMEM;
	free(en->etag_undone);
	en->etag_undone = e;
	en->undone = true;
	return journal_save(J);
}

static char *label_of(const book_item *it)
{
	char *s;

	if (asprintf(&s, "the card '%s' (UID %s)", it->card.name ? it->card.name : "", it->uid) < 0)
		return NULL;
	return s;
}

static int write_result(const plan *p, const journal *J, bool dry_run, char **ret)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	ks_json_writer w;

	ks_json_writer_init(&w, &buf, false);
	ks_json_write_object_begin(&w);
	write_plan(&w, p);
	ks_json_write_key(&w, "dry_run");
	ks_json_write_bool(&w, dry_run);
	ks_json_write_key(&w, "kept");
	ks_json_write_string(&w, p->b.items[p->ref].uid);
	ks_json_write_key(&w, "removed");
	ks_json_write_array_begin(&w);
	for (size_t i = 1; i < p->n_members; i++)
		if (dry_run || (J && J->removed[i - 1].done))
			ks_json_write_string(&w, p->b.items[p->members[i]].uid);
	ks_json_write_array_end(&w);
	ks_json_write_key(&w, "backup");
	ks_json_write_string(&w, J ? J->dir : NULL);
	ks_json_write_object_end(&w);
	return finish_json(&w, &buf, ret);
}

static int merge_run(ks_engine *e, const ks_config *c, plan *p, journal *J, char **reterr_msg)
{
	_cleanup_(job_done) job j = { .dirfd = -1, .lock_fd = -1 };
	book *b = &p->b;
	size_t n_inv = p->n_members + p->n_groups;
	_cleanup_free_ const char **hrefs = calloc(n_inv, sizeof(char *));
	_cleanup_free_ const char **etags = calloc(n_inv, sizeof(char *));
	_cleanup_free_ char **labels = calloc(n_inv, sizeof(char *));
	_cleanup_free_ char *new_etag = NULL;
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r;

	if (!hrefs || !etags || !labels)
		return -ENOMEM;
	r = job_start(&j, e, c, b->account, &b->col, reterr_msg);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_inv; i++) {
		const book_item *it = &b->items[i < p->n_members ? p->members[i]
								 : p->groups[i - p->n_members]];
		hrefs[i] = it->href;
		etags[i] = it->etag;
		labels[i] = label_of(it);
		if (!labels[i]) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; r >= 0 && i < n_inv; i++)
		r = check_local(&j, hrefs[i], labels[i]);
	if (r >= 0)
		r = check_intents(&j, hrefs, n_inv);
	if (r >= 0)
		r = check_server(&j, hrefs, etags, (const char *const *) labels, n_inv);
	if (r >= 0)
		r = backup(e, p, J);
	if (r < 0)
		goto out;

	/* The merged card first: a failure here leaves every card as it was. */
	const book_item *ref = &b->items[p->ref];
	r = send_one(&j, "PUT", ref->href, p->merged.data, p->merged.len,
		     ref->etag ? ref->etag : "*", &new_etag,
		     errmsg, sizeof(errmsg));
	if (r < 0) {
		/* Nothing changed anywhere: the copies are not needed. */
		remove_backup(J);
		if (r == -ESTALE)
			r = ks_set_error(reterr_msg, r, "%s changed on the server meanwhile; nothing was "
				    "merged. Run 'ksyncctl sync' and look at the group again.",
				    labels[0]);
		else
			r = ks_set_error(reterr_msg, r, "cannot write the merged card: %s",
				    errmsg[0] ? errmsg : strerror(-r));
		goto out;
	}
	J->kept.done = true;
	J->kept.etag_after = new_etag ? strdup(new_etag) : NULL;
	r = store_item(&j, ref->href, new_etag, ref->filename, p->merged.data, p->merged.len);
	if (r >= 0) {
		/* The etag the undo expects is the one the cache now holds. */
		ks_cache_item it = {};
		if (ks_cache_get_item(e->cache, b->col.id, ref->href, &it) >= 0 && it.etag) {
			free(J->kept.etag_after);
			J->kept.etag_after = strdup(it.etag);
		}
		ks_cache_item_done(&it);
		r = set_state(J, "partial");
	}
	if (r < 0)
		goto out;

	for (size_t i = 0; r >= 0 && i < p->n_groups; i++) {
		const book_item *it = &b->items[p->groups[i]];
		_cleanup_free_ char *et = NULL;
		r = send_one(&j, "PUT", it->href, p->group_data[i], p->group_len[i],
			     it->etag ? it->etag : "*", &et,
			     errmsg, sizeof(errmsg));
		if (r < 0)
			break;
		r = store_item(&j, it->href, et, it->filename, p->group_data[i], p->group_len[i]);
		if (r >= 0) {
			ks_cache_item ci = {};
			if (ks_cache_get_item(e->cache, b->col.id, it->href, &ci) >= 0 && ci.etag)
				J->groups[i].etag_after = strdup(ci.etag);
			ks_cache_item_done(&ci);
			J->groups[i].done = true;
			r = journal_save(J);
		}
	}
	if (r < 0) {
		r = ks_set_error(reterr_msg, r, "the merged card was written, but a group card could not "
			    "be updated (%s); the other cards were kept. 'ksyncctl duplicates undo' "
			    "puts the reference card back.", r == -ESTALE
				    ? "it changed on the server meanwhile"
				    : errmsg[0] ? errmsg : strerror(-r));
		goto out;
	}

	for (size_t i = 1; r >= 0 && i < p->n_members; i++) {
		const book_item *it = &b->items[p->members[i]];
		r = send_one(&j, "DELETE", it->href, NULL, 0, it->etag ? it->etag : "*", NULL,
			     errmsg, sizeof(errmsg));
		if (r == -ENOENT)
			r = 0;	/* gone already: what the merge wanted */
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "%s %s, so it was not removed; the merged card was "
				    "written and the cards before it removed. Sync, then merge the "
				    "group again, or undo with 'ksyncctl duplicates undo'.",
				    labels[i], r == -ESTALE ? "changed on the server during the merge"
							    : errmsg[0] ? errmsg : strerror(-r));
			break;
		}
		r = drop_item(&j, it->href, it->filename);
		if (r >= 0) {
			J->removed[i - 1].done = true;
			r = journal_save(J);
		}
	}
	if (r >= 0)
		r = set_state(J, "done");
out:
	for (size_t i = 0; i < n_inv; i++)
		free(labels[i]);
	return r;
}

int ks_dup_merge(ks_engine *e, const ks_config *c, const char *id, const char *keep_uid,
		 bool dry_run, char **ret_json, char **reterr_msg)
{
	_cleanup_(plan_done) plan p = {};
	journal J = {};
	int r;

	assert(e && c && ret_json);
	r = plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r < 0)
		return r;
	if (p.b.col.readonly)
		return ks_set_error(reterr_msg, -EROFS, "the address book '%s' of account %s is read-only "
			       "on the server: its cards cannot be merged", p.b.col.displayname
			       ? p.b.col.displayname : p.b.col.name, p.b.account);
	if (dry_run)
		return write_result(&p, NULL, true, ret_json);

	/* The plan is made again under the lock: a sync that ran meanwhile may have brought
	 * new versions of the cards (or sent local edits of them), which the merge must use. */
	_cleanup_free_ char *account = strdup(p.b.account);
	int lock_fd = -1;
	if (!account)
		return -ENOMEM;
	plan_done(&p);
	/* A sync of the account waits for the merge, and the merge for a sync under way:
	 * what it reads from the cache is read under the lock. */
	r = ks_engine_lock_account(e, account, true, &lock_fd, reterr_msg);
	if (r < 0)
		return r;
	r = plan_make(e, c, id, keep_uid, &p, reterr_msg);
	if (r >= 0 && strcmp(p.b.account, account) != 0)
		r = ks_set_error(reterr_msg, -ENOENT, "group %s moved to another account meanwhile; list "
			    "the duplicates again", id);
	if (r >= 0)
		r = merge_run(e, c, &p, &J, reterr_msg);
	if (r >= 0)
		r = write_result(&p, &J, false, ret_json);
	close(lock_fd);
	journal_done(&J);
	return r;
}

/* ---- undo --------------------------------------------------------------------------------- */

/* The newest merge of account (any for NULL) that can be undone, by its journal. */
static int find_last(ks_engine *e, const ks_config *c, const char *account, journal *ret)
{
	journal best = {};
	int r = 0;

	for (size_t a = 0; r >= 0 && a < c->n_accounts; a++) {
		const char *name = c->accounts[a].name;
		_cleanup_free_ char *root = NULL;
		DIR *books;
		struct dirent *be;

		if (account && *account && strcmp(account, name) != 0)
			continue;
		if (asprintf(&root, "%s/conflicts/%s/contacts", e->data_dir, name) < 0)
			return -ENOMEM;
		books = opendir(root);
		if (!books)
			continue;
		while (r >= 0 && (be = readdir(books))) {
			_cleanup_free_ char *bdir = NULL;
			DIR *merges;
			struct dirent *me;

			if (be->d_name[0] == '.')
				continue;
			if (asprintf(&bdir, "%s/%s", root, be->d_name) < 0) {
				r = -ENOMEM;
				break;
			}
			merges = opendir(bdir);
			if (!merges)
				continue;
			while (r >= 0 && (me = readdir(merges))) {
				_cleanup_free_ char *mdir = NULL;
				journal J = {};

				if (strncmp(me->d_name, "merge-", 6) != 0)
					continue;
				if (asprintf(&mdir, "%s/%s", bdir, me->d_name) < 0) {
					r = -ENOMEM;
					break;
				}
				/* A journal that cannot be read is not a merge to undo. */
				if (journal_load(mdir, &J) < 0)
					continue;
				if ((strcmp(J.state, "done") == 0 || strcmp(J.state, "partial") == 0 ||
				     strcmp(J.state, "undoing") == 0) &&
				    strcmp(J.account, name) == 0 &&
				    (!best.dir || J.time_ns > best.time_ns)) {
					journal_done(&best);
					best = J;
				} else
					journal_done(&J);
			}
			closedir(merges);
		}
		closedir(books);
	}
	if (r < 0) {
		journal_done(&best);
		return r;
	}
	if (!best.dir)
		return -ENOENT;
	*ret = best;
	return 0;
}

static int read_backup(const journal *J, const jentry *en, char **ret, size_t *ret_len)
{
	int fd = open(J->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	r = ks_fs_read_file(fd, en->file, KS_CARD_MAX, ret, ret_len);
	close(fd);
	return r;
}

/* A name for a restored card's file: its old one, unless another item took it since. */
static int restore_name(job *j, const jentry *en, char **ret)
{
	int r = ks_cache_filename_taken(j->e->cache, j->col->id, en->filename, en->href);

	if (r < 0)
		return r;
	if (r == 0)
		return (*ret = strdup(en->filename)) ? 0 : -ENOMEM;
	const char *dot = strrchr(en->filename, '.');
	size_t base = dot ? (size_t) (dot - en->filename) : strlen(en->filename);
	return asprintf(ret, "%.*s-restored%s", (int) base, en->filename, dot ? dot : "") < 0
		       ? -ENOMEM : 0;
}

static int undo_run(ks_engine *e, const ks_config *c, journal *J, ks_json_writer *w,
		    char **reterr_msg)
{
	_cleanup_(job_done) job j = { .dirfd = -1, .lock_fd = -1 };
	ks_collection *cols = NULL, *col = NULL;
	size_t n_cols = 0;
	ks_cache_item kept = {};
	_cleanup_free_ char *old = NULL, *et = NULL;
	_cleanup_(ks_buf_done) ks_buf notices = {};
	size_t len = 0;
	char errmsg[KS_DAV_ERRMSG_MAX] = "";
	int r;

	r = ks_cache_list_collections(e->cache, J->account, &cols, &n_cols);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_cols; i++)
		if (cols[i].kind == KS_COLLECTION_ADDRESSBOOK && strcmp(cols[i].name, J->collection) == 0)
			col = &cols[i];
	if (!col) {
		r = ks_set_error(reterr_msg, -ENOENT, "the address book %s of account %s is gone; the "
			    "cards are kept in %s", J->collection, J->account, J->dir);
		goto out;
	}
	if (col->readonly) {
		r = ks_set_error(reterr_msg, -EROFS, "the address book %s is read-only now; the cards are "
			    "kept in %s", J->collection, J->dir);
		goto out;
	}
	r = job_start(&j, e, c, J->account, col, reterr_msg);
	if (r < 0)
		goto out;

	/* An undo cut off halfway is taken up where it stopped: what it did is marked in the
	 * journal step by step, and the kept card is then as the undo left it. */
	if (strcmp(J->state, "undoing") != 0) {
		r = set_state(J, "undoing");
		if (r < 0)
			goto out;
	}
	const char *kept_etag = J->kept.undone ? J->kept.etag_undone : J->kept.etag_after;
	/* The kept card must be as the merge (or the undo) left it: an edit since would be
	 * lost. */
	r = ks_cache_get_item(e->cache, col->id, J->kept.href, &kept);
	if (r == -ENOENT || (r >= 0 && kept_etag &&
			     (!kept.etag || strcmp(kept.etag, kept_etag) != 0))) {
		r = ks_set_error(reterr_msg, -ESTALE, "the kept card (UID %s) changed since the merge; "
			    "undo refused so that the change is not lost. The cards removed by the "
			    "merge are kept in %s", J->kept.uid, J->dir);
		goto out;
	}
	if (r < 0)
		goto out;
	r = check_local(&j, J->kept.href, "the kept card");
	if (r < 0)
		goto out;

	if (!J->kept.undone) {
		r = read_backup(J, &J->kept, &old, &len);
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot read the copy of the kept card in %s: %s",
				    J->dir, strerror(-r));
			goto out;
		}
		r = send_one(&j, "PUT", J->kept.href, old, len, kept_etag ? kept_etag : kept.etag,
			     &et, errmsg, sizeof(errmsg));
		if (r == -ESTALE) {
			r = ks_set_error(reterr_msg, r, "the kept card (UID %s) changed on the server "
				    "since the merge; undo refused. The cards removed by the merge are "
				    "kept in %s", J->kept.uid, J->dir);
			goto out;
		}
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot put the kept card back: %s",
				    errmsg[0] ? errmsg : strerror(-r));
			goto out;
		}
		r = store_item(&j, J->kept.href, et, kept.filename, old, len);
		if (r >= 0)
			r = mark_undone(J, &J->kept, et);
		if (r < 0)
			goto out;
	}

	ks_json_write_object_begin(w);
	ks_json_write_key(w, "id");
	ks_json_write_string(w, J->id);
	ks_json_write_key(w, "account");
	ks_json_write_string(w, J->account);
	ks_json_write_key(w, "collection");
	ks_json_write_string(w, J->collection);
	ks_json_write_key(w, "kept");
	ks_json_write_string(w, J->kept.uid);
	ks_json_write_key(w, "backup");
	ks_json_write_string(w, J->dir);
	ks_json_write_key(w, "restored");
	ks_json_write_array_begin(w);
	for (size_t i = 0; r >= 0 && i < J->n_removed; i++) {
		jentry *en = &J->removed[i];
		_cleanup_free_ char *data = NULL, *etag = NULL, *name = NULL;
		size_t dlen = 0;
		if (!en->done)
			continue;	/* never removed */
		if (en->undone) {
			ks_json_write_string(w, en->uid);	/* by the undo cut off before */
			continue;
		}
		r = read_backup(J, en, &data, &dlen);
		if (r < 0)
			break;
		r = send_one(&j, "PUT", en->href, data, dlen, NULL, &etag, errmsg, sizeof(errmsg));
		if (r == -ESTALE) {
			/* Something is at that href again: it is not overwritten. */
			r = ks_buf_printf(&notices, "%s%s exists again on the server and was left "
					  "as it is (the old card is in %s/%s)", notices.len ? "; " : "",
					  en->href, J->dir, en->file);
			if (r >= 0)
				r = mark_undone(J, en, NULL);
			continue;
		}
		if (r < 0) {
			r = ks_set_error(reterr_msg, r, "cannot create the card %s again: %s", en->uid,
				    errmsg[0] ? errmsg : strerror(-r));
			break;
		}
		r = restore_name(&j, en, &name);
		if (r >= 0)
			r = store_item(&j, en->href, etag, name, data, dlen);
		if (r >= 0)
			r = mark_undone(J, en, etag);
		if (r >= 0)
			ks_json_write_string(w, en->uid);
	}
	ks_json_write_array_end(w);
	for (size_t i = 0; r >= 0 && i < J->n_groups; i++) {
		jentry *en = &J->groups[i];
		_cleanup_free_ char *data = NULL, *etag = NULL;
		size_t dlen = 0;
		if (!en->done || !en->etag_after || en->undone)
			continue;
		r = read_backup(J, en, &data, &dlen);
		if (r >= 0)
			r = send_one(&j, "PUT", en->href, data, dlen, en->etag_after, &etag, errmsg,
				     sizeof(errmsg));
		if (r == -ESTALE || r == -ENOENT) {
			r = ks_buf_printf(&notices, "%sthe group card %s changed since the merge; "
					  "its members were left as they are", notices.len ? "; " : "",
					  en->uid);
			if (r >= 0)
				r = mark_undone(J, en, NULL);
			continue;
		}
		if (r >= 0)
			r = store_item(&j, en->href, etag, en->filename, data, dlen);
		if (r >= 0)
			r = mark_undone(J, en, etag);
	}
	if (r < 0)
		goto out;
	ks_json_write_key(w, "notice");
	ks_json_write_string(w, notices.len ? notices.data : NULL);
	ks_json_write_object_end(w);
	r = set_state(J, "undone");
out:
	ks_cache_item_done(&kept);
	ks_collection_free_array(cols, n_cols);
	return r;
}

int ks_dup_undo(ks_engine *e, const ks_config *c, const char *account, char **ret_json,
		char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf buf = {};
	journal J = {};
	ks_json_writer w;
	int r;

	assert(e && c && ret_json);
	if (account && *account && !ks_config_find_account(c, account))
		return ks_set_error(reterr_msg, -ENOENT, "no account '%s' in %s", account, c->path);
	r = find_last(e, c, account, &J);
	if (r == -ENOENT)
		return ks_set_error(reterr_msg, r, "no merge of duplicates to undo");
	if (r < 0)
		return r;
	int lock_fd = -1;
	r = ks_engine_lock_account(e, J.account, true, &lock_fd, reterr_msg);
	if (r < 0) {
		journal_done(&J);
		return r;
	}
	ks_json_writer_init(&w, &buf, false);
	r = undo_run(e, c, &J, &w, reterr_msg);
	close(lock_fd);
	journal_done(&J);
	if (r < 0)
		return r;
	return finish_json(&w, &buf, ret_json);
}

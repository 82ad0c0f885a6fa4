/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "limits.h"
#include "macro.h"
#include "text_p.h"
#include "vcard_p.h"

/* Whether s, blanks around it ignored, is the word w (any case). */
static bool word_eq(const char *s, const char *w)
{
	size_t n;

	while (ks_is_space(*s))
		s++;
	n = strlen(s);
	while (n > 0 && ks_is_space(s[n - 1]))
		n--;
	if (n != strlen(w))
		return false;
	for (size_t i = 0; i < n; i++)
		if (ks_ascii_upper(s[i]) != ks_ascii_upper(w[i]))
			return false;
	return true;
}

/* Copies s[0..n) without the blanks around it (possibly ""), or NULL on OOM. */
static char *strndup_trim(const char *s, size_t n)
{
	while (n > 0 && ks_is_space(*s)) {
		s++;
		n--;
	}
	while (n > 0 && ks_is_space(s[n - 1]))
		n--;
	return strndup(s, n);
}

static void *mfree(void *p)
{
	free(p);
	return NULL;
}

static char *strndup_upper_trim(const char *s, size_t n)
{
	char *u = strndup_trim(s, n);

	if (u)
		for (char *p = u; *p; p++)
			*p = ks_ascii_upper(*p);
	return u;
}

static void prop_done(ks_vcard_prop *p)
{
	free(p->group);
	free(p->name);
	for (size_t i = 0; i < p->n_params; i++) {
		free(p->params[i].name);
		free(p->params[i].value);
	}
	free(p->params);
	free(p->value);
	*p = (ks_vcard_prop) {};
}

void ks_vcard_free_array(ks_vcard *cards, size_t n)
{
	if (!cards)
		return;
	for (size_t i = 0; i < n; i++) {
		free(cards[i].version);
		for (size_t j = 0; j < cards[i].n_props; j++)
			prop_done(&cards[i].props[j]);
		free(cards[i].props);
	}
	free(cards);
}

typedef struct card_list {
	ks_vcard *v;
	size_t n;
} card_list;

static void card_list_done(card_list *l)
{
	ks_vcard_free_array(l->v, l->n);
	*l = (card_list) {};
}

const ks_vcard_prop *ks_vcard_get(const ks_vcard *card, const char *name)
{
	assert(card && name);
	for (size_t i = 0; i < card->n_props; i++)
		if (ks_streq_nocase(card->props[i].name, name))
			return &card->props[i];
	return NULL;
}

const char *ks_vcard_param_get(const ks_vcard_prop *prop, const char *name)
{
	assert(prop && name);
	for (size_t i = 0; i < prop->n_params; i++)
		if (ks_streq_nocase(prop->params[i].name, name))
			return prop->params[i].value;
	return NULL;
}

char *ks_vcard_unescape(const char *value)
{
	assert(value);
	char *out = malloc(strlen(value) + 1);
	char *o = out;

	if (!out)
		return NULL;
	for (const char *s = value; *s; s++) {
		if (s[0] == '\\' && s[1]) {
			switch (s[1]) {
			case 'n':
			case 'N':
				*o++ = '\n';
				s++;
				continue;
			case ',':
			case ';':
			case '\\':
				*o++ = s[1];
				s++;
				continue;
			}
		}
		/* Anything else, a lone trailing backslash included, stays as written. */
		*o++ = *s;
	}
	*o = 0;
	return out;
}

/* ---- content lines ----------------------------------------------------------------------- */

typedef struct vcard_reader {
	const char *data;
	size_t len;
	size_t pos;
	unsigned line;	/* number of the physical line that starts at pos, from 1 */
} vcard_reader;

/* Appends the next logical line to b, unfolded and without its line break. Returns 1, or 0 at
 * the end of the input, or a negative errno. */
static int reader_next(vcard_reader *rd, ks_buf *b)
{
	int r;

	if (rd->pos >= rd->len)
		return 0;
	for (;;) {
		const char *s = rd->data + rd->pos;
		size_t rest = rd->len - rd->pos;
		const char *nl = memchr(s, '\n', rest);
		size_t n = nl ? (size_t) (nl - s) : rest;
		size_t keep = n;

		if (nl && keep > 0 && s[keep - 1] == '\r')
			keep--;
		r = ks_buf_append(b, s, keep);
		if (r < 0)
			return r;
		rd->pos += n;
		if (!nl)
			break;
		rd->pos++;
		rd->line++;
		/* A fold: the break and one blank go, any further blanks are content. */
		if (rd->pos < rd->len && ks_is_blank(rd->data[rd->pos])) {
			rd->pos++;
			continue;
		}
		break;
	}
	return 1;
}

/* vCard 2.1 lets a parameter value stand alone (";WORK;VOICE", ";QUOTED-PRINTABLE"); these
 * are the values that belong to ENCODING, all others are TYPEs. */
static bool is_encoding_value(const char *v)
{
	static const char *const encodings[] = { "QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT" };

	for (size_t i = 0; i < ELEMENTSOF(encodings); i++)
		if (ks_streq_nocase(v, encodings[i]))
			return true;
	return false;
}

/* Parses one parameter at *pq (just past its ';') into p, and leaves *pq on the ';' or ':' after
 * it, or on the terminating NUL. */
static int parse_param(const char **pq, ks_vcard_prop *p, size_t *cap, unsigned lineno,
		       char **reterr_msg)
{
	const char *q = *pq;
	size_t n = strcspn(q, "=;:");
	_cleanup_free_ char *name = NULL, *value = NULL;

	if (q[n] == '=') {
		const char *v = q + n + 1, *e;
		bool quoted = false;
		size_t vlen = 0;

		/* Quotes may wrap the whole value or each of its comma-separated parts; they are
		 * dropped, and ';', ':' and ',' inside them are kept as text. */
		for (e = v; *e; e++) {
			if (*e == '"') {
				quoted = !quoted;
				continue;
			}
			if (!quoted && (*e == ';' || *e == ':'))
				break;
			vlen++;
		}
		if (quoted)
			return ks_set_error(reterr_msg, -EBADMSG,
					     "line %u: unterminated quoted parameter value",
					     lineno);
		*pq = e;

		value = malloc(vlen + 1);
		if (!value)
			return -ENOMEM;
		char *o = value;
		for (const char *c = v; c < e; c++)
			if (*c != '"')
				*o++ = *c;
		*o = 0;
		name = strndup_upper_trim(q, n);
	} else {
		*pq = q + n;
		value = strndup_trim(q, n);
		if (!value)
			return -ENOMEM;
		name = strdup(is_encoding_value(value) ? "ENCODING" : "TYPE");
	}
	if (!name)
		return -ENOMEM;
	/* ";;" and ";=x" carry nothing. */
	if (!*name || (q[n] != '=' && !*value))
		return 0;

	ks_vcard_param *np = ks_array_grow(p->params, cap, p->n_params, sizeof(*np));
	if (!np)
		return -ENOMEM;
	p->params = np;
	p->params[p->n_params++] = (ks_vcard_param) {
		.name = TAKE_PTR(name),
		.value = TAKE_PTR(value),
	};
	return 0;
}

/* Parses "[group.]name *(;param) :" at the start of s into *ret, without the value, whose offset
 * in s goes to *ret_value. */
static int parse_line(const char *s, unsigned lineno, ks_vcard_prop *ret, size_t *ret_value,
		      char **reterr_msg)
{
	_cleanup_(prop_done) ks_vcard_prop p = {};
	const char *q = s;
	size_t cap = 0, n = strcspn(q, ".;:");
	int r;

	if (q[n] == '.') {
		p.group = strndup_trim(q, n);
		if (!p.group)
			return -ENOMEM;
		if (!*p.group)
			p.group = mfree(p.group);
		q += n + 1;
		n = strcspn(q, ";:");
	}
	if (!q[n])
		return ks_set_error(reterr_msg, -EBADMSG, "line %u: no ':' in content line",
				     lineno);
	p.name = strndup_upper_trim(q, n);
	if (!p.name)
		return -ENOMEM;
	if (!*p.name)
		return ks_set_error(reterr_msg, -EBADMSG, "line %u: empty property name", lineno);
	q += n;

	while (*q == ';') {
		q++;
		r = parse_param(&q, &p, &cap, lineno, reterr_msg);
		if (r < 0)
			return r;
	}
	if (*q != ':')
		return ks_set_error(reterr_msg, -EBADMSG, "line %u: no ':' in content line",
				     lineno);

	*ret_value = (size_t) (q + 1 - s);
	*ret = p;
	p = (ks_vcard_prop) {};
	return 0;
}

static bool prop_is_qp(const ks_vcard_prop *p)
{
	for (size_t i = 0; i < p->n_params; i++)
		if (ks_streq_nocase(p->params[i].name, "ENCODING") &&
		    ks_streq_nocase(p->params[i].value, "QUOTED-PRINTABLE"))
			return true;
	return false;
}

static unsigned line_of(const char *data, size_t off)
{
	unsigned line = 1;

	for (size_t i = 0; i < off; i++)
		if (data[i] == '\n')
			line++;
	return line;
}

int ks_vcard_parse(const char *data, size_t len, ks_vcard **ret, size_t *ret_n, char **reterr_msg)
{
	_cleanup_(ks_buf_done) ks_buf line = { .max = KS_CARD_MAX };
	_cleanup_(card_list_done) card_list cards = {};
	vcard_reader rd = { .data = data, .len = len, .line = 1 };
	size_t cards_cap = 0, props_cap = 0, nested = 0, bad, n_lines = 0;
	ks_vcard *card = NULL;
	int r;

	assert(data || len == 0);
	assert(ret && ret_n);

	if (len > KS_CARD_MAX)
		return ks_set_error(reterr_msg, -EFBIG,
				     "vCard is %zu bytes, more than the limit of %d", len,
				     KS_CARD_MAX);
	/* Checked on the raw bytes, before unfolding, so that the offset points into the file. */
	if (!ks_item_utf8_valid(data, len, true, &bad))
		return ks_set_error(reterr_msg, -EBADMSG, "invalid UTF-8 at byte %zu (line %u)",
				     bad, line_of(data, bad));
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		rd.pos = 3;

	for (;;) {
		unsigned lineno = rd.line;
		size_t start = 0, voff = 0;

		ks_buf_reset(&line);
		r = reader_next(&rd, &line);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		if (line.len == 0)
			continue;
		while (ks_is_space(line.data[start]))
			start++;
		if (!line.data[start])
			continue;

		_cleanup_(prop_done) ks_vcard_prop p = {};
		r = parse_line(line.data + start, lineno, &p, &voff, reterr_msg);
		if (r < 0)
			return r;
		voff += start;
		/* Each line and each parameter is an allocation of its own, tens of bytes for as
		 * few as four of input: their number is capped, not only the size. */
		n_lines += 1 + p.n_params;
		if (n_lines > KS_CARD_MAX_LINES)
			return ks_set_error(reterr_msg, -EFBIG,
					     "vCard has more than %d lines and parameters",
					     KS_CARD_MAX_LINES);

		/* vCard 2.1 quoted-printable: a value ending in '=' (a soft line break) continues
		 * on the next line, which is not folded. */
		if (prop_is_qp(&p))
			while (line.len > voff && line.data[line.len - 1] == '=') {
				line.data[--line.len] = 0;
				r = reader_next(&rd, &line);
				if (r < 0)
					return r;
				if (r == 0)
					break;
			}

		const char *value = line.data + voff;
		bool begin = ks_streq_nocase(p.name, "BEGIN") && word_eq(value, "VCARD");
		bool end = ks_streq_nocase(p.name, "END") && word_eq(value, "VCARD");

		if (!card) {
			if (!begin)
				return ks_set_error(reterr_msg, -EBADMSG, "line %u: content "
						     "outside BEGIN:VCARD and END:VCARD", lineno);
			ks_vcard *nc = ks_array_grow(cards.v, &cards_cap, cards.n, sizeof(*nc));
			if (!nc)
				return -ENOMEM;
			cards.v = nc;
			card = &cards.v[cards.n++];
			*card = (ks_vcard) {};
			props_cap = 0;
			continue;
		}

		/* A vCard 2.1 AGENT may embed a whole card; it is not a property of this one. */
		if (nested > 0) {
			if (begin)
				nested++;
			else if (end)
				nested--;
			continue;
		}
		if (begin) {
			nested = 1;
			continue;
		}
		if (end) {
			card = NULL;
			continue;
		}
		if (ks_streq_nocase(p.name, "VERSION") && !card->version) {
			card->version = strndup_trim(value, strlen(value));
			if (!card->version)
				return -ENOMEM;
			continue;
		}

		p.value = strdup(value);
		if (!p.value)
			return -ENOMEM;
		ks_vcard_prop *np = ks_array_grow(card->props, &props_cap, card->n_props, sizeof(*np));
		if (!np)
			return -ENOMEM;
		card->props = np;
		card->props[card->n_props++] = p;
		p = (ks_vcard_prop) {};
	}

	if (card)
		return ks_set_error(reterr_msg, -EBADMSG, "vCard %zu is not closed by END:VCARD",
				     cards.n);
	if (cards.n == 0)
		return ks_set_error(reterr_msg, -EBADMSG, "no vCard found");

	*ret_n = cards.n;
	*ret = TAKE_PTR(cards.v);
	cards.n = 0;
	return 0;
}

/* ---- item info --------------------------------------------------------------------------- */

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes a quoted-printable value. Old phones write such values in their own charset; text
 * that is not UTF-8 after decoding is taken as Latin-1, which every byte string is. */
static char *qp_decode(const char *s)
{
	size_t n = 0;
	_cleanup_free_ char *out = malloc(strlen(s) + 1);

	if (!out)
		return NULL;
	for (; *s; s++) {
		int hi, lo;

		/* "=00" stays as written: a NUL would cut the string short. */
		if (s[0] == '=' && (hi = unhex(s[1])) >= 0 && (lo = unhex(s[2])) >= 0 &&
		    (hi | lo)) {
			out[n++] = (char) (hi << 4 | lo);
			s += 2;
		} else
			out[n++] = *s;
	}
	out[n] = 0;
	if (ks_item_utf8_valid(out, n, false, NULL))
		return TAKE_PTR(out);

	size_t high = 0;
	for (size_t i = 0; i < n; i++)
		if ((uint8_t) out[i] >= 0x80)
			high++;
	char *u = malloc(n + high + 1), *o = u;
	if (!u)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t) out[i];

		if (c < 0x80)
			*o++ = (char) c;
		else {
			*o++ = (char) (0xc0 | c >> 6);
			*o++ = (char) (0x80 | (c & 0x3f));
		}
	}
	*o = 0;
	return u;
}

/* The value of p with transfer encoding undone, still escaped. */
static char *prop_raw(const ks_vcard_prop *p)
{
	return prop_is_qp(p) ? qp_decode(p->value) : strdup(p->value);
}

/* s[0..n) unescaped and trimmed, into *ret; NULL when that leaves nothing. */
static int text_of(const char *s, size_t n, char **ret)
{
	_cleanup_free_ char *e = strndup(s, n), *u = NULL;

	if (!e)
		return -ENOMEM;
	u = ks_vcard_unescape(e);
	if (!u)
		return -ENOMEM;
	size_t un = strlen(u);
	const char *t = u;
	while (ks_is_space(*t)) {
		t++;
		un--;
	}
	while (un > 0 && ks_is_space(t[un - 1]))
		un--;
	if (un == 0) {
		*ret = NULL;
		return 0;
	}
	*ret = strndup(t, un);
	return *ret ? 0 : -ENOMEM;
}

/* The text of a property: decoded, unescaped, trimmed; NULL when empty or when p is NULL. */
static int prop_text(const ks_vcard_prop *p, char **ret)
{
	_cleanup_free_ char *raw = NULL;

	if (!p) {
		*ret = NULL;
		return 0;
	}
	raw = prop_raw(p);
	if (!raw)
		return -ENOMEM;
	return text_of(raw, strlen(raw), ret);
}

/* "Given Family" from N (Family;Given;Additional;Prefixes;Suffixes), for cards without FN. */
static int name_from_n(const ks_vcard_prop *p, char **ret)
{
	_cleanup_free_ char *raw = NULL, *family = NULL, *given = NULL;
	const char *part[2] = {};
	size_t part_len[2] = {}, k = 0;
	int r;

	raw = prop_raw(p);
	if (!raw)
		return -ENOMEM;
	/* Split at each ';' that is not escaped. */
	for (const char *s = raw, *start = raw; k < 2; s++) {
		if (s[0] == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == ';' || !*s) {
			part[k] = start;
			part_len[k] = (size_t) (s - start);
			k++;
			if (!*s)
				break;
			start = s + 1;
		}
	}
	if (part[0]) {
		r = text_of(part[0], part_len[0], &family);
		if (r < 0)
			return r;
	}
	if (part[1]) {
		r = text_of(part[1], part_len[1], &given);
		if (r < 0)
			return r;
	}
	if (given && family) {
		if (asprintf(ret, "%s %s", given, family) < 0)
			return -ENOMEM;
	} else
		*ret = given ? TAKE_PTR(given) : TAKE_PTR(family);
	return 0;
}

/* 1 when every UID line of card has the same value (or there is at most one), else 0. */
static int uid_lines_agree(const ks_vcard *card)
{
	_cleanup_free_ char *first = NULL;
	int r;

	for (size_t i = 0; i < card->n_props; i++) {
		_cleanup_free_ char *uid = NULL;

		if (!ks_streq_nocase(card->props[i].name, "UID"))
			continue;
		r = prop_text(&card->props[i], &uid);
		if (r < 0)
			return r;
		if (!uid)
			continue;
		if (!first)
			first = TAKE_PTR(uid);
		else if (strcmp(first, uid) != 0)
			return 0;
	}
	return 1;
}

int ks_vcard_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg)
{
	_cleanup_(card_list_done) card_list cards = {};
	_cleanup_(ks_item_info_done) ks_item_info info = { .kind = KS_ITEM_VCARD };
	const ks_vcard *first = NULL;
	size_t no_uid = 0;
	int r;

	assert(ret);
	r = ks_vcard_parse(data, len, &cards.v, &cards.n, reterr_msg);
	if (r < 0)
		return r;

	for (size_t i = 0; i < cards.n; i++) {
		_cleanup_free_ char *uid = NULL;

		r = prop_text(ks_vcard_get(&cards.v[i], "UID"), &uid);
		if (r < 0)
			return r;
		if (!uid)
			no_uid++;
		else if (!info.uid) {
			info.uid = TAKE_PTR(uid);
			first = &cards.v[i];
		} else if (strcmp(info.uid, uid) != 0)
			return ks_set_error(reterr_msg, -ENOTUNIQ, "vCards with different UIDs");
		/* UID may appear once per card (RFC 6350 6.7.6): a card with two different
		 * ones has no identity a file name or a merge could rely on. */
		r = uid_lines_agree(&cards.v[i]);
		if (r < 0)
			return r;
		if (r == 0)
			return ks_set_error(reterr_msg, -ENOTUNIQ, "a vCard with several UIDs");
	}
	if (!info.uid)
		return ks_set_error(reterr_msg, -ENODATA, "vCard has no UID");
	if (no_uid > 0)
		return ks_set_error(reterr_msg, -ENOTUNIQ, "%zu of %zu vCards have no UID", no_uid,
				     cards.n);

	r = prop_text(ks_vcard_get(first, "FN"), &info.summary);
	if (r < 0)
		return r;
	if (!info.summary) {
		const ks_vcard_prop *n = ks_vcard_get(first, "N");
		if (n) {
			r = name_from_n(n, &info.summary);
			if (r < 0)
				return r;
		}
	}
	r = prop_text(ks_vcard_get(first, "EMAIL"), &info.email);
	if (r < 0)
		return r;

	*ret = info;
	info = (ks_item_info) {};
	return 0;
}

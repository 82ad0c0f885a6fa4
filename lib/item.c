/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf_p.h"
#include "ical_p.h"
#include "item_p.h"
#include "vcard_p.h"
#include "limits.h"
#include "text_p.h"

void ks_item_info_done(ks_item_info *i)
{
	if (!i)
		return;
	free(i->uid);
	free(i->summary);
	free(i->email);
	free(i->dtstart);
	free(i->dtend);
	free(i->due);
	free(i->status);
	*i = (ks_item_info) {};
}

static const char *const item_kind_table[_KS_ITEM_MAX] = {
	[KS_ITEM_VCARD] = "VCARD",
	[KS_ITEM_VEVENT] = "VEVENT",
	[KS_ITEM_VTODO] = "VTODO",
	[KS_ITEM_VJOURNAL] = "VJOURNAL",
};

const char *ks_item_kind_to_string(ks_item_kind k)
{
	if ((int) k < 0 || k >= _KS_ITEM_MAX)
		return NULL;
	return item_kind_table[k];
}

ks_item_kind ks_item_kind_from_string(const char *s)
{
	if (!s)
		return _KS_ITEM_INVALID;
	for (size_t k = 0; k < _KS_ITEM_MAX; k++) {
		const char *w = item_kind_table[k];
		if (strlen(s) == strlen(w) && ks_has_prefix_nocase(s, strlen(s), w))
			return (ks_item_kind) k;
	}
	return _KS_ITEM_INVALID;
}

/* Skips the line folds at s[i], if any; a continuation line may hold nothing but its blank. */
static size_t skip_folds(const char *s, size_t len, size_t i)
{
	for (;;) {
		if (i + 2 < len && s[i] == '\r' && s[i + 1] == '\n' &&
		    (s[i + 2] == ' ' || s[i + 2] == '\t'))
			i += 3;
		else if (i + 1 < len && s[i] == '\n' && (s[i + 1] == ' ' || s[i + 1] == '\t'))
			i += 2;
		else
			return i;
	}
}

bool ks_item_utf8_valid(const char *s, size_t len, bool folded, size_t *ret_bad)
{
	size_t i = 0;

	assert(s || len == 0);
	while (i < len) {
		const size_t start = i;
		uint8_t c = (uint8_t) s[i++];
		uint32_t cp, min;
		unsigned more;

		if (c == 0)
			goto bad;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf) {
			more = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			more = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			more = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			/* A continuation byte, 0xc0 or 0xc1 (always overlong), or past 0xf4. */
			goto bad;
		}

		for (unsigned k = 0; k < more; k++) {
			if (folded)
				i = skip_folds(s, len, i);
			if (i >= len || ((uint8_t) s[i] & 0xc0) != 0x80)
				goto bad;
			cp = cp << 6 | ((uint8_t) s[i++] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			goto bad;
		continue;
bad:
		if (ret_bad)
			*ret_bad = start;
		return false;
	}
	return true;
}

int ks_item_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg)
{
	size_t i = 0;

	assert(data || len == 0);
	assert(ret);

	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	while (i < len && ks_is_space(data[i]))
		i++;
	if (i == len)
		return ks_set_error(reterr_msg, -EBADMSG, "empty item");

	/* The word must end there, so that "BEGIN:VCARDX" is not taken for a vCard. */
	const char *p = data + i;
	size_t n = len - i;
	static const struct {
		const char *begin;
		int (*parse)(const char *, size_t, ks_item_info *, char **);
	} kinds[] = {
		{ "BEGIN:VCARD", ks_vcard_parse_info },
		{ "BEGIN:VCALENDAR", ks_ical_parse_info },
	};
	for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
		size_t bl = strlen(kinds[k].begin);

		if (!ks_has_prefix_nocase(p, n, kinds[k].begin))
			continue;
		if (n > bl && !ks_is_space(p[bl]))
			continue;
		return kinds[k].parse(data, len, ret, reterr_msg);
	}
	return ks_set_error(reterr_msg, -EBADMSG, "not a vCard or iCalendar object");
}

/* Inserts "UID:uid" after the line that opens each event, task or journal entry, and in a card
 * after its VERSION line (RFC 6350 3.7.9 wants VERSION right after BEGIN), or before END:VCARD
 * when it has none, with the line ending the object already uses; the rest stays byte for
 * byte. */
static int add_uid(const char *data, size_t len, const char *uid, ks_buf *b)
{
	static const char *const openers[] = { "BEGIN:VEVENT", "BEGIN:VTODO", "BEGIN:VJOURNAL" };
	const char *nl = memchr(data, '\n', len);
	const char *eol = nl && nl > data && nl[-1] == '\r' ? "\r\n" : "\n";
	bool in_card = false;
	size_t pos = 0;
	int r = 0;

	while (r >= 0 && pos < len) {
		const char *e = memchr(data + pos, '\n', len - pos);
		size_t end = e ? (size_t) (e - data) + 1 : len;
		size_t l = end - pos;
		bool after = false;
		while (l > 0 && (data[pos + l - 1] == '\n' || data[pos + l - 1] == '\r'))
			l--;
		if (in_card && l == 9 && strncasecmp(data + pos, "END:VCARD", 9) == 0) {
			r = ks_buf_printf(b, "UID:%s%s", uid, eol);
			in_card = false;
		} else if (in_card && l >= 8 && strncasecmp(data + pos, "VERSION:", 8) == 0) {
			after = true;
			in_card = false;
		} else if (l == 11 && strncasecmp(data + pos, "BEGIN:VCARD", 11) == 0)
			in_card = true;
		for (size_t i = 0; i < ELEMENTSOF(openers); i++)
			after |= l == strlen(openers[i]) &&
				 strncasecmp(data + pos, openers[i], l) == 0;
		if (r >= 0)
			r = ks_buf_append(b, data + pos, end - pos);
		if (r >= 0 && after) {
			if (!e)
				r = ks_buf_puts(b, eol);
			if (r >= 0)
				r = ks_buf_printf(b, "UID:%s%s", uid, eol);
		}
		pos = end;
	}
	return r;
}

/* End of the logical line starting at pos: past its line end and every folded continuation. */
static size_t logical_end(const char *s, size_t len, size_t pos)
{
	for (;;) {
		const char *e = memchr(s + pos, '\n', len - pos);
		if (!e)
			return len;
		pos = (size_t) (e - s) + 1;
		if (pos >= len || (s[pos] != ' ' && s[pos] != '\t'))
			return pos;
	}
}

/* Whether the logical line s[0..n) is a UID property (no group, parameters allowed) whose
 * value, unfolded, is uid. */
static bool is_uid_line(const char *s, size_t n, const char *uid)
{
	if (!ks_has_prefix_nocase(s, n, "UID") || n < 4 || (s[3] != ':' && s[3] != ';'))
		return false;
	const char *colon = memchr(s, ':', n);
	if (!colon)
		return false;
	size_t i = (size_t) (colon - s) + 1, k = 0, ul = strlen(uid);
	while (i < n) {
		if (s[i] == '\r' || s[i] == '\n') {
			size_t j = i + (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1);
			if (j < n && (s[j] == ' ' || s[j] == '\t')) {
				i = j + 1;	/* a fold */
				continue;
			}
			break;	/* the line's end */
		}
		if (k >= ul || s[i] != uid[k])
			return false;
		i++;
		k++;
	}
	return k == ul;
}

int ks_item_set_uid(const char *data, size_t len, const char *old_uid, const char *uid,
		    char **ret, size_t *ret_len)
{
	ks_buf b = { .max = KS_CARD_MAX };
	size_t pos = 0;
	int r = 0;

	assert(data && uid && ret && ret_len);
	if (!old_uid)
		r = add_uid(data, len, uid, &b);
	else
		while (r >= 0 && pos < len) {
			size_t end = logical_end(data, len, pos);
			if (!is_uid_line(data + pos, end - pos, old_uid)) {
				r = ks_buf_append(&b, data + pos, end - pos);
				pos = end;
				continue;
			}
			const char *eol = end > pos && data[end - 1] == '\n'
						  ? (end - pos >= 2 && data[end - 2] == '\r' ? "\r\n"
											: "\n")
						  : "";
			r = ks_buf_printf(&b, "UID:%s%s", uid, eol);
			pos = end;
		}
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	*ret_len = b.len;
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

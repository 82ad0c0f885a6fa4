/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ical_p.h"
#include "item_p.h"
#include "vcard_p.h"
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

/* SPDX-License-Identifier: MIT */
/* ks_ical_parse_info() (libical underneath) on arbitrary bytes; on success the kind, the UID
 * and the normalised times must be what item_p.h promises. */

#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "ical_p.h"

/* Whether s follows pattern, where 'D' stands for a digit and any other character for itself. */
static int shape(const char *s, const char *pattern)
{
	if (strlen(s) != strlen(pattern))
		return 0;
	for (; *s; s++, pattern++) {
		if (*pattern == 'D' ? !isdigit((unsigned char) *s) : *s != *pattern)
			return 0;
	}
	return 1;
}

static int field(const char *s, size_t off)
{
	return (s[off] - '0') * 10 + (s[off + 1] - '0');
}

/* A date, or a date and time, in one of the three forms item_p.h names, with every field in
 * its range (a leap second allowed). */
static void check_time(const char *what, const char *t)
{
	if (!t)
		return;
	int ok = shape(t, "DDDD-DD-DD") || shape(t, "DDDD-DD-DDTDD:DD:DD") ||
		 shape(t, "DDDD-DD-DDTDD:DD:DDZ");
	if (ok)
		ok = field(t, 5) >= 1 && field(t, 5) <= 12 && field(t, 8) >= 1 && field(t, 8) <= 31;
	if (ok && t[10] == 'T')
		ok = field(t, 11) <= 23 && field(t, 14) <= 59 && field(t, 17) <= 60;
	if (!ok) {
		fprintf(stderr, "%s is not a normalised time: '%s'\n", what, t);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	ks_item_info info = {};
	char *err = NULL;
	int r;

	r = ks_ical_parse_info(text, size, &info, &err);
	if (r >= 0) {
		fuzz_check(info.kind == KS_ITEM_VEVENT || info.kind == KS_ITEM_VTODO ||
			   info.kind == KS_ITEM_VJOURNAL);
		fuzz_check(info.uid);
		check_time("dtstart", info.dtstart);
		check_time("dtend", info.dtend);
		check_time("due", info.due);
		if (info.summary)
			(void) strlen(info.summary);
		if (info.status)
			(void) strlen(info.status);
		ks_item_info_done(&info);
	} else
		fuzz_check(r == -EBADMSG || r == -ENODATA || r == -ENOTUNIQ || r == -EFBIG ||
			   r == -ENOMEM);
	free(err);
	err = NULL;

	/* The dispatcher in front of both parsers, as the sync engine calls it. */
	r = ks_item_parse_info(text, size, &info, &err);
	if (r >= 0)
		ks_item_info_done(&info);
	free(err);
	return 0;
}

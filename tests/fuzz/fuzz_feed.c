/* SPDX-License-Identifier: MIT */
/* ks_feed_split() (libical underneath) on arbitrary bytes, as a calendar subscription's
 * server may send them. On success every item must be an iCalendar object the engine takes
 * (ks_ical_parse_info()) holding its own UID and no other, its href must lie under the
 * collection with a safe name, and the hrefs must be sorted and distinct. */

#include <errno.h>
#include <string.h>

#include "feed_p.h"
#include "fuzz.h"
#include "ical_p.h"
#include "limits.h"

#define COLL "/cal/holidays/"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ks_feed_item *items = NULL;
	size_t n = 0;
	char *why = NULL;
	int r = ks_feed_split(COLL, (const char *) data, size, &items, &n, &why);

	if (r < 0) {
		fuzz_check(r == -EBADMSG || r == -EFBIG || r == -ENOMEM);
		fuzz_check(r == -ENOMEM || why);
		free(why);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const ks_feed_item *it = &items[i];
		const char *name = it->href + strlen(COLL);
		ks_item_info info = {};
		char *err = NULL;

		fuzz_check(strncmp(it->href, COLL, strlen(COLL)) == 0);
		fuzz_check(strlen(name) > 4 && strcmp(name + strlen(name) - 4, ".ics") == 0);
		fuzz_check(!strchr(name, '/') && name[0] != '.');
		fuzz_check(i == 0 || strcmp(items[i - 1].href, it->href) < 0);
		fuzz_check(it->len == strlen(it->data) && it->len <= KS_CARD_MAX);
		fuzz_check(it->etag[0] == '"' && strlen(it->etag) == 42);
		if (ks_ical_parse_info(it->data, it->len, &info, &err) == 0) {
			fuzz_check(info.uid && strcmp(info.uid, it->uid) == 0);
			ks_item_info_done(&info);
		}
		free(err);
	}
	ks_feed_items_free(items, n);
	return 0;
}

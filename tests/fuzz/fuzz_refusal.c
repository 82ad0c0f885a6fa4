/* SPDX-License-Identifier: MIT */
/* The words for a server's refusal of an item. The input is "body" or "body\0item": an error
 * body as a server sends it, and the item it refused. The reason must be one line of text that
 * a message can carry: no control characters, valid UTF-8, bounded. */

#include <string.h>

#include "fuzz.h"
#include "item_p.h"
#include "refusal_p.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *) data;
	const char *nul = memchr(data, 0, size);
	size_t body_len = nul ? (size_t) (nul - body) : size;
	const char *item = nul ? nul + 1 : NULL;
	size_t item_len = nul ? size - body_len - 1 : 0;
	char *why = NULL;

	if (ks_refusal_reason(403, body, body_len, item, item_len, &why) < 0)
		return 0;
	fuzz_check(why && strlen(why) < 1024);
	for (const char *p = why; *p; p++)
		fuzz_check((unsigned char) *p >= 0x20 && *p != 0x7f);
	fuzz_check(ks_item_utf8_valid(why, strlen(why), false, NULL));
	free(why);
	return 0;
}

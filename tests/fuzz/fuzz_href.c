/* SPDX-License-Identifier: MIT */
/* Mapping server hrefs to the canonical key and to file and directory names. The input is
 * "href", "href\0uid" or "href\0uid\0base_url" (an empty base_url means none; without one,
 * https://dav.example.com/dav/ is the account URL). ks_href_normalize() must be idempotent
 * and its result free of the things it refuses; the vdir names must always be safe. */

#include <errno.h>
#include <string.h>

#include "dav_p.h"
#include "fuzz.h"
#include "vdir_p.h"

static void check_canonical(const char *h)
{
	fuzz_check(h[0] == '/');
	fuzz_check(!strstr(h, "//"));
	fuzz_check(!strpbrk(h, "?# \t\r\n"));
	for (const char *seg = h; seg; seg = strchr(seg + 1, '/')) {
		size_t l = strcspn(seg + 1, "/");
		fuzz_check(!(l == 1 && seg[1] == '.'));
		fuzz_check(!(l == 2 && seg[1] == '.' && seg[2] == '.'));
	}
}

static void check_collection_name(const char *href, int must_be_safe)
{
	char *name = NULL;

	if (ks_vdir_collection_name(href, &name) < 0)
		return;
	if (must_be_safe && !ks_vdir_name_is_safe(name)) {
		fprintf(stderr, "unsafe collection name '%s' from href '%s'\n", name, href);
		abort();
	}
	free(name);
}

static void check_item_name(const char *uid, const char *href)
{
	char *name = NULL;

	if (ks_vdir_item_name(uid, href, &name) < 0)
		return;
	if (!ks_vdir_name_is_safe(name)) {
		fprintf(stderr, "unsafe item name '%s' from uid '%s', href '%s'\n", name,
			uid ? uid : "(null)", href ? href : "(null)");
		abort();
	}
	free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The parts are C strings: a NUL ends each, as it would end a string from the XML. */
	char *buf = malloc(size + 3);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	memset(buf + size, 0, 3);

	const char *href = buf, *uid = NULL, *base = "https://dav.example.com/dav/";
	size_t hl = strlen(href);
	if (hl < size) {
		uid = href + hl + 1;
		size_t ul = strlen(uid);
		if (hl + 1 + ul < size) {
			base = uid + ul + 1;
			if (!*base)
				base = NULL;
		}
	}

	char *n1 = NULL;
	int r = ks_href_normalize(base, href, &n1);
	if (r >= 0) {
		check_canonical(n1);
		char *n2 = NULL;
		fuzz_check(ks_href_normalize(base, n1, &n2) >= 0);
		if (strcmp(n1, n2) != 0) {
			fprintf(stderr, "not idempotent: '%s' -> '%s' -> '%s'\n", href, n1, n2);
			abort();
		}
		free(n2);
		check_collection_name(n1, 1);
		check_item_name(uid, n1);
		check_item_name(NULL, n1);

		char *bn = NULL;
		if (ks_href_basename(n1, &bn) >= 0)
			free(bn);
		free(n1);
	} else
		fuzz_check(r == -EINVAL || r == -ENOMEM || r == -EFBIG);

	/* Raw hrefs, as a caller that forgot to normalise would pass them: no memory error,
	 * and an item name is still always safe. */
	check_collection_name(href, 0);
	check_item_name(uid, href);
	free(buf);
	return 0;
}

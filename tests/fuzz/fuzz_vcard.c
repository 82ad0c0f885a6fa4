/* SPDX-License-Identifier: MIT */
/* ks_vcard_parse() and ks_vcard_parse_info() on arbitrary bytes, with the structure each
 * promises checked on success. */

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "vcard_p.h"

static void check_upper(const char *s)
{
	fuzz_check(s);
	for (; *s; s++)
		fuzz_check(!islower((unsigned char) *s));
}

static void check_card(const ks_vcard *card)
{
	if (card->version)
		(void) strlen(card->version);
	for (size_t i = 0; i < card->n_props; i++) {
		const ks_vcard_prop *p = &card->props[i];

		check_upper(p->name);
		if (p->group)
			(void) strlen(p->group);
		fuzz_check(p->value);

		const ks_vcard_prop *first = ks_vcard_get(card, p->name);
		fuzz_check(first && strcasecmp(first->name, p->name) == 0);

		for (size_t j = 0; j < p->n_params; j++) {
			check_upper(p->params[j].name);
			if (p->params[j].value)
				(void) strlen(p->params[j].value);
			(void) ks_vcard_param_get(p, p->params[j].name);
		}
		free(ks_vcard_unescape(p->value));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	ks_vcard *cards = NULL;
	size_t n = 0;
	char *err = NULL;
	int r;

	r = ks_vcard_parse(text, size, &cards, &n, &err);
	if (r >= 0) {
		fuzz_check(cards && n > 0);
		for (size_t i = 0; i < n; i++)
			check_card(&cards[i]);
		ks_vcard_free_array(cards, n);
	}
	free(err);
	err = NULL;

	ks_item_info info = {};
	int k = ks_vcard_parse_info(text, size, &info, &err);
	if (k >= 0) {
		fuzz_check(r >= 0);
		fuzz_check(info.kind == KS_ITEM_VCARD);
		fuzz_check(info.uid);
		ks_item_info_done(&info);
	} else
		fuzz_check(k == -EBADMSG || k == -ENODATA || k == -ENOTUNIQ || k == -EFBIG ||
			   k == -ENOMEM);
	free(err);
	return 0;
}

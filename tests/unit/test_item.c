/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "item_p.h"
#include "macro.h"

static const struct {
	const char *name;
	const char *in;
	const char *old_uid;	/* NULL: insert */
	const char *want;
} set_uid_cases[] = {
	{ "vcard, CRLF",
	  "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:A\r\nEND:VCARD\r\n", "a",
	  "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:new\r\nFN:A\r\nEND:VCARD\r\n" },
	{ "vcard, LF, lower-case name, parameter",
	  "BEGIN:VCARD\nVERSION:4.0\nuid;VALUE=text:a\nFN:A\nEND:VCARD\n", "a",
	  "BEGIN:VCARD\nVERSION:4.0\nUID:new\nFN:A\nEND:VCARD\n" },
	{ "folded UID line",
	  "BEGIN:VCARD\r\nUID:abc\r\n def\r\nFN:A\r\nEND:VCARD\r\n", "abcdef",
	  "BEGIN:VCARD\r\nUID:new\r\nFN:A\r\nEND:VCARD\r\n" },
	{ "another value is left alone (a VALARM's own UID)",
	  "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:e\r\nBEGIN:VALARM\r\nUID:alarm\r\n"
	  "END:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "e",
	  "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:new\r\nBEGIN:VALARM\r\nUID:alarm\r\n"
	  "END:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n" },
	{ "an override with RECURRENCE-ID follows its series",
	  "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:e\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n"
	  "BEGIN:VEVENT\r\nUID:e\r\nRECURRENCE-ID:20240102T100000Z\r\nEND:VEVENT\r\n"
	  "END:VCALENDAR\r\n", "e",
	  "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:new\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n"
	  "BEGIN:VEVENT\r\nUID:new\r\nRECURRENCE-ID:20240102T100000Z\r\nEND:VEVENT\r\n"
	  "END:VCALENDAR\r\n" },
	{ "a prefix of the UID is another UID",
	  "BEGIN:VCARD\r\nUID:ab\r\nEND:VCARD\r\n", "a",
	  "BEGIN:VCARD\r\nUID:ab\r\nEND:VCARD\r\n" },
	{ "UIDX is no UID",
	  "BEGIN:VCARD\r\nUIDX:a\r\nUID:a\r\nEND:VCARD\r\n", "a",
	  "BEGIN:VCARD\r\nUIDX:a\r\nUID:new\r\nEND:VCARD\r\n" },
	{ "last line without line end",
	  "BEGIN:VCARD\r\nFN:A\r\nUID:a", "a",
	  "BEGIN:VCARD\r\nFN:A\r\nUID:new" },
	{ "insert after VERSION, CRLF",
	  "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:A\r\nEND:VCARD\r\n", NULL,
	  "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:new\r\nFN:A\r\nEND:VCARD\r\n" },
	{ "insert into a card without VERSION",
	  "BEGIN:VCARD\nFN:A\nEND:VCARD", NULL,
	  "BEGIN:VCARD\nFN:A\nUID:new\nEND:VCARD" },
	{ "insert into each event",
	  "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\nBEGIN:VTODO\nEND:VTODO\n"
	  "END:VCALENDAR\n", NULL,
	  "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:new\nSUMMARY:x\nEND:VEVENT\nBEGIN:VTODO\nUID:new\n"
	  "END:VTODO\nEND:VCALENDAR\n" },
};

static void test_set_uid(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(set_uid_cases); i++) {
		char *out = NULL;
		size_t len = 0;

		print_message("%s\n", set_uid_cases[i].name);
		assert_int_equal(ks_item_set_uid(set_uid_cases[i].in, strlen(set_uid_cases[i].in),
						 set_uid_cases[i].old_uid, "new", &out, &len), 0);
		assert_int_equal(len, strlen(out));
		assert_string_equal(out, set_uid_cases[i].want);
		free(out);
	}
}

static void test_set_uid_result_parses(void **state)
{
	static const char card[] = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:old\r\nFN:A\r\nN:A;;;;\r\n"
				   "END:VCARD\r\n";
	ks_item_info info = {};
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(ks_item_set_uid(card, strlen(card), "old", "fresh", &out, &len), 0);
	assert_int_equal(ks_item_parse_info(out, len, &info, NULL), 0);
	assert_string_equal(info.uid, "fresh");
	ks_item_info_done(&info);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_uid),
		cmocka_unit_test(test_set_uid_result_parses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

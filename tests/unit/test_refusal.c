/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "refusal_p.h"
#include "xml_p.h"

#define CARD3_NO_N "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:A\r\nEND:VCARD\r\n"
#define CARD3 "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:a\r\nFN:A\r\nN:A;;;;\r\nEND:VCARD\r\n"
#define CARD4_NO_FN "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:a\r\nEND:VCARD\r\n"
#define EVENT_BOTH "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:e\r\nDTSTART:20240101T100000Z\r\n" \
	"DTEND:20240101T110000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
#define EVENT_AND_TODO "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:e\r\nEND:VEVENT\r\n" \
	"BEGIN:VTODO\r\nUID:e\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
#define ERR(ns, cond, extra) "<?xml version=\"1.0\"?><d:error xmlns:d=\"DAV:\" xmlns:x=\"" ns \
	"\"><x:" cond "/>" extra "</d:error>"
#define CARDDAV "urn:ietf:params:xml:ns:carddav"
#define CALDAV "urn:ietf:params:xml:ns:caldav"
/* Xandikos answers a PUT whose UID another item has so. */
#define MS(status, inner) "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\">" \
	"<d:response><d:href>/c/ok.ics</d:href><d:status>HTTP/1.1 200 OK</d:status></d:response>" \
	"<d:response><d:href>/c/x.ics</d:href><d:status>HTTP/1.1 " status "</d:status>" inner \
	"</d:response></d:multistatus>"
#define SABRE(msg) "<?xml version=\"1.0\"?><d:error xmlns:d=\"DAV:\" " \
	"xmlns:s=\"http://sabredav.org/ns\"><s:exception>X</s:exception><s:message>" msg \
	"</s:message></d:error>"

static void test_reasons(void **state)
{
	static const struct {
		long status;
		const char *body;
		const char *item;
		const char *want;
	} cases[] = {
		{ 403, ERR(CARDDAV, "valid-address-data", ""), CARD3_NO_N,
		  "a vCard 3.0 needs an N property (CARDDAV:valid-address-data)" },
		{ 403, ERR(CARDDAV, "valid-address-data", ""), CARD4_NO_FN,
		  "a vCard needs an FN property (CARDDAV:valid-address-data)" },
		{ 403, ERR(CARDDAV, "valid-address-data", ""), CARD3,
		  "the server does not take this vCard as valid (CARDDAV:valid-address-data)" },
		{ 403, ERR(CALDAV, "supported-calendar-component", ""), EVENT_BOTH,
		  "this calendar does not take this kind of item (a task in a calendar of events, "
		  "or the other way round) (CALDAV:supported-calendar-component)" },
		{ 400, NULL, EVENT_BOTH, "DTEND and DURATION together (HTTP 400)" },
		{ 400, SABRE("The object holds a VEVENT and a VTODO"), EVENT_AND_TODO,
		  "it holds an event and a task: one object holds one kind of item: The object "
		  "holds a VEVENT and a VTODO" },
		{ 415, SABRE("Property  name\n X_Y   invalid"), CARD3,
		  "HTTP 415 Unsupported Media Type: Property name X_Y invalid" },
		{ 409, ERR(CALDAV, "no-uid-conflict", "<d:responsedescription>UID taken by /c/x.ics"
						      "</d:responsedescription>"), NULL,
		  "another item on the server has this UID (CALDAV:no-uid-conflict): UID taken by "
		  "/c/x.ics" },
		{ 403, ERR("DAV:", "need-privileges", ""), CARD3,
		  "no permission to write here (DAV:need-privileges)" },
		{ 403, ERR("urn:example", "odd", ""), CARD3, "HTTP 403 Forbidden" },
		{ 403, ERR(CALDAV, "something-new", ""), CARD3,
		  "HTTP 403 Forbidden (CALDAV:something-new)" },
		{ 403, "<html><body>Forbidden</body></html>", CARD3, "HTTP 403 Forbidden" },
		{ 403, "<!DOCTYPE d:error [<!ENTITY x \"y\">]><d:error xmlns:d=\"DAV:\">&x;</d:error>",
		  CARD3, "HTTP 403 Forbidden" },
		{ 207, MS("412 Precondition Failed", "<d:error><x:no-uid-conflict xmlns:x=\""
			  CALDAV "\"><d:href>/c/one.ics</d:href></x:no-uid-conflict></d:error>"),
		  NULL, "another item on the server has this UID (CALDAV:no-uid-conflict)" },
		{ 207, MS("403 Forbidden", "<d:responsedescription>read-only"
			  "</d:responsedescription>"), NULL,
		  "HTTP 403 Forbidden in a multistatus: read-only" },
		{ 207, MS("200 OK", ""), NULL, "HTTP 207 Multi-Status" },
		{ 422, NULL, NULL, "HTTP 422 Unprocessable Content" },
		{ 418, NULL, NULL, "HTTP 418" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *why = NULL;
		int r = ks_refusal_reason(cases[i].status, cases[i].body,
					  cases[i].body ? strlen(cases[i].body) : 0, cases[i].item,
					  cases[i].item ? strlen(cases[i].item) : 0, &why);

		assert_int_equal(r, 0);
		if (strcmp(why, cases[i].want) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, why, cases[i].want);
		free(why);
	}
}

static void test_item_status(void **state)
{
	static const long item[] = { 400, 403, 405, 409, 410, 413, 415, 422 };
	static const long not_item[] = { 200, 401, 404, 407, 408, 412, 429, 500, 503 };

	for (size_t i = 0; i < ELEMENTSOF(item); i++)
		assert_true(ks_refusal_is_item_status(item[i]));
	for (size_t i = 0; i < ELEMENTSOF(not_item); i++)
		assert_false(ks_refusal_is_item_status(not_item[i]));
}

static void test_error_body_text_is_one_safe_line(void **state)
{
	static const char body[] = "<?xml version=\"1.0\"?><d:error xmlns:d=\"DAV:\">"
				   "<d:responsedescription>line one\r\n\tline   two "
				   "\xc3\xa9</d:responsedescription></d:error>";
	ks_xml_error e = {};

	assert_int_equal(ks_xml_error_body(body, strlen(body), &e), 0);
	assert_string_equal(e.text, "line one line two \xc3\xa9");
	assert_string_equal(e.precondition, "");
	ks_xml_error_done(&e);
	/* A long text is cut at 300 bytes, never inside a character. */
	char big[2048];
	int n = snprintf(big, sizeof(big), "<d:error xmlns:d=\"DAV:\"><d:responsedescription>");
	for (int i = 0; i < 400; i++)
		n += snprintf(big + n, sizeof(big) - (size_t) n, "\xc3\xa9");
	snprintf(big + n, sizeof(big) - (size_t) n, "</d:responsedescription></d:error>");
	assert_int_equal(ks_xml_error_body(big, strlen(big), &e), 0);
	assert_int_equal(strlen(e.text), 300);
	ks_xml_error_done(&e);
	/* Control characters make no XML document. */
	assert_int_equal(ks_xml_error_body("<d:error xmlns:d=\"DAV:\">\x1b</d:error>", 35, &e),
			 -EBADMSG);
	assert_int_equal(ks_xml_error_body("", 0, &e), -EBADMSG);
	assert_int_equal(ks_xml_error_body("<a/>", 4, &e), -EBADMSG);
}

static void test_multistatus_failure(void **state)
{
	/* The first response reporting a failure counts, in its status or a propstat's. */
	static const char props[] = "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/a"
				    "</d:href><d:propstat><d:prop/><d:status>HTTP/1.1 200 OK"
				    "</d:status></d:propstat><d:propstat><d:prop/><d:status>"
				    " HTTP/1.1 424 Failed Dependency </d:status></d:propstat>"
				    "</d:response><d:response><d:href>/b</d:href><d:status>"
				    "HTTP/1.1 500</d:status></d:response></d:multistatus>";
	static const char fine[] = "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/a"
				   "</d:href><d:status>HTTP/1.1 204</d:status></d:response>"
				   "</d:multistatus>";
	ks_xml_error e = {};

	assert_int_equal(ks_xml_error_body(props, strlen(props), &e), 0);
	assert_int_equal(e.status, 424);
	assert_string_equal(e.precondition, "");
	assert_null(e.text);
	ks_xml_error_done(&e);
	assert_int_equal(ks_xml_error_body(fine, strlen(fine), &e), 0);
	assert_int_equal(e.status, 0);
	ks_xml_error_done(&e);
	static const char other_root[] = "<x:multistatus xmlns:x=\"urn:x\"/>";
	assert_int_equal(ks_xml_error_body(other_root, strlen(other_root), &e), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_item_status),
		cmocka_unit_test(test_error_body_text_is_one_safe_line),
		cmocka_unit_test(test_multistatus_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

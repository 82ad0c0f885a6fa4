/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include <libical/ical.h>

#include "buf_p.h"
#include "item_p.h"
#include "macro.h"
#include "merge_p.h"
#include "vcard_p.h"

#define read_fixture(name, ret_len) ks_test_read_fixture("merge", name, ret_len)

/* ---- helpers on the output ---------------------------------------------------------------- */

typedef struct lines {
	char **v;
	size_t n;
} lines;

static void lines_free(lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	*l = (lines) {};
}

/* The logical lines of data: unfolded, without line breaks, blank lines dropped. */
static lines unfold(const char *data, size_t len)
{
	lines l = {};
	ks_buf cur = {};

	l.v = calloc(len + 1, sizeof(char *));
	assert_non_null(l.v);
	for (size_t i = 0; i <= len;) {
		size_t e = i;

		while (e < len && data[e] != '\n')
			e++;
		size_t n = e;
		while (n > i && data[n - 1] == '\r')
			n--;
		bool cont = i < len && (data[i] == ' ' || data[i] == '\t');
		if (cont)
			assert_int_equal(ks_buf_append(&cur, data + i + 1, n - i - 1), 0);
		else {
			if (cur.len > 0)
				l.v[l.n++] = ks_buf_steal(&cur);
			ks_buf_reset(&cur);
			assert_int_equal(ks_buf_append(&cur, data + i, n - i), 0);
		}
		i = e + 1;
	}
	if (cur.len > 0)
		l.v[l.n++] = ks_buf_steal(&cur);
	ks_buf_done(&cur);
	return l;
}

static bool has_line(const lines *l, const char *want)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], want) == 0)
			return true;
	return false;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* What a written object must look like: CRLF everywhere, no line over 75 octets, no fold
 * inside a UTF-8 sequence. */
static void check_written(const char *data, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n')
			continue;
		assert_true(i > start);
		assert_int_equal(data[i - 1], '\r');
		assert_true(i - 1 - start <= 75);
		if (data[start] == ' ')
			assert_int_not_equal((uint8_t) data[start + 1] & 0xc0, 0x80);
		start = i + 1;
	}
	assert_int_equal(start, len);
}

static const char *uid_of(const char *data, size_t len, char **keep)
{
	ks_item_info info = {};

	assert_int_equal(ks_item_parse_info(data, len, &info, NULL), 0);
	*keep = info.uid;
	info.uid = NULL;
	ks_item_info_done(&info);
	return *keep;
}

/* The result reads as what it claims to be, for ksync's own parsers and for libical. */
static void check_parses(const char *data, size_t len, const char *local, size_t local_len,
			 bool want_vtimezone)
{
	_cleanup_free_ char *u1 = NULL, *u2 = NULL;

	assert_string_equal(uid_of(data, len, &u1), uid_of(local, local_len, &u2));
	if (strncmp(data, "BEGIN:VCARD", 11) == 0) {
		ks_vcard *cards = NULL;
		size_t n = 0;

		assert_int_equal(ks_vcard_parse(data, len, &cards, &n, NULL), 0);
		assert_int_equal(n, 1);
		ks_vcard_free_array(cards, n);
	} else {
		icalcomponent *root = icalparser_parse_string(data);

		assert_non_null(root);
		assert_int_equal(icalcomponent_isa(root), ICAL_VCALENDAR_COMPONENT);
		assert_true(icalcomponent_count_components(root, ICAL_VEVENT_COMPONENT) +
			    icalcomponent_count_components(root, ICAL_VTODO_COMPONENT) > 0);
		if (want_vtimezone)
			assert_non_null(icalcomponent_get_first_component(
				root, ICAL_VTIMEZONE_COMPONENT));
		icalcomponent_free(root);
		icalerror_clear_errno();
	}
}

/* ---- the table ---------------------------------------------------------------------------- */

typedef struct merge_case {
	const char *name;
	const char *base;	/* fixture names; NULL: no base */
	const char *local;
	const char *remote;
	ks_conflict_policy policy;
	int r;
	bool conflict;
	bool same_local;
	bool same_remote;
	const char *summary;
	const char *has[8];	/* logical lines the result must hold */
	const char *lacks[8];	/* and must not */
} merge_case;

#define S KS_CONFLICT_SERVER_WINS
#define L KS_CONFLICT_LOCAL_WINS

static const merge_case cases[] = {
	/* vCard */
	{ "different properties", "card_base.vcf", "card_title_local.vcf", "card_note_remote.vcf",
	  S, .has = { "TITLE:Directrice financière", "NOTE:Rencontrée au salon 2023 et 2024.",
		      "REV:20240301T080000Z", "TEL;TYPE=CELL:+41 79 555 45 67" },
	  .lacks = { "TITLE:Responsable financière", "REV:2024-02-01T10:00:00Z",
		     "REV:2024-01-15T09:12:44Z" } },
	{ "same TEL edited, server wins", "card_base.vcf", "card_tel_local.vcf",
	  "card_tel_remote.vcf", S, .conflict = true, .same_remote = true, .summary = "TEL",
	  .has = { "TEL;TYPE=CELL:+41 79 222 22 22" },
	  .lacks = { "TEL;TYPE=CELL:+41 79 111 11 11", "TEL;TYPE=CELL:+41 79 555 45 67" } },
	{ "same TEL edited, local wins", "card_base.vcf", "card_tel_local.vcf",
	  "card_tel_remote.vcf", L, .conflict = true, .same_local = true, .summary = "TEL",
	  .has = { "TEL;TYPE=CELL:+41 79 111 11 11" },
	  .lacks = { "TEL;TYPE=CELL:+41 79 222 22 22" } },
	{ "same TEL: number on one side, type on the other", "card_base.vcf",
	  "card_tel_local.vcf", "card_tel_retype_remote.vcf", S, .conflict = true,
	  .same_remote = true, .summary = "TEL", .has = { "TEL;TYPE=HOME:+41 79 555 45 67" },
	  .lacks = { "TEL;TYPE=CELL:+41 79 111 11 11" } },
	{ "EMAIL added on both sides", "card_base.vcf", "card_email_add_local.vcf",
	  "card_email_add_remote.vcf", S,
	  .has = { "EMAIL;TYPE=INTERNET:anne.local@example.net",
		   "EMAIL;TYPE=INTERNET:anne.remote@example.com",
		   "EMAIL;TYPE=INTERNET,HOME:anne@example.org",
		   "EMAIL;TYPE=INTERNET,WORK:a.lefevre@example.com" } },
	{ "EMAIL deleted locally, another added remotely", "card_base.vcf",
	  "card_email_del_local.vcf", "card_email_add_remote.vcf", S,
	  .has = { "EMAIL;TYPE=INTERNET:anne.remote@example.com",
		   "EMAIL;TYPE=INTERNET,WORK:a.lefevre@example.com" },
	  .lacks = { "EMAIL;TYPE=INTERNET,HOME:anne@example.org" } },
	{ "identical edits, written differently", "card_base.vcf", "card_same_local.vcf",
	  "card_same_remote.vcf", L, .same_remote = true,
	  .has = { "TITLE:Directrice financière" } },
	{ "no base, server wins", NULL, "card_new_local.vcf", "card_email_add_remote.vcf", S,
	  .conflict = true, .summary = "TITLE",
	  .has = { "TITLE:Responsable financière", "EMAIL;TYPE=INTERNET:anne.local@example.net",
		   "EMAIL;TYPE=INTERNET:anne.remote@example.com" },
	  .lacks = { "TITLE:Directrice financière" } },
	{ "no base, local wins", NULL, "card_new_local.vcf", "card_email_add_remote.vcf", L,
	  .conflict = true, .summary = "TITLE",
	  .has = { "TITLE:Directrice financière", "EMAIL;TYPE=INTERNET:anne.local@example.net",
		   "EMAIL;TYPE=INTERNET:anne.remote@example.com" } },
	{ "no base, same content", NULL, "card_same_local.vcf", "card_same_remote.vcf", S,
	  .same_remote = true },
	{ "VERSION 4.0 against 3.0, server wins", "card_base.vcf", "card_v4_local.vcf",
	  "card_note_remote.vcf", S, .conflict = true, .same_remote = true, .summary = "VERSION" },
	{ "VERSION 4.0 against 3.0, local wins", "card_base.vcf", "card_v4_local.vcf",
	  "card_note_remote.vcf", L, .conflict = true, .same_local = true, .summary = "VERSION" },
	{ "local unchanged", "card_base.vcf", "card_base.vcf", "card_note_remote.vcf", L,
	  .same_remote = true },
	{ "remote unchanged", "card_base.vcf", "card_title_local.vcf", "card_base.vcf", S,
	  .same_local = true },
	{ "grouped property edited, TEL deleted", "card_base.vcf", "card_group_local.vcf",
	  "card_tel_del_remote.vcf", S,
	  .has = { "item1.URL:https://www.boulangerie.example.ch",
		   "item1.X-ABLabel:_$!<HomePage>!$_" },
	  .lacks = { "TEL;TYPE=WORK,VOICE:+41 21 555 01 23",
		     "item1.URL:https://boulangerie.example.ch" } },
	{ "long unfolded line is folded", "card_base.vcf", "card_longnote_local.vcf",
	  "card_tel_remote.vcf", S,
	  .has = { "NOTE:Ça déménage à Zürich — Ça déménage à Zürich — Ça déménage à Zürich — "
		   "Ça déménage à Zürich — Ça déménage à Zürich — Ça déménage à Zürich — "
		   "Ça déménage à Zürich — Ça déménage à Zürich — fin.",
		   "TEL;TYPE=CELL:+41 79 222 22 22" } },
	{ "different UIDs", "card_base.vcf", "card_other_uid.vcf", "card_tel_remote.vcf", S,
	  .r = -ENOTUNIQ },
	{ "base with another UID", "card_other_uid.vcf", "card_tel_local.vcf",
	  "card_tel_remote.vcf", S, .r = -ENOTUNIQ },
	{ "garbage local", "card_base.vcf", "garbage.txt", "card_tel_remote.vcf", S,
	  .r = -EBADMSG },
	{ "garbage base", "garbage.txt", "card_tel_local.vcf", "card_tel_remote.vcf", S,
	  .r = -EBADMSG },
	{ "vCard against iCalendar", "card_base.vcf", "card_tel_local.vcf", "event_base.ics", S,
	  .r = -EBADMSG },
	{ "iCalendar base for vCards", "event_base.ics", "card_tel_local.vcf",
	  "card_tel_remote.vcf", S, .r = -EBADMSG },

	/* VEVENT */
	{ "SUMMARY and LOCATION", "event_base.ics", "event_summary_local.ics",
	  "event_location_remote.ics", S,
	  .has = { "SUMMARY:Weekly sync (team)", "LOCATION:Room 5.01", "BEGIN:VTIMEZONE",
		   "RECURRENCE-ID;TZID=Europe/Zurich:20240115T100000",
		   "PRODID:-//PIMUTILS.ORG//NONSGML khal / icalendar //EN" },
	  .lacks = { "SUMMARY:Weekly sync", "LOCATION:Room 4.12" } },
	{ "same SUMMARY, server wins", "event_base.ics", "event_summary_local.ics",
	  "event_summary_remote.ics", S, .conflict = true, .summary = "VEVENT: SUMMARY",
	  .has = { "SUMMARY:Weekly meeting", "SUMMARY:Weekly sync (afternoon)" },
	  .lacks = { "SUMMARY:Weekly sync (team)" } },
	{ "same SUMMARY, local wins", "event_base.ics", "event_summary_local.ics",
	  "event_summary_remote.ics", L, .conflict = true, .same_local = true,
	  .summary = "VEVENT: SUMMARY", .has = { "SUMMARY:Weekly sync (team)" },
	  .lacks = { "SUMMARY:Weekly meeting" } },
	{ "exception added, master moved", "event_base.ics", "event_exception_add_local.ics",
	  "event_dtstart_remote.ics", S,
	  .has = { "RECURRENCE-ID;TZID=Europe/Zurich:20240122T100000",
		   "RECURRENCE-ID;TZID=Europe/Zurich:20240115T100000",
		   "DTSTART;TZID=Europe/Zurich:20240108T093000",
		   "DTEND;TZID=Europe/Zurich:20240108T103000", "SUMMARY:Weekly sync (lunch)" },
	  .lacks = { "DTSTART;TZID=Europe/Zurich:20240108T100000" } },
	{ "meeting shortened here, start moved there, server wins", "event_base.ics",
	  "event_shorten_local.ics", "event_latestart_remote.ics", S, .conflict = true,
	  .same_remote = true, .summary = "VEVENT: DTSTART",
	  .has = { "DTSTART;TZID=Europe/Zurich:20240108T103000",
		   "DTEND;TZID=Europe/Zurich:20240108T110000" },
	  .lacks = { "DTEND;TZID=Europe/Zurich:20240108T101500" } },
	{ "meeting shortened here, start moved there, local wins", "event_base.ics",
	  "event_shorten_local.ics", "event_latestart_remote.ics", L, .conflict = true,
	  .same_local = true, .summary = "VEVENT: DTSTART",
	  .has = { "DTSTART;TZID=Europe/Zurich:20240108T100000",
		   "DTEND;TZID=Europe/Zurich:20240108T101500" },
	  .lacks = { "DTSTART;TZID=Europe/Zurich:20240108T103000" } },
	{ "DURATION here, another DTEND there", "event_base.ics", "event_duration_local.ics",
	  "event_dtend_remote.ics", S, .conflict = true, .same_remote = true,
	  .summary = "VEVENT: DTSTART", .has = { "DTEND;TZID=Europe/Zurich:20240108T120000" },
	  .lacks = { "DURATION:PT30M" } },
	{ "meeting shortened here, renamed there", "event_base.ics", "event_shorten_local.ics",
	  "event_summary_remote.ics", S,
	  .has = { "DTSTART;TZID=Europe/Zurich:20240108T100000",
		   "DTEND;TZID=Europe/Zurich:20240108T101500", "SUMMARY:Weekly meeting" },
	  .lacks = { "DTEND;TZID=Europe/Zurich:20240108T110000" } },
	{ "exception deleted here, modified there", "event_base.ics",
	  "event_exception_del_local.ics", "event_exception_mod_remote.ics", S,
	  .has = { "RECURRENCE-ID;TZID=Europe/Zurich:20240115T100000",
		   "SUMMARY:Weekly sync (afternoon, room 2)" } },
	{ "exception modified here, deleted there", "event_base.ics",
	  "event_exception_mod_remote.ics", "event_exception_del_local.ics", L,
	  .has = { "SUMMARY:Weekly sync (afternoon, room 2)" } },
	{ "same exception edited differently", "event_base.ics", "event_exception_mod_local.ics",
	  "event_exception_mod_remote.ics", L, .conflict = true,
	  .summary = "VEVENT 20240115T100000: SUMMARY",
	  .has = { "SUMMARY:Weekly sync (afternoon, online)", "DTSTAMP:20240120T081500Z" },
	  .lacks = { "SUMMARY:Weekly sync (afternoon, room 2)", "DTSTAMP:20240118T070000Z" } },
	{ "event created on both sides", NULL, "event_summary_local.ics",
	  "event_location_remote.ics", S, .conflict = true, .same_remote = true,
	  .summary = "VEVENT: LOCATION, SUMMARY",
	  .has = { "SUMMARY:Weekly sync", "LOCATION:Room 5.01", "BEGIN:VTIMEZONE",
		   "PRODID:-//Example Corp//CalDAV Server//EN" },
	  .lacks = { "SUMMARY:Weekly sync (team)" } },
	{ "exception deleted, master changed", "event_base.ics", "event_exception_del_local.ics",
	  "event_location_remote.ics", S, .has = { "LOCATION:Room 5.01" },
	  .lacks = { "RECURRENCE-ID;TZID=Europe/Zurich:20240115T100000" } },
	{ "DTSTAMP and SEQUENCE only", "event_base.ics", "event_stamp_local.ics",
	  "event_stamp_remote.ics", S,
	  .has = { "DTSTAMP:20240201T000000Z", "SEQUENCE:3" },
	  .lacks = { "DTSTAMP:20240120T000000Z", "SEQUENCE:0" } },
	{ "PARTSTAT changed, attendee added", "event_base.ics", "event_partstat_local.ics",
	  "event_attendee_add_remote.ics", S,
	  .has = { "ATTENDEE;CN=Tom Kraus;PARTSTAT=DECLINED:mailto:tom@example.org",
		   "ATTENDEE;CN=Max Muster;PARTSTAT=NEEDS-ACTION:mailto:max@example.org",
		   "ATTENDEE;CN=Lena Vogel;PARTSTAT=ACCEPTED:mailto:lena@example.org" },
	  .lacks = { "ATTENDEE;CN=Tom Kraus;PARTSTAT=ACCEPTED:mailto:tom@example.org" } },
	{ "same attendee answered differently", "event_base.ics", "event_partstat_local.ics",
	  "event_partstat_remote.ics", S, .conflict = true, .summary = "VEVENT: ATTENDEE",
	  .has = { "ATTENDEE;CN=Tom Kraus;PARTSTAT=TENTATIVE:mailto:tom@example.org" },
	  .lacks = { "ATTENDEE;CN=Tom Kraus;PARTSTAT=DECLINED:mailto:tom@example.org" } },
	{ "alarm changed here, deleted there", "event_base.ics", "event_alarm_local.ics",
	  "event_alarm_del_remote.ics", S, .same_local = true,
	  .has = { "TRIGGER:-PT30M", "BEGIN:VALARM" },
	  .lacks = { "TRIGGER:-PT10M" } },
	{ "VTIMEZONE missing on one side", "event_base.ics", "event_notz_local.ics",
	  "event_summary_remote.ics", S,
	  .has = { "BEGIN:VTIMEZONE", "TZID:Europe/Zurich", "LOCATION:Room 6.66",
		   "SUMMARY:Weekly meeting" } },
	{ "events with different UIDs", "event_base.ics", "event_other_uid.ics",
	  "event_summary_remote.ics", S, .r = -ENOTUNIQ },

	/* VTODO */
	{ "task completed here, renamed there", "todo_base.ics", "todo_done_local.ics",
	  "todo_summary_remote.ics", S,
	  .has = { "STATUS:COMPLETED", "COMPLETED:20241120T093000Z", "PERCENT-COMPLETE:100",
		   "SUMMARY:Renew passport and ID card", "DTSTAMP:20241120T093000Z",
		   "PRODID:-//pimutils//todoman//EN" },
	  .lacks = { "STATUS:NEEDS-ACTION", "PERCENT-COMPLETE:0" } },
	{ "task completed here, cancelled there, server wins", "todo_base.ics",
	  "todo_done_local.ics", "todo_cancel_remote.ics", S, .conflict = true,
	  .summary = "VTODO: STATUS",
	  .has = { "STATUS:CANCELLED", "PERCENT-COMPLETE:0", "DTSTAMP:20241120T093000Z" },
	  .lacks = { "STATUS:COMPLETED", "COMPLETED:20241120T093000Z", "PERCENT-COMPLETE:100" } },
	{ "task completed here, cancelled there, local wins", "todo_base.ics",
	  "todo_done_local.ics", "todo_cancel_remote.ics", L, .conflict = true,
	  .same_local = true, .summary = "VTODO: STATUS",
	  .has = { "STATUS:COMPLETED", "COMPLETED:20241120T093000Z", "PERCENT-COMPLETE:100" },
	  .lacks = { "STATUS:CANCELLED" } },
	{ "task completed here, in progress there", "todo_base.ics", "todo_done_local.ics",
	  "todo_progress_remote.ics", S, .conflict = true, .summary = "VTODO: STATUS",
	  .has = { "STATUS:IN-PROCESS", "PERCENT-COMPLETE:50" },
	  .lacks = { "COMPLETED:20241120T093000Z", "STATUS:COMPLETED", "PERCENT-COMPLETE:100" } },
};

/* Sorted logical lines: the content of a result, whatever its line order. */
static lines sorted_lines(const char *data, size_t len)
{
	lines l = unfold(data, len);

	qsort(l.v, l.n, sizeof(char *), str_cmp);
	return l;
}

static void assert_same_lines(const ks_merge_result *a, const ks_merge_result *b)
{
	lines la = sorted_lines(a->data, a->len), lb = sorted_lines(b->data, b->len);

	assert_int_equal(la.n, lb.n);
	for (size_t i = 0; i < la.n; i++)
		assert_string_equal(la.v[i], lb.v[i]);
	lines_free(&la);
	lines_free(&lb);
}

static void run_case(const merge_case *c)
{
	_cleanup_free_ char *base = NULL, *local = NULL, *remote = NULL;
	size_t base_len = 0, local_len, remote_len;
	static char untouched[] = "untouched";
	ks_merge_result res = { .data = untouched }, swapped = {}, again = {};
	ks_conflict_policy other = c->policy == S ? L : S;
	int r;

	print_message("case: %s\n", c->name);
	if (c->base)
		base = read_fixture(c->base, &base_len);
	local = read_fixture(c->local, &local_len);
	remote = read_fixture(c->remote, &remote_len);

	r = ks_merge(base, base_len, local, local_len, remote, remote_len, c->policy, &res);
	assert_int_equal(r, c->r);
	if (r < 0) {
		assert_string_equal(res.data, "untouched");
		return;
	}

	assert_non_null(res.data);
	assert_int_equal(strlen(res.data), res.len);
	assert_int_equal(res.conflict, c->conflict);
	assert_int_equal(res.same_as_local, c->same_local);
	assert_int_equal(res.same_as_remote, c->same_remote);
	if (c->summary) {
		assert_non_null(res.summary);
		assert_string_equal(res.summary, c->summary);
	} else
		assert_null(res.summary);
	if (res.same_as_remote)
		assert_memory_equal(res.data, remote, remote_len);
	if (res.same_as_local)
		assert_memory_equal(res.data, local, local_len);
	if (!res.same_as_remote && !res.same_as_local)
		check_written(res.data, res.len);
	check_parses(res.data, res.len, local, local_len, strstr(remote, "BEGIN:VTIMEZONE"));

	lines l = unfold(res.data, res.len);
	for (size_t i = 0; i < ELEMENTSOF(c->has) && c->has[i]; i++)
		if (!has_line(&l, c->has[i]))
			fail_msg("%s: no line '%s' in:\n%s", c->name, c->has[i], res.data);
	for (size_t i = 0; i < ELEMENTSOF(c->lacks) && c->lacks[i]; i++)
		if (has_line(&l, c->lacks[i]))
			fail_msg("%s: line '%s' in:\n%s", c->name, c->lacks[i], res.data);
	lines_free(&l);

	/* The sides swapped and the policy with them: the same outcome, except that two sides
	 * with the same content give remote's bytes either way. */
	r = ks_merge(base, base_len, remote, remote_len, local, local_len, other, &swapped);
	assert_int_equal(r, 0);
	assert_int_equal(swapped.conflict, res.conflict);
	if (res.summary)
		assert_string_equal(swapped.summary, res.summary);
	if (!(res.same_as_remote && swapped.same_as_remote && !res.conflict)) {
		assert_int_equal(swapped.same_as_local, res.same_as_remote);
		assert_int_equal(swapped.same_as_remote, res.same_as_local);
		assert_same_lines(&res, &swapped);
	}
	ks_merge_result_done(&swapped);

	/* A clean merge is stable: the result already holds each side's changes. */
	if (!res.conflict) {
		r = ks_merge(base, base_len, local, local_len, res.data, res.len, c->policy,
			     &again);
		assert_int_equal(r, 0);
		assert_false(again.conflict);
		assert_true(again.same_as_remote);
		ks_merge_result_done(&again);
		r = ks_merge(base, base_len, res.data, res.len, remote, remote_len, c->policy,
			     &again);
		assert_int_equal(r, 0);
		assert_false(again.conflict);
		assert_true(again.same_as_local);
		ks_merge_result_done(&again);
	}

	ks_merge_result_done(&res);
	assert_null(res.data);
	ks_merge_result_done(&res);
}

static void test_cases(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		run_case(&cases[i]);
}

/* ---- inline cases ------------------------------------------------------------------------- */

static int merge_str(const char *base, const char *local, const char *remote,
		     ks_conflict_policy policy, ks_merge_result *ret)
{
	return ks_merge(base, base ? strlen(base) : 0, local, strlen(local), remote,
			strlen(remote), policy, ret);
}

#define CARD(body) "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:inline-1\r\n" body "END:VCARD\r\n"

static void test_summary(void **state)
{
	ks_merge_result res = {};

	/* Several names, in a stable order. */
	assert_int_equal(merge_str(CARD("FN:A\r\nTITLE:t\r\nTEL:1\r\n"),
				   CARD("FN:A\r\nTITLE:t2\r\nTEL:2\r\n"),
				   CARD("FN:A\r\nTITLE:t3\r\nTEL:3\r\n"), KS_CONFLICT_SERVER_WINS,
				   &res), 0);
	assert_true(res.conflict);
	assert_true(res.same_as_remote);
	assert_string_equal(res.summary, "TEL, TITLE");
	ks_merge_result_done(&res);

	/* A group is part of the name. */
	assert_int_equal(merge_str(CARD("FN:A\r\nitem1.X-ABLABEL:a\r\n"),
				   CARD("FN:A\r\nitem1.X-ABLABEL:b\r\n"),
				   CARD("FN:A\r\nitem1.X-ABLABEL:c\r\n"), KS_CONFLICT_LOCAL_WINS,
				   &res), 0);
	assert_true(res.same_as_local);
	assert_string_equal(res.summary, "ITEM1.X-ABLABEL");
	ks_merge_result_done(&res);

	/* An X- property that occurs twice is a set. */
	assert_int_equal(merge_str(CARD("FN:A\r\nX-SOCIAL:a\r\nX-SOCIAL:b\r\n"),
				   CARD("FN:A\r\nX-SOCIAL:a\r\nX-SOCIAL:b\r\nX-SOCIAL:c\r\n"),
				   CARD("FN:A\r\nX-SOCIAL:b\r\n"), KS_CONFLICT_SERVER_WINS, &res),
			 0);
	assert_false(res.conflict);
	assert_null(res.summary);
	assert_string_equal(res.data, CARD("FN:A\r\nX-SOCIAL:b\r\nX-SOCIAL:c\r\n"));
	ks_merge_result_done(&res);

	/* Deleted on one side, changed on the other: a single value conflicts. */
	assert_int_equal(merge_str(CARD("FN:A\r\nNOTE:n\r\n"), CARD("FN:A\r\n"),
				   CARD("FN:A\r\nNOTE:n2\r\n"), KS_CONFLICT_LOCAL_WINS, &res), 0);
	assert_true(res.conflict);
	assert_true(res.same_as_local);
	assert_string_equal(res.summary, "NOTE");
	ks_merge_result_done(&res);
}

/* What names the object is never merged as a set: a side with a second, different UID line
 * is refused whichever line comes first. */
static void test_identity(void **state)
{
	ks_merge_result res = {};

	for (int p = 0; p < _KS_CONFLICT_MAX; p++) {
		assert_int_equal(merge_str(NULL, CARD("FN:A\r\n"),
					   "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nUID:other\r\n"
					   "UID:inline-1\r\nEND:VCARD\r\n",
					   (ks_conflict_policy) p, &res), -ENOTUNIQ);
		assert_int_equal(merge_str(NULL, CARD("FN:A\r\n"),
					   CARD("FN:A\r\nNOTE:x\r\nUID:other\r\n"),
					   (ks_conflict_policy) p, &res), -ENOTUNIQ);
		ks_merge_result_done(&res);
	}
}

static void test_order(void **state)
{
	ks_merge_result res = {};

	/* Remote's line order; what only local has goes after what precedes it there. */
	assert_int_equal(merge_str(CARD("FN:A\r\nN:a;;;;\r\n"),
				   CARD("FN:A\r\nN:a;;;;\r\nNOTE:local\r\nTEL:1\r\n"),
				   CARD("N:b;;;;\r\nFN:A\r\n"), KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_false(res.conflict);
	assert_string_equal(res.data, "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:inline-1\r\nN:b;;;;\r\n"
				      "NOTE:local\r\nTEL:1\r\nFN:A\r\nEND:VCARD\r\n");
	ks_merge_result_done(&res);

	/* With a conflict, the winner's order and its spelling of shared lines; a line only the
	 * other side has goes after the line it follows there. */
	assert_int_equal(merge_str(CARD("FN:A\r\nEMAIL;TYPE=home:a@x\r\nTITLE:t\r\n"),
				   CARD("TITLE:t2\r\nEMAIL;type=HOME:a@x\r\nFN:A\r\n"),
				   CARD("FN:A\r\nEMAIL;TYPE=home:a@x\r\nTITLE:t3\r\nNOTE:r\r\n"),
				   KS_CONFLICT_LOCAL_WINS, &res), 0);
	assert_true(res.conflict);
	assert_string_equal(res.data, "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:inline-1\r\n"
				      "TITLE:t2\r\nNOTE:r\r\nEMAIL;type=HOME:a@x\r\nFN:A\r\n"
				      "END:VCARD\r\n");
	ks_merge_result_done(&res);
}

static void test_folding(void **state)
{
	static const char chunk[] = "é€𝄞a";	/* 2, 3, 4 and 1 octets */
	ks_buf note = {}, local = {};
	ks_merge_result res = {};

	assert_int_equal(ks_buf_puts(&note, "NOTE:"), 0);
	for (int i = 0; i < 40; i++)
		assert_int_equal(ks_buf_puts(&note, chunk), 0);
	assert_int_equal(ks_buf_printf(&local, CARD("FN:A\r\n%s\r\n"), note.data), 0);

	assert_int_equal(merge_str(CARD("FN:A\r\n"), local.data, CARD("FN:B\r\n"),
				   KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_false(res.conflict);
	check_written(res.data, res.len);
	lines l = unfold(res.data, res.len);
	assert_true(has_line(&l, note.data));
	assert_true(has_line(&l, "FN:B"));
	lines_free(&l);
	ks_merge_result_done(&res);
	ks_buf_done(&note);
	ks_buf_done(&local);

	/* Lines already folded within 75 octets keep their folds, with CRLF. */
	assert_int_equal(merge_str(CARD("FN:A\r\n"), CARD("FN:A\r\nNOTE:abc\n def\r\n"),
				   CARD("FN:B\r\n"), KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_non_null(strstr(res.data, "\r\nNOTE:abc\r\n def\r\n"));
	ks_merge_result_done(&res);

	/* vCard 2.1 quoted-printable soft breaks are not folds: kept as they are. */
	assert_int_equal(merge_str("BEGIN:VCARD\r\nVERSION:2.1\r\nUID:qp\r\nFN:A\r\nEND:VCARD\r\n",
				   "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:qp\r\nFN:A\r\n"
				   "NOTE;ENCODING=QUOTED-PRINTABLE:aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa="
				   "\r\nbbb\r\n"
				   "END:VCARD\r\n",
				   "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:qp\r\nFN:B\r\nEND:VCARD\r\n",
				   KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_false(res.conflict);
	assert_non_null(strstr(res.data, "aaaa=\r\nbbb\r\n"));
	assert_non_null(strstr(res.data, "FN:B\r\n"));
	ks_merge_result_done(&res);
}

static void test_errors(void **state)
{
	ks_merge_result res = {};
	ks_buf big = {};

	assert_int_equal(merge_str(NULL, CARD("FN:A\r\n"), CARD("FN:B\r\n"),
				   (ks_conflict_policy) 7, &res), -EINVAL);
	assert_int_equal(merge_str(NULL, CARD("FN:A\r\n"), CARD("FN:B\r\n"),
				   _KS_CONFLICT_INVALID, &res), -EINVAL);
	assert_int_equal(merge_str(NULL, "", CARD("FN:B\r\n"), KS_CONFLICT_SERVER_WINS, &res),
			 -EBADMSG);
	/* Two cards in one file are not one object. */
	assert_int_equal(merge_str(NULL, CARD("FN:A\r\n") CARD("FN:A\r\n"), CARD("FN:B\r\n"),
				   KS_CONFLICT_SERVER_WINS, &res), -EBADMSG);
	/* A card without UID merges only with another one without UID. */
	assert_int_equal(merge_str(NULL, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEND:VCARD\r\n",
				   CARD("FN:B\r\n"), KS_CONFLICT_SERVER_WINS, &res), -ENOTUNIQ);
	assert_int_equal(merge_str(NULL, "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nEND:VCARD\r\n",
				   "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:B\r\nEND:VCARD\r\n",
				   KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_true(res.conflict);
	ks_merge_result_done(&res);
	/* Unbalanced components. */
	assert_int_equal(merge_str(NULL,
				   "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VTODO\r\n"
				   "END:VCALENDAR\r\n",
				   "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n"
				   "END:VCALENDAR\r\n", KS_CONFLICT_SERVER_WINS, &res), -EBADMSG);

	/* Too many lines. */
	assert_int_equal(ks_buf_puts(&big, "BEGIN:VCARD\r\nUID:big\r\n"), 0);
	for (size_t i = 0; i < KS_MERGE_MAX_LINES; i++)
		assert_int_equal(ks_buf_puts(&big, "X:\n"), 0);
	assert_int_equal(ks_buf_puts(&big, "END:VCARD\r\n"), 0);
	assert_int_equal(merge_str(NULL, big.data, CARD("FN:B\r\n"), KS_CONFLICT_SERVER_WINS,
				   &res), -EFBIG);
	ks_buf_done(&big);

	ks_merge_result_done(NULL);
}

static void test_policy_strings(void **state)
{
	assert_string_equal(ks_conflict_policy_to_string(KS_CONFLICT_SERVER_WINS),
			    "server-wins");
	assert_string_equal(ks_conflict_policy_to_string(KS_CONFLICT_LOCAL_WINS), "local-wins");
	assert_null(ks_conflict_policy_to_string(_KS_CONFLICT_MAX));
	assert_null(ks_conflict_policy_to_string(_KS_CONFLICT_INVALID));
	assert_int_equal(ks_conflict_policy_from_string("server-wins"), KS_CONFLICT_SERVER_WINS);
	assert_int_equal(ks_conflict_policy_from_string("Local-Wins"), KS_CONFLICT_LOCAL_WINS);
	assert_int_equal(ks_conflict_policy_from_string("newest"), _KS_CONFLICT_INVALID);
	assert_int_equal(ks_conflict_policy_from_string(NULL), _KS_CONFLICT_INVALID);
}

/* Big sets stay fast: the set merge sorts, it does not compare every pair. */
static void test_large(void **state)
{
	ks_buf base = {}, local = {}, remote = {};
	ks_merge_result res = {};
	const size_t n = 20000;

	assert_int_equal(ks_buf_puts(&base, "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:big\r\n"), 0);
	assert_int_equal(ks_buf_puts(&local, base.data), 0);
	assert_int_equal(ks_buf_puts(&remote, base.data), 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ks_buf_printf(&base, "EMAIL:u%zu@example.org\r\n", i), 0);
		assert_int_equal(ks_buf_printf(&local, "EMAIL:u%zu@example.org\r\n", i), 0);
		assert_int_equal(ks_buf_printf(&local, "EMAIL:l%zu@example.org\r\n", i), 0);
		if (i % 2)
			assert_int_equal(ks_buf_printf(&remote, "EMAIL:u%zu@example.org\r\n", i),
					 0);
		assert_int_equal(ks_buf_printf(&remote, "EMAIL;TYPE=work:r%zu@example.org\r\n",
					       i), 0);
	}
	assert_int_equal(ks_buf_puts(&base, "END:VCARD\r\n"), 0);
	assert_int_equal(ks_buf_puts(&local, "END:VCARD\r\n"), 0);
	assert_int_equal(ks_buf_puts(&remote, "END:VCARD\r\n"), 0);

	assert_int_equal(ks_merge(base.data, base.len, local.data, local.len, remote.data,
				  remote.len, KS_CONFLICT_SERVER_WINS, &res), 0);
	assert_false(res.conflict);
	lines l = unfold(res.data, res.len);
	/* BEGIN, VERSION, UID, END; n/2 kept, n added locally, n remotely. */
	assert_int_equal(l.n, 4 + n / 2 + 2 * n);
	assert_true(has_line(&l, "EMAIL:l0@example.org"));
	assert_true(has_line(&l, "EMAIL;TYPE=work:r0@example.org"));
	assert_false(has_line(&l, "EMAIL:u0@example.org"));
	assert_true(has_line(&l, "EMAIL:u1@example.org"));
	lines_free(&l);
	ks_merge_result_done(&res);
	ks_buf_done(&base);
	ks_buf_done(&local);
	ks_buf_done(&remote);
}

/* Whatever the bytes, a result or an error, never a crash or a leak. */
static void check_any(const char *base, size_t base_len, const char *local, size_t local_len,
		      const char *remote, size_t remote_len)
{
	for (int p = 0; p < _KS_CONFLICT_MAX; p++) {
		ks_merge_result res = {};
		int r = ks_merge(base, base_len, local, local_len, remote, remote_len,
				 (ks_conflict_policy) p, &res);

		if (r < 0) {
			assert_true(r == -EBADMSG || r == -ENOTUNIQ || r == -EFBIG);
			continue;
		}
		assert_int_equal(strlen(res.data), res.len);
		if (res.same_as_remote)
			assert_memory_equal(res.data, remote, remote_len);
		else if (res.same_as_local)
			assert_memory_equal(res.data, local, local_len);
		else
			check_written(res.data, res.len);
		assert_true(res.conflict == (res.summary != NULL));
		ks_merge_result_done(&res);
	}
}

static void test_robustness(void **state)
{
	static const char *const sets[][3] = {
		{ "card_base.vcf", "card_title_local.vcf", "card_note_remote.vcf" },
		{ "card_base.vcf", "card_tel_local.vcf", "card_email_add_remote.vcf" },
		{ "event_base.ics", "event_exception_add_local.ics", "event_summary_remote.ics" },
		{ "todo_base.ics", "todo_done_local.ics", "todo_cancel_remote.ics" },
	};
	uint32_t seed = 4242;

	for (size_t s = 0; s < ELEMENTSOF(sets); s++) {
		size_t len[3];
		char *d[3];

		for (size_t k = 0; k < 3; k++)
			d[k] = read_fixture(sets[s][k], &len[k]);

		/* Cut anywhere. */
		for (size_t cut = 0; cut <= len[1]; cut += 7) {
			char *p = malloc(cut ? cut : 1);
			assert_non_null(p);
			memcpy(p, d[1], cut);
			check_any(d[0], len[0], p, cut, d[2], len[2]);
			free(p);
		}
		/* Flip bytes, on one side or on both. */
		for (unsigned k = 0; k < 300; k++) {
			char *p[3];

			for (size_t v = 0; v < 3; v++) {
				p[v] = malloc(len[v]);
				assert_non_null(p[v]);
				memcpy(p[v], d[v], len[v]);
			}
			for (unsigned m = 0; m < 1 + k % 4; m++) {
				static const char special[] = ":;,=\"\\.\r\n \t\x80\xc3\xff";
				size_t v, at;

				seed = seed * 1103515245 + 12345;
				v = (seed >> 8) % 3;
				seed = seed * 1103515245 + 12345;
				at = (seed >> 8) % len[v];
				seed = seed * 1103515245 + 12345;
				if ((seed >> 16) % 2)
					p[v][at] = special[(seed >> 8) % (sizeof(special) - 1)];
				else
					p[v][at] = (char) (seed >> 8);
			}
			check_any(p[0], len[0], p[1], len[1], p[2], len[2]);
			check_any(NULL, 0, p[1], len[1], p[2], len[2]);
			for (size_t v = 0; v < 3; v++)
				free(p[v]);
		}
		for (size_t k = 0; k < 3; k++)
			free(d[k]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_summary),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_folding),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_policy_strings),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_robustness),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include <libical/ical.h>

#include "ical_p.h"
#include "item_p.h"
#include "limits.h"
#include "macro.h"

#define read_fixture(name, ret_len) ks_test_read_fixture("ical", name, ret_len)

/* libical may write to stderr; the library must not. Sends fd 2 to a temporary file while
 * parsing and reports whether anything was written there. */
typedef struct stderr_trap {
	FILE *f;
	int saved;
} stderr_trap;

static void trap_stderr(stderr_trap *t)
{
	fflush(stderr);
	t->f = tmpfile();
	assert_non_null(t->f);
	t->saved = dup(STDERR_FILENO);
	assert_true(t->saved >= 0);
	assert_true(dup2(fileno(t->f), STDERR_FILENO) >= 0);
}

static long release_stderr(stderr_trap *t)
{
	long n;

	fflush(stderr);
	assert_true(dup2(t->saved, STDERR_FILENO) >= 0);
	close(t->saved);
	assert_int_equal(fseek(t->f, 0, SEEK_END), 0);
	n = ftell(t->f);
	fclose(t->f);
	return n;
}

/* Parses with stderr trapped and checks that libical said nothing and left no error behind. */
static int parse_quiet(const char *data, size_t len, ks_item_info *info, char **msg)
{
	stderr_trap t;
	int r;

	trap_stderr(&t);
	r = ks_ical_parse_info(data, len, info, msg);
	if (release_stderr(&t) != 0)
		fail_msg("libical wrote to stderr (result %d)", r);
	assert_int_equal(icalerrno, ICAL_NO_ERROR);
	return r;
}

static bool str_eq_or_null(const char *got, const char *want)
{
	if (!got || !want)
		return got == want;
	return strcmp(got, want) == 0;
}

typedef struct ical_want {
	const char *name;	/* fixture file, or a label for inline text */
	const char *text;	/* inline text, or NULL to read the fixture */
	int r;
	ks_item_kind kind;
	const char *uid;
	const char *summary;
	const char *dtstart;
	const char *dtend;
	const char *due;
	const char *status;
	int priority;
	bool has_rrule;
	const char *msg;	/* for failures: a substring of the message */
} ical_want;

static void check_case(const ical_want *w, bool via_item)
{
	ks_item_info info = { .priority = 42 };
	char *msg = NULL;
	size_t len;
	char *data = w->text ? strdup(w->text) : read_fixture(w->name, &len);
	int r;

	assert_non_null(data);
	if (w->text)
		len = strlen(w->text);
	if (via_item)
		r = ks_item_parse_info(data, len, &info, &msg);
	else
		r = parse_quiet(data, len, &info, &msg);
	if (r != w->r)
		fail_msg("%s: got %d (%s), want %d", w->name, r, msg ? msg : "-", w->r);
	if (r < 0) {
		assert_int_equal(info.priority, 42);
		assert_null(info.uid);
		assert_non_null(msg);
		if (w->msg && !strstr(msg, w->msg))
			fail_msg("%s: message '%s' lacks '%s'", w->name, msg, w->msg);
		free(msg);
		free(data);
		return;
	}
	assert_null(msg);
#define CHECK_STR(field)                                                                       \
	if (!str_eq_or_null(info.field, w->field))                                              \
		fail_msg("%s: " #field " is '%s', want '%s'", w->name,                         \
			 info.field ? info.field : "(null)", w->field ? w->field : "(null)");
	CHECK_STR(uid);
	CHECK_STR(summary);
	CHECK_STR(dtstart);
	CHECK_STR(dtend);
	CHECK_STR(due);
	CHECK_STR(status);
#undef CHECK_STR
	if (info.kind != w->kind)
		fail_msg("%s: kind %d, want %d", w->name, info.kind, w->kind);
	if (info.priority != w->priority)
		fail_msg("%s: priority %d, want %d", w->name, info.priority, w->priority);
	if (info.has_rrule != w->has_rrule)
		fail_msg("%s: has_rrule %d", w->name, info.has_rrule);
	assert_null(info.email);
	ks_item_info_done(&info);
	free(data);
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static const ical_want fixture_cases[] = {
	{ .name = "recurring_exceptions.ics", .kind = KS_ITEM_VEVENT,
	  .uid = "7b3e1c52-9f0a-4d61-a8c2-5e14d0f3b6a7", .summary = "Weekly team sync",
	  .dtstart = "2024-01-08T09:00:00Z", .dtend = "2024-01-08T10:00:00Z", .status = "CONFIRMED",
	  .has_rrule = true },
	{ .name = "allday.ics", .kind = KS_ITEM_VEVENT,
	  .uid = "A1F0C6B2-3D44-4E3B-9E0B-2C7B1F8E5D11",
	  .summary = "Independence Day, fireworks at the lake", .dtstart = "2024-07-04",
	  .dtend = "2024-07-05" },
	{ .name = "new_york.ics", .kind = KS_ITEM_VEVENT,
	  .uid = "3kq0b8v2m6t1c9s4r7p5n0e2d8@google.com", .summary = "Dentist",
	  .dtstart = "2024-07-10T13:30:00Z", .dtend = "2024-07-10T14:30:00Z" },
	{ .name = "outlook_tzid.ics", .kind = KS_ITEM_VEVENT,
	  .uid = "040000008200E00074C5B7101A82E00800000000D0A4F1C2B35FDA01000000000000000010000000",
	  .summary = "Quarterly review", .dtstart = "2024-01-15T14:00:00Z",
	  .dtend = "2024-01-15T14:30:00Z", .priority = 5 },
	{ .name = "zurich_builtin.ics", .kind = KS_ITEM_VEVENT,
	  .uid = "b0e6a1d4-2c3f-4e5a-8b7c-9d0e1f2a3b4c", .summary = "Zugfahrt nach Bern",
	  .dtstart = "2024-08-15T06:30:00Z", .dtend = "2024-08-15T10:00:00Z" },
	{ .name = "floating.ics", .kind = KS_ITEM_VEVENT, .uid = "floating-5f2d9c@example.org",
	  .summary = "Morning run", .dtstart = "2024-09-01T07:00:00",
	  .dtend = "2024-09-01T07:30:00" },
	{ .name = "duration.ics", .kind = KS_ITEM_VEVENT, .uid = "duration-91c4@example.net",
	  .summary = "Budget workshop", .dtstart = "2024-11-05T15:00:00Z",
	  .dtend = "2024-11-05T16:30:00Z" },
	{ .name = "todo.ics", .kind = KS_ITEM_VTODO,
	  .uid = "2f9b7e0c5a3d4c1e8b6a9d0f1e2c3b4a@todoman",
	  .summary = "Renew passport", .dtstart = "2024-11-15", .due = "2024-12-01T17:00:00Z",
	  .status = "NEEDS-ACTION", .priority = 1 },
	{ .name = "journal.ics", .kind = KS_ITEM_VJOURNAL, .uid = "journal-3c8e@example.com",
	  .summary = "Sprint 14 retrospective", .dtstart = "2024-03-12", .status = "FINAL" },
	{ .name = "two_uids.ics", .r = -ENOTUNIQ, .msg = "different UIDs" },
	{ .name = "no_uid.ics", .r = -ENODATA, .msg = "no UID" },
	{ .name = "garbage.ics", .r = -EBADMSG },
};

static void test_fixtures(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(fixture_cases); i++) {
		check_case(&fixture_cases[i], false);
		check_case(&fixture_cases[i], true);
	}
}

/* ---- inline objects ---------------------------------------------------------------------- */

#define CAL(body) "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ksync//test//EN\r\n" body \
		  "END:VCALENDAR\r\n"
#define EVENT(body) "BEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20240101T000000Z\r\n" body "END:VEVENT\r\n"

/* A zone whose rule would keep libical busy for hours if it were expanded. */
#define HOSTILE_TZ(id) "BEGIN:VTIMEZONE\r\nTZID:" id "\r\nBEGIN:STANDARD\r\n"                 \
	"DTSTART:19700101T000000\r\nRRULE:FREQ=SECONDLY\r\nTZOFFSETFROM:+0500\r\n"           \
	"TZOFFSETTO:+0500\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"

static const ical_want inline_cases[] = {
	{ .name = "unknown tzid is floating",
	  .text = CAL(EVENT("DTSTART;TZID=Mars/Olympus_Mons:20240101T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-01T12:00:00" },
	{ .name = "tzid with the libical prefix",
	  .text = CAL(EVENT("DTSTART;TZID=/freeassociation.sourceforge.net/Europe/Zurich:"
			    "20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T11:00:00Z" },
	{ .name = "tzid utc", .text = CAL(EVENT("DTSTART;TZID=UTC:20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T12:00:00Z" },
	{ .name = "utc value wins over tzid",
	  .text = CAL(EVENT("DTSTART;TZID=Europe/Zurich:20240115T120000Z\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T12:00:00Z" },
	{ .name = "builtin zone in winter",
	  .text = CAL(EVENT("DTSTART;TZID=America/New_York:20240115T090000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T14:00:00Z" },
	{ .name = "nominal day across the end of DST",
	  .text = CAL(EVENT("DTSTART;TZID=Europe/Zurich:20241026T120000\r\nDURATION:P1D\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-10-26T10:00:00Z",
	  .dtend = "2024-10-27T11:00:00Z" },
	{ .name = "exact hours across the end of DST",
	  .text = CAL(EVENT("DTSTART;TZID=Europe/Zurich:20241026T120000\r\nDURATION:PT24H\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-10-26T10:00:00Z",
	  .dtend = "2024-10-27T10:00:00Z" },
	{ .name = "date plus days",
	  .text = CAL(EVENT("DTSTART;VALUE=DATE:20241230\r\nDURATION:P3D\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-12-30", .dtend = "2025-01-02" },
	{ .name = "floating plus weeks",
	  .text = CAL(EVENT("DTSTART:20240225T080000\r\nDURATION:P1W\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-02-25T08:00:00",
	  .dtend = "2024-03-03T08:00:00" },
	{ .name = "dtend wins over duration",
	  .text = CAL(EVENT("DTSTART:20240101T100000Z\r\nDTEND:20240101T103000Z\r\n"
			    "DURATION:PT5H\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-01T10:00:00Z",
	  .dtend = "2024-01-01T10:30:00Z" },
	{ .name = "duration without dtstart", .text = CAL(EVENT("DURATION:PT1H\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1" },
	{ .name = "absurd duration",
	  .text = CAL(EVENT("DTSTART:20240101T100000Z\r\nDURATION:P999999999W\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-01T10:00:00Z" },
	{ .name = "unparseable dtstart", .text = CAL(EVENT("DTSTART:tomorrow\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1" },
	{ .name = "summary escapes and fold inside a character",
	  .text = CAL(EVENT("SUMMARY:  Caf\xc3\r\n \xa9\\, th\xc3\xa9\\; g\xc3\xa2teau\\n"
			    "suite  \r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .summary = "Café, thé; gâteau\nsuite" },
	{ .name = "completed todo",
	  .text = CAL("BEGIN:VTODO\r\nUID:t1\r\nSTATUS:COMPLETED\r\nPRIORITY:9\r\n"
		      "COMPLETED:20240102T100000Z\r\nEND:VTODO\r\n"),
	  .kind = KS_ITEM_VTODO, .uid = "t1", .status = "COMPLETED", .priority = 9 },
	{ .name = "priority out of range",
	  .text = CAL("BEGIN:VTODO\r\nUID:t1\r\nPRIORITY:12\r\nEND:VTODO\r\n"),
	  .kind = KS_ITEM_VTODO, .uid = "t1" },
	{ .name = "exceptions only: fields from the first",
	  .text = CAL("BEGIN:VEVENT\r\nUID:r\r\nRECURRENCE-ID:20240102T100000Z\r\nSUMMARY:first\r\n"
		      "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:r\r\nRECURRENCE-ID:20240103T100000Z\r\n"
		      "SUMMARY:second\r\nEND:VEVENT\r\n"),
	  .kind = KS_ITEM_VEVENT, .uid = "r", .summary = "first" },
	{ .name = "kind of the first component",
	  .text = CAL("BEGIN:VTODO\r\nUID:k\r\nRECURRENCE-ID:20240102T100000Z\r\nEND:VTODO\r\n"
		      "BEGIN:VEVENT\r\nUID:k\r\nSUMMARY:master\r\nEND:VEVENT\r\n"),
	  .kind = KS_ITEM_VTODO, .uid = "k", .summary = "master" },
	{ .name = "uid trimmed", .text = CAL("BEGIN:VJOURNAL\r\nUID:  j1  \r\nEND:VJOURNAL\r\n"),
	  .kind = KS_ITEM_VJOURNAL, .uid = "j1" },
	{ .name = "x- components ignored",
	  .text = CAL("BEGIN:X-THING\r\nUID:other\r\nEND:X-THING\r\n" EVENT("")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1" },
	{ .name = "two calendars, one uid",
	  .text = CAL(EVENT("SUMMARY:a\r\n")) CAL(EVENT("RECURRENCE-ID:20240101T000000Z\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .summary = "a" },
	{ .name = "lower case", .text = "begin:vcalendar\r\nbegin:vevent\r\nuid:lc\r\n"
					"summary:quiet\r\nend:vevent\r\nend:vcalendar\r\n",
	  .kind = KS_ITEM_VEVENT, .uid = "lc", .summary = "quiet" },
	{ .name = "bare lf and bom",
	  .text = "\xef\xbb\xbf" "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:lf\nEND:VEVENT\n"
		  "END:VCALENDAR\n",
	  .kind = KS_ITEM_VEVENT, .uid = "lf" },
	{ .name = "no final line break",
	  .text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:nf\r\nEND:VEVENT\r\nEND:VCALENDAR",
	  .kind = KS_ITEM_VEVENT, .uid = "nf" },
	{ .name = "properties libical prints about",
	  .text = CAL(EVENT("TASK-MODE:5\r\nx-lic-class;X=1:a\r\nTask-Mode \t:x\r\n"
			    "SUMMARY:still read\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .summary = "still read" },
	{ .name = "hostile vtimezone, known name",
	  .text = CAL(HOSTILE_TZ("Europe/Zurich")
		      EVENT("DTSTART;TZID=Europe/Zurich:20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T11:00:00Z" },
	{ .name = "hostile vtimezone, unknown name",
	  .text = CAL(HOSTILE_TZ("Corp Time") EVENT("DTSTART;TZID=Corp Time:20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T12:00:00" },
	{ .name = "vtimezone without observances",
	  .text = CAL("BEGIN:VTIMEZONE\r\nTZID:Empty\r\nEND:VTIMEZONE\r\n"
		      EVENT("DTSTART;TZID=Empty:20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T12:00:00" },
	{ .name = "fixed-offset vtimezone",
	  .text = CAL("BEGIN:VTIMEZONE\r\nTZID:Asia/Kolkata-ish\r\nBEGIN:STANDARD\r\n"
		      "DTSTART:19700101T000000\r\nTZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530\r\n"
		      "END:STANDARD\r\nEND:VTIMEZONE\r\n"
		      EVENT("DTSTART;TZID=Asia/Kolkata-ish:20240115T120000\r\n")),
	  .kind = KS_ITEM_VEVENT, .uid = "u1", .dtstart = "2024-01-15T06:30:00Z" },

	{ .name = "two uids in two calendars",
	  .text = CAL(EVENT("")) CAL("BEGIN:VEVENT\r\nUID:u2\r\nEND:VEVENT\r\n"), .r = -ENOTUNIQ },
	{ .name = "one component without uid",
	  .text = CAL(EVENT("") "BEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\n"), .r = -ENOTUNIQ,
	  .msg = "1 of 2 components have no UID" },
	{ .name = "only a vtimezone",
	  .text = CAL("BEGIN:VTIMEZONE\r\nTZID:X\r\nEND:VTIMEZONE\r\n"), .r = -EBADMSG,
	  .msg = "no VEVENT, VTODO or VJOURNAL" },
	{ .name = "empty calendar", .text = CAL(""), .r = -EBADMSG },
	{ .name = "event without calendar", .text = EVENT(""), .r = -EBADMSG,
	  .msg = "no VCALENDAR" },
	{ .name = "not closed", .text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n",
	  .r = -EBADMSG },
	{ .name = "end before begin", .text = "END:VCALENDAR\r\n" CAL(EVENT("")), .r = -EBADMSG,
	  .msg = "END without BEGIN" },
	{ .name = "end before begin, lower case", .text = "end:x\r\n", .r = -EBADMSG },
	{ .name = "empty", .text = "", .r = -EBADMSG },
	{ .name = "blank", .text = " \r\n\t\r\n", .r = -EBADMSG },
	{ .name = "cr only",
	  .text = "BEGIN:VCALENDAR\rBEGIN:VEVENT\rUID:x\rEND:VEVENT\rEND:VCALENDAR\r",
	  .r = -EBADMSG },
	{ .name = "latin-1", .text = CAL(EVENT("SUMMARY:caf\xe9\r\n")), .r = -EBADMSG,
	  .msg = "invalid UTF-8 at byte" },
	{ .name = "nesting",
	  .text = "BEGIN:VCALENDAR\r\nBEGIN:A\r\nBEGIN:B\r\nBEGIN:C\r\nBEGIN:D\r\nBEGIN:E\r\n"
		  "BEGIN:F\r\nBEGIN:G\r\nBEGIN:H\r\nBEGIN:I\r\nBEGIN:J\r\nBEGIN:K\r\nBEGIN:L\r\n"
		  "BEGIN:M\r\nBEGIN:N\r\nBEGIN:O\r\nBEGIN:P\r\n",
	  .r = -EBADMSG, .msg = "nested" },
	{ .name = "begin split by a fold",
	  .text = "BEGIN:VCALENDAR\r\nBEGIN:A\r\nBEGIN:B\r\nBEGIN:C\r\nBEGIN:D\r\nBEGIN:E\r\n"
		  "BEGIN:F\r\nBEGIN:G\r\nBEGIN:H\r\nBEGIN:I\r\nBEGIN:J\r\nBEGIN:K\r\nBEGIN:L\r\n"
		  "BEGIN:M\r\nBEGIN:N\r\nBEGIN:O\r\nBEG\r\n IN:P\r\n",
	  .r = -EBADMSG, .msg = "nested" },
};

static void test_inline(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(inline_cases); i++)
		check_case(&inline_cases[i], false);
}

static void test_nul_byte(void **state)
{
	static const char text[] = CAL(EVENT("SUMMARY:a\0b\r\n"));
	ks_item_info info = {};
	char *msg = NULL;

	assert_int_equal(parse_quiet(text, sizeof(text) - 1, &info, &msg), -EBADMSG);
	assert_non_null(strstr(msg, "invalid UTF-8"));
	free(msg);
}

/* ---- size and time ----------------------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* An event with an attachment that makes the object exactly len bytes; fold_at 0 writes the
 * attachment on one line. */
static char *big_event(size_t len, size_t fold_at)
{
	static const char head[] = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:big\r\nSUMMARY:Big\r\n"
				   "ATTACH;ENCODING=BASE64;VALUE=BINARY;FMTTYPE=image/png:";
	static const char tail[] = "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
	char *s = malloc(len + 1);
	size_t o, col = 0, stop = len - strlen(tail);

	assert_non_null(s);
	memcpy(s, head, strlen(head));
	o = strlen(head);
	while (o < stop) {
		if (fold_at && col == fold_at && o + 3 < stop) {
			memcpy(s + o, "\r\n ", 3);
			o += 3;
			col = 0;
			continue;
		}
		s[o] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[o % 64];
		o++;
		col++;
	}
	memcpy(s + o, tail, strlen(tail));
	s[len] = 0;
	return s;
}

static void test_huge(void **state)
{
	ks_item_info info = {};
	char *msg = NULL;
	char *s;
	double t0;

	/* Folded at 75 columns and on a single line; both must stay linear. */
	for (size_t fold = 0; fold <= 75; fold += 75) {
		s = big_event(KS_CARD_MAX, fold);
		t0 = now();
		assert_int_equal(parse_quiet(s, KS_CARD_MAX, &info, &msg), 0);
		if (now() - t0 > 5)
			fail_msg("an 8 MiB object took %.1f s (fold %zu)", now() - t0, fold);
		assert_string_equal(info.uid, "big");
		assert_string_equal(info.summary, "Big");
		ks_item_info_done(&info);
		free(s);
	}

	s = big_event(KS_CARD_MAX + 1, 75);
	assert_int_equal(parse_quiet(s, KS_CARD_MAX + 1, &info, &msg), -EFBIG);
	assert_non_null(strstr(msg, "more than the limit"));
	free(msg);
	free(s);
}

/* Inputs that make libical itself crash, print or spin are refused before it sees them. */
static void test_hostile(void **state)
{
	size_t cap = 8 * 1024 * 1024, n;
	char *s = malloc(cap);
	ks_item_info info = {};
	char *msg = NULL;
	double t0;

	assert_non_null(s);

	/* 400,000 nested components overflow libical's recursive free. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\n");
	for (unsigned i = 0; i < 200000; i++) {
		memcpy(s + n, "BEGIN:X\n", 8);
		n += 8;
	}
	for (unsigned i = 0; i < 200000; i++) {
		memcpy(s + n, "END:X\n", 6);
		n += 6;
	}
	assert_int_equal(parse_quiet(s, n, &info, &msg), -EBADMSG);
	assert_non_null(strstr(msg, "nested"));
	free(msg);
	msg = NULL;

	/* A line with 100,000 parameters costs libical minutes. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:p\r\nX-P");
	for (unsigned i = 0; i < 100000; i++) {
		memcpy(s + n, ";A=b", 4);
		n += 4;
	}
	n += (size_t) snprintf(s + n, cap - n, ":v\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
	t0 = now();
	assert_int_equal(parse_quiet(s, n, &info, &msg), -EBADMSG);
	assert_true(now() - t0 < 2);
	assert_non_null(strstr(msg, "too many parameters"));
	free(msg);
	msg = NULL;

	/* The same with a quoted ':' early on, which libical skips. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:p\r\nX-P;Q=\":\"");
	for (unsigned i = 0; i < 100000; i++) {
		memcpy(s + n, ";A=b", 4);
		n += 4;
	}
	n += (size_t) snprintf(s + n, cap - n, ":v\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
	t0 = now();
	assert_int_equal(parse_quiet(s, n, &info, &msg), -EBADMSG);
	assert_true(now() - t0 < 2);
	free(msg);
	msg = NULL;

	/* Semicolons in a long value cost libical nothing and are accepted, escaped or not. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:e\r\nDESCRIPTION:");
	for (unsigned i = 0; i < 300000; i++) {
		memcpy(s + n, "a;b ", 4);
		n += 4;
	}
	n += (size_t) snprintf(s + n, cap - n, "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
	assert_int_equal(parse_quiet(s, n, &info, &msg), 0);
	assert_string_equal(info.uid, "e");
	ks_item_info_done(&info);

	/* A long line of comma-separated dates: libical splits it in up to 500 values, each time
	 * measuring the rest of the line. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nEXDATE:");
	for (unsigned i = 0; i < 200000; i++) {
		memcpy(s + n, "20240101T000000Z,", 17);
		n += 17;
	}
	n += (size_t) snprintf(s + n, cap - n,
			       "20240101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
	t0 = now();
	assert_int_equal(parse_quiet(s, n, &info, &msg), 0);
	assert_true(now() - t0 < 2);
	ks_item_info_done(&info);

	/* Escaped semicolons in a long text cost libical nothing and are accepted. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:d\r\nDESCRIPTION:");
	for (unsigned i = 0; i < 300000; i++) {
		memcpy(s + n, "a\\; ", 4);
		n += 4;
	}
	n += (size_t) snprintf(s + n, cap - n, "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
	assert_int_equal(parse_quiet(s, n, &info, &msg), 0);
	assert_string_equal(info.uid, "d");
	ks_item_info_done(&info);

	/* Many VTIMEZONE rules that never match (about 0.1 s each to expand): the VTIMEZONE is
	 * ignored and the builtin zone of the same name is used instead. */
	n = (size_t) snprintf(s, cap,
			      "BEGIN:VCALENDAR\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Zurich\r\n");
	for (unsigned i = 0; i < 40; i++)
		n += (size_t) snprintf(s + n, cap - n,
				       "BEGIN:STANDARD\r\nDTSTART:00010101T000000\r\n"
				       "RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30\r\n"
				       "TZOFFSETFROM:+0000\r\nTZOFFSETTO:+0000\r\n"
				       "END:STANDARD\r\n");
	n += (size_t) snprintf(s + n, cap - n,
			       "END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:z\r\n"
			       "DTSTART;TZID=Europe/Zurich:20240615T120000\r\n"
			       "END:VEVENT\r\nEND:VCALENDAR\r\n");
	t0 = now();
	assert_int_equal(parse_quiet(s, n, &info, &msg), 0);
	assert_true(now() - t0 < 2);
	assert_string_equal(info.dtstart, "2024-06-15T10:00:00Z");
	ks_item_info_done(&info);

	free(s);
}

/* Properties libical drops (an empty value, a date that is none) cost it a walk of the whole
 * component each: past a thousand lines in one component only the reader fields' properties
 * reach it, and a flood of those is refused. */
static void test_many_properties(void **state)
{
	static const char *const units[] = { "X-A:\r\n", "DESCRIPTION:\r\n", "X-A: \r\n",
					     "X-A;B=1:\r\n", "ATTENDEE:mailto:a@b\r\n" };
	size_t cap = 8 * 1024 * 1024, n;
	char *s = malloc(cap);
	ks_item_info info = {};
	char *msg = NULL;
	double t0;

	assert_non_null(s);
	for (size_t u = 0; u < ELEMENTSOF(units); u++) {
		n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:m\r\n");
		for (unsigned i = 0; i < 100000; i++)
			n += (size_t) snprintf(s + n, cap - n, "%s", units[u]);
		n += (size_t) snprintf(s + n, cap - n, "SUMMARY:Last\r\nDTSTART:20240301T100000Z\r\n"
				       "END:VEVENT\r\nEND:VCALENDAR\r\n");
		t0 = now();
		assert_int_equal(parse_quiet(s, n, &info, &msg), 0);
		if (now() - t0 > 2)
			fail_msg("100,000 lines of '%s' took %.1f s", units[u], now() - t0);
		assert_string_equal(info.uid, "m");
		assert_string_equal(info.summary, "Last");
		assert_string_equal(info.dtstart, "2024-03-01T10:00:00Z");
		ks_item_info_done(&info);
	}

	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:m\r\n");
	for (unsigned i = 0; i < 25000; i++)
		n += (size_t) snprintf(s + n, cap - n, "DTSTART:garbage\r\n");
	n += (size_t) snprintf(s + n, cap - n, "END:VEVENT\r\nEND:VCALENDAR\r\n");
	t0 = now();
	assert_int_equal(parse_quiet(s, n, &info, &msg), -EBADMSG);
	assert_true(now() - t0 < 2);
	assert_non_null(strstr(msg, "properties in one iCalendar component"));
	free(msg);
	msg = NULL;

	/* More lines than any object needs. */
	n = (size_t) snprintf(s, cap, "BEGIN:VCALENDAR\r\n");
	for (unsigned i = 0; i < KS_CARD_MAX_LINES; i++)
		n += (size_t) snprintf(s + n, cap - n, "BEGIN:VEVENT\r\nEND:VEVENT\r\n");
	n += (size_t) snprintf(s + n, cap - n, "END:VCALENDAR\r\n");
	assert_int_equal(parse_quiet(s, n, &info, &msg), -EFBIG);
	assert_non_null(strstr(msg, "lines"));
	free(msg);
	free(s);
}

/* ---- ks_item_* --------------------------------------------------------------------------- */

static void test_kind_strings(void **state)
{
	static const struct {
		ks_item_kind k;
		const char *s;
	} kinds[] = {
		{ .k = KS_ITEM_VCARD, .s = "VCARD" },
		{ .k = KS_ITEM_VEVENT, .s = "VEVENT" },
		{ .k = KS_ITEM_VTODO, .s = "VTODO" },
		{ .k = KS_ITEM_VJOURNAL, .s = "VJOURNAL" },
	};

	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		assert_string_equal(ks_item_kind_to_string(kinds[i].k), kinds[i].s);
		assert_int_equal(ks_item_kind_from_string(kinds[i].s), kinds[i].k);
	}
	assert_int_equal(ks_item_kind_from_string("vtodo"), KS_ITEM_VTODO);
	assert_int_equal(ks_item_kind_from_string("VTODOX"), _KS_ITEM_INVALID);
	assert_int_equal(ks_item_kind_from_string("VTOD"), _KS_ITEM_INVALID);
	assert_int_equal(ks_item_kind_from_string(""), _KS_ITEM_INVALID);
	assert_int_equal(ks_item_kind_from_string(NULL), _KS_ITEM_INVALID);
	assert_null(ks_item_kind_to_string(_KS_ITEM_MAX));
	assert_null(ks_item_kind_to_string(_KS_ITEM_INVALID));
	assert_int_equal(_KS_ITEM_INVALID, -EINVAL);
}

static void test_dispatch(void **state)
{
	static const struct {
		const char *name;
		const char *text;
		int r;
		ks_item_kind kind;
		const char *msg;
	} cases[] = {
		{ .name = "calendar", .text = CAL(EVENT("")), .kind = KS_ITEM_VEVENT },
		{ .name = "card", .text = "BEGIN:VCARD\r\nUID:c\r\nEND:VCARD\r\n",
		  .kind = KS_ITEM_VCARD },
		{ .name = "bom and blank lines",
		  .text = "\xef\xbb\xbf\r\n \t\n" "BEGIN:VCARD\nUID:c\nEND:VCARD\n",
		  .kind = KS_ITEM_VCARD },
		{ .name = "lower case", .text = "begin:vcalendar\nbegin:vtodo\nuid:t\nend:vtodo\n"
						"end:vcalendar\n", .kind = KS_ITEM_VTODO },
		{ .name = "word ends at a blank", .text = "BEGIN:VCARD \nUID:c\nEND:VCARD\n",
		  .kind = KS_ITEM_VCARD },
		{ .name = "longer word", .text = "BEGIN:VCARDS\nEND:VCARDS\n", .r = -EBADMSG,
		  .msg = "not a vCard or iCalendar object" },
		{ .name = "other object", .text = "BEGIN:VNOTE\nEND:VNOTE\n", .r = -EBADMSG,
		  .msg = "not a vCard or iCalendar object" },
		{ .name = "html", .text = "<html></html>", .r = -EBADMSG },
		{ .name = "empty", .text = "", .r = -EBADMSG, .msg = "empty" },
		{ .name = "blank", .text = "\xef\xbb\xbf \r\n", .r = -EBADMSG, .msg = "empty" },
		{ .name = "prefix only", .text = "BEGIN:VCAL", .r = -EBADMSG },
		{ .name = "calendar errors pass through", .text = CAL(""), .r = -EBADMSG,
		  .msg = "no VEVENT" },
		{ .name = "card errors pass through", .text = "BEGIN:VCARD\nEND:VCARD\n",
		  .r = -ENODATA, .msg = "no UID" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		ks_item_info info = {};
		char *msg = NULL;
		int r = ks_item_parse_info(cases[i].text, strlen(cases[i].text), &info, &msg);

		if (r != cases[i].r)
			fail_msg("%s: got %d (%s)", cases[i].name, r, msg ? msg : "-");
		if (r < 0) {
			if (!msg || (cases[i].msg && !strstr(msg, cases[i].msg)))
				fail_msg("%s: message '%s'", cases[i].name, msg ? msg : "(null)");
			free(msg);
			continue;
		}
		assert_null(msg);
		assert_int_equal(info.kind, cases[i].kind);
		ks_item_info_done(&info);
		/* Done twice and on NULL is harmless. */
		ks_item_info_done(&info);
		ks_item_info_done(NULL);
	}
}

static void test_libical_state(void **state)
{
	ks_item_info info = {};
	size_t len;
	char *data = read_fixture("garbage.ics", &len);

	/* Nothing in ksync may turn libical errors into abort(). */
	assert_int_equal(icalerror_get_errors_are_fatal(), 0);
	icalerror_set_errno(ICAL_PARSE_ERROR);
	assert_int_equal(ks_ical_parse_info(data, len, &info, NULL), -EBADMSG);
	assert_int_equal(icalerrno, ICAL_NO_ERROR);
	assert_int_equal(icalerror_get_error_state(ICAL_MALFORMEDDATA_ERROR), ICAL_ERROR_DEFAULT);
	free(data);
}

/* ---- robustness -------------------------------------------------------------------------- */

static void check_any(const char *data, size_t len)
{
	ks_item_info info = {};
	char *msg = NULL;
	int r = parse_quiet(data, len, &info, &msg);

	if (r < 0) {
		assert_true(r == -EBADMSG || r == -ENODATA || r == -ENOTUNIQ);
		assert_non_null(msg);
		free(msg);
	} else {
		assert_null(msg);
		assert_non_null(info.uid);
		assert_true(info.kind == KS_ITEM_VEVENT || info.kind == KS_ITEM_VTODO ||
			    info.kind == KS_ITEM_VJOURNAL);
		ks_item_info_done(&info);
	}
}

static void test_robustness(void **state)
{
	static const char *const files[] = {
		"recurring_exceptions.ics", "new_york.ics", "todo.ics", "duration.ics",
		"allday.ics",
	};
	uint32_t seed = 777;

	for (size_t f = 0; f < ELEMENTSOF(files); f++) {
		size_t len;
		char *data = read_fixture(files[f], &len);

		for (size_t cut = 0; cut <= len; cut += 1 + cut / 64) {
			char *p = malloc(cut ? cut : 1);
			assert_non_null(p);
			memcpy(p, data, cut);
			check_any(p, cut);
			free(p);
		}
		for (unsigned k = 0; k < 400; k++) {
			char *p = malloc(len);
			assert_non_null(p);
			memcpy(p, data, len);
			for (unsigned m = 0; m < 1 + k % 4; m++) {
				static const char interesting[] = ":;,=\"\\\r\n \tZT+-0123459";

				seed = seed * 1103515245 + 12345;
				size_t at = (seed >> 8) % len;
				seed = seed * 1103515245 + 12345;
				p[at] = interesting[(seed >> 8) % (sizeof(interesting) - 1)];
			}
			check_any(p, len);
			free(p);
		}
		free(data);
	}
}

#define CHECK_EVENT(props) "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:t\r\n" props \
	"END:VEVENT\r\nEND:VCALENDAR\r\n"
#define CHECK_TODO(props) "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\n" props \
	"END:VTODO\r\nEND:VCALENDAR\r\n"

static void test_check_times(void **state)
{
	static const struct {
		const char *data;
		const char *why;	/* NULL: fine */
	} cases[] = {
		{ CHECK_EVENT("DTSTART:20240108T100000Z\r\nDTEND:20240108T110000Z\r\n"), NULL },
		{ CHECK_EVENT("DTSTART:20240108T100000Z\r\nDTEND:20240108T100000Z\r\n"), NULL },
		{ CHECK_EVENT("DTSTART:20240108T100000Z\r\nDURATION:PT1H\r\n"), NULL },
		{ CHECK_EVENT("DTSTART;VALUE=DATE:20240108\r\n"), NULL },
		{ CHECK_EVENT("DTSTART:20240108T100000Z\r\nDTEND:20240108T090000Z\r\n"),
		  "it ends before it starts" },
		{ CHECK_EVENT("DTSTART;TZID=Europe/Zurich:20240108T100000\r\n"
			      "DTEND:20240108T083000Z\r\n"), "it ends before it starts" },
		/* 10:00 in Zurich is 09:00 UTC: 09:30 UTC is later. */
		{ CHECK_EVENT("DTSTART;TZID=Europe/Zurich:20240108T100000\r\n"
			      "DTEND:20240108T093000Z\r\n"), NULL },
		{ CHECK_EVENT("DTSTART:20240108T100000Z\r\nDTEND:20240108T110000Z\r\n"
			      "DURATION:PT1H\r\n"), "DTEND and DURATION together" },
		{ CHECK_EVENT("DTSTART;VALUE=DATE:20240108\r\nDTEND:20240109T000000Z\r\n"),
		  "DTSTART and DTEND of different value types" },
		{ CHECK_TODO("DTSTART:20240108T100000Z\r\nDUE:20240107T100000Z\r\n"),
		  "it is due before it starts" },
		{ CHECK_TODO("DUE:20240107T100000Z\r\nDURATION:PT1H\r\n"),
		  "DUE and DURATION together" },
		{ CHECK_TODO("DUE:20240107T100000Z\r\n"), NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *why = NULL;
		int r = ks_ical_check_times(cases[i].data, strlen(cases[i].data), &why);

		if (!cases[i].why) {
			assert_int_equal(r, 0);
			assert_null(why);
		} else {
			assert_int_equal(r, -EDOM);
			assert_non_null(why);
			assert_string_equal(why, cases[i].why);
		}
		free(why);
	}
	assert_int_equal(ks_ical_check_times("garbage", 7, NULL), -EBADMSG);
}

/* The time window [2026-01-01T00:00Z, 2026-02-01T00:00Z]. */
#define WIN_START ((int64_t) 1767225600)
#define WIN_END ((int64_t) 1769904000)

static char *window_cal(const char *body)
{
	char *s;
	assert_true(asprintf(&s, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n%s"
			     "END:VCALENDAR\r\n", body) > 0);
	return s;
}

static void test_window(void **state)
{
	static const struct {
		const char *what;
		const char *body;
		int in;
		int64_t next;	/* -1: not checked */
	} cases[] = {
		{ "inside", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260115T100000Z\r\n"
		  "DTEND:20260115T110000Z\r\nEND:VEVENT\r\n", 1, -1 },
		{ "long before", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250601T100000Z\r\n"
		  "DTEND:20250601T110000Z\r\nEND:VEVENT\r\n", 0, 0 },
		{ "after", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260310T100000Z\r\n"
		  "DTEND:20260310T110000Z\r\nEND:VEVENT\r\n", 0, 1773136800 },
		{ "across the start", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20251231T230000Z\r\n"
		  "DTEND:20260101T010000Z\r\nEND:VEVENT\r\n", 1, -1 },
		{ "ends just before", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20251231T220000Z\r\n"
		  "DTEND:20251231T230000Z\r\nEND:VEVENT\r\n", 0, -1 },
		{ "time zone", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART;TZID=Europe/Berlin:20251231T230000\r\n"
		  "DTEND;TZID=Europe/Berlin:20260101T003000\r\nEND:VEVENT\r\n", 0, -1 },
		{ "time zone inside", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART;TZID=America/New_York:20251231T183000\r\n"
		  "DTEND;TZID=America/New_York:20251231T191500\r\nEND:VEVENT\r\n", 1, -1 },
		{ "all-day the day before", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART;VALUE=DATE:20251231\r\nEND:VEVENT\r\n", 1, -1 },
		{ "all-day days before", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART;VALUE=DATE:20251228\r\nDTEND;VALUE=DATE:20251229\r\nEND:VEVENT\r\n",
		  0, -1 },
		{ "floating near the start", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:20251231T203000\r\nDTEND:20251231T210000\r\nEND:VEVENT\r\n", 1, -1 },
		{ "no DTSTART", "BEGIN:VEVENT\r\nUID:a\r\nSUMMARY:x\r\nEND:VEVENT\r\n", 1, -1 },
		{ "bad DTSTART", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:2025-13-45\r\nEND:VEVENT\r\n",
		  1, -1 },
		{ "bad DTEND", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250101T000000Z\r\n"
		  "DTEND:yesterday\r\nEND:VEVENT\r\n", 1, -1 },
		{ "no end, old", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250101T000000Z\r\n"
		  "END:VEVENT\r\n", 0, -1 },
		{ "duration into the window", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:20251230T000000Z\r\nDURATION:P3D\r\nEND:VEVENT\r\n", 1, -1 },
		{ "duration short of it", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:20251230T000000Z\r\nDURATION:PT12H\r\nEND:VEVENT\r\n", 0, -1 },
		{ "task", "BEGIN:VTODO\r\nUID:a\r\nDTSTART:20200101T000000Z\r\n"
		  "DUE:20200102T000000Z\r\nEND:VTODO\r\n", 1, -1 },
		{ "journal", "BEGIN:VJOURNAL\r\nUID:a\r\nDTSTART:20200101T000000Z\r\n"
		  "END:VJOURNAL\r\n", 1, -1 },
		{ "weekly forever", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20200106T090000Z\r\n"
		  "DTEND:20200106T100000Z\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n", 1, -1 },
		{ "weekly until 2021", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20200106T090000Z\r\n"
		  "DTEND:20200106T100000Z\r\nRRULE:FREQ=WEEKLY;UNTIL=20210101T000000Z\r\n"
		  "END:VEVENT\r\n", 0, -1 },
		{ "yearly birthday", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20000715\r\n"
		  "RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n", 0, 1784073600 - 26 * 3600 },
		{ "yearly in January", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20000115\r\n"
		  "RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n", 1, -1 },
		{ "daily count reaching in", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:20251225T090000Z\r\nDTEND:20251225T100000Z\r\n"
		  "RRULE:FREQ=DAILY;COUNT=10\r\nEND:VEVENT\r\n", 1, -1 },
		{ "daily count short", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:20251225T090000Z\r\nDTEND:20251225T100000Z\r\n"
		  "RRULE:FREQ=DAILY;COUNT=3\r\nEND:VEVENT\r\n", 0, -1 },
		{ "minutely for decades", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:19900101T000000Z\r\nRRULE:FREQ=MINUTELY;UNTIL=20300101T000000Z\r\n"
		  "END:VEVENT\r\n", 1, -1 },
		{ "minutely, ended", "BEGIN:VEVENT\r\nUID:a\r\n"
		  "DTSTART:19900101T000000Z\r\nRRULE:FREQ=MINUTELY;UNTIL=20250101T000000Z\r\n"
		  "END:VEVENT\r\n", 0, -1 },
		{ "rdate inside", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250101T090000Z\r\n"
		  "DTEND:20250101T100000Z\r\nRDATE:20260120T090000Z\r\nEND:VEVENT\r\n", 1, -1 },
		{ "rdate outside", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250101T090000Z\r\n"
		  "DTEND:20250101T100000Z\r\nRDATE:20250220T090000Z\r\nEND:VEVENT\r\n", 0, -1 },
		{ "instance moved in", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20250101T090000Z\r\n"
		  "DTEND:20250101T100000Z\r\nRRULE:FREQ=DAILY;COUNT=2\r\nEND:VEVENT\r\n"
		  "BEGIN:VEVENT\r\nUID:a\r\nRECURRENCE-ID:20250102T090000Z\r\n"
		  "DTSTART:20260110T090000Z\r\nDTEND:20260110T100000Z\r\nEND:VEVENT\r\n", 1, -1 },
		{ "event and task", "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20200101T000000Z\r\n"
		  "END:VEVENT\r\nBEGIN:VTODO\r\nUID:a\r\nEND:VTODO\r\n", 1, -1 },
		{ "nothing at all", "", 1, -1 },
	};

	(void) state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *s = window_cal(cases[i].body);
		int64_t next = 12345;
		int r = ks_ical_in_window(s, strlen(s), WIN_START, WIN_END, &next);
		if (r != cases[i].in)
			fail_msg("%s: %d, not %d", cases[i].what, r, cases[i].in);
		if (r == 1)
			assert_int_equal(next, 0);
		if (cases[i].next >= 0 && next != cases[i].next)
			fail_msg("%s: next %lld, not %lld", cases[i].what, (long long) next,
				 (long long) cases[i].next);
		/* An open side takes everything on that side in. */
		assert_int_equal(ks_ical_in_window(s, strlen(s), 0, 0, NULL), 1);
		free(s);
	}
	/* What does not parse is kept. */
	static const char *const junk[] = { "", "garbage", "BEGIN:VCALENDAR\r\n",
					    "BEGIN:VCARD\r\nVERSION:4.0\r\nEND:VCARD\r\n",
					    "BEGIN:VCALENDAR\r\n\xff\xfe\r\nEND:VCALENDAR\r\n" };
	for (size_t i = 0; i < ELEMENTSOF(junk); i++)
		assert_int_equal(ks_ical_in_window(junk[i], strlen(junk[i]), WIN_START, WIN_END,
						   NULL), 1);
	/* Open on one side. */
	char *old = window_cal("BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20200101T000000Z\r\nEND:VEVENT\r\n");
	assert_int_equal(ks_ical_in_window(old, strlen(old), 0, WIN_END, NULL), 1);
	assert_int_equal(ks_ical_in_window(old, strlen(old), WIN_START, 0, NULL), 0);
	free(old);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_inline),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_huge),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_many_properties),
		cmocka_unit_test(test_kind_strings),
		cmocka_unit_test(test_dispatch),
		cmocka_unit_test(test_libical_state),
		cmocka_unit_test(test_robustness),
		cmocka_unit_test(test_check_times),
		cmocka_unit_test(test_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

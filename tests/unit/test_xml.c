/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf_p.h"
#include "limits.h"
#include "macro.h"
#include "xml_p.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static char *fixture_read(const char *name, size_t *ret_len)
{
	const char *dir = getenv("KSYNC_FIXTURES");
	char path[4096];
	ks_buf b = {};
	char chunk[8192];
	size_t n;

	if (!dir)
		dir = "tests/fixtures";
	snprintf(path, sizeof(path), "%s/xml/%s", dir, name);
	FILE *f = fopen(path, "re");
	if (!f)
		fail_msg("cannot open fixture %s (set KSYNC_FIXTURES)", path);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_int_equal(ks_buf_append(&b, chunk, n), 0);
	fclose(f);
	*ret_len = b.len;
	return ks_buf_steal(&b);
}

/* Everything the callback sees, as text: one "key=value" line per field that is set. */
typedef struct collect {
	ks_buf dump;
	size_t calls;
	size_t fail_at;		/* 1-based call that returns fail_r; 0 = never */
	int fail_r;
	const char *want_href;	/* when set, data of that href is copied to data */
	ks_buf data;
	bool data_seen;
} collect;

static void collect_done(collect *c)
{
	ks_buf_done(&c->dump);
	ks_buf_done(&c->data);
}

static void dump_str(ks_buf *b, const char *key, const char *v)
{
	if (v)
		assert_int_equal(ks_buf_printf(b, "%s=%s\n", key, v), 0);
}

static void dump_bits(ks_buf *b, const char *key, unsigned bits, const char *const *names,
		      size_t n)
{
	const char *sep = "";

	assert_int_equal(ks_buf_printf(b, "%s=", key), 0);
	for (size_t i = 0; i < n; i++)
		if (bits & (1u << i)) {
			assert_int_equal(ks_buf_printf(b, "%s%s", sep, names[i]), 0);
			sep = ",";
		}
	assert_int_equal(ks_buf_puts(b, "\n"), 0);
}

static void dump_response(ks_buf *b, const ks_ms_response *r)
{
	static const char *const rt[] = { "collection", "calendar", "addressbook", "principal" };
	static const char *const comp[] = { "VEVENT", "VTODO", "VJOURNAL" };
	static const char *const priv[] = { "read", "write", "write-content", "bind", "unbind" };

	assert_non_null(r->href);
	dump_str(b, "href", r->href);
	if (r->status)
		assert_int_equal(ks_buf_printf(b, "status=%d\n", r->status), 0);
	dump_str(b, "etag", r->etag);
	dump_str(b, "displayname", r->displayname);
	dump_str(b, "color", r->color);
	dump_str(b, "sync-token", r->sync_token);
	dump_str(b, "ctag", r->ctag);
	dump_str(b, "principal", r->principal);
	dump_str(b, "calendar-home", r->calendar_home);
	dump_str(b, "addressbook-home", r->addressbook_home);
	dump_str(b, "description", r->description);
	if (r->data) {
		assert_int_equal(strlen(r->data), r->data_len);
		assert_int_equal(ks_buf_printf(b, "data=%zu\n", r->data_len), 0);
	} else
		assert_int_equal(r->data_len, 0);
	if (r->has_resourcetype)
		dump_bits(b, "rt", r->resourcetype, rt, ELEMENTSOF(rt));
	else
		assert_int_equal(r->resourcetype, 0);
	if (r->has_components)
		dump_bits(b, "comp", r->components, comp, ELEMENTSOF(comp));
	else
		assert_int_equal(r->components, 0);
	if (r->has_privileges)
		dump_bits(b, "priv", r->privileges, priv, ELEMENTSOF(priv));
	else
		assert_int_equal(r->privileges, 0);
	if (r->has_sync_report)
		assert_int_equal(ks_buf_puts(b, "sync-report\n"), 0);
	else if (r->has_report_set)
		assert_int_equal(ks_buf_puts(b, "reports-without-sync\n"), 0);
	assert_int_equal(ks_buf_puts(b, "--\n"), 0);
}

static int collect_cb(const ks_ms_response *r, void *userdata)
{
	collect *c = userdata;

	c->calls++;
	dump_response(&c->dump, r);
	if (c->want_href && strcmp(r->href, c->want_href) == 0) {
		ks_buf_reset(&c->data);
		if (r->data)
			assert_int_equal(ks_buf_append(&c->data, r->data, r->data_len), 0);
		c->data_seen = true;
	}
	if (c->fail_at && c->calls == c->fail_at)
		return c->fail_r;
	return 0;
}

/* Parses doc fed in pieces of chunk bytes (0: all at once). *ret_token gets a copy of the
 * top-level sync token, if any. */
static int parse_doc(const char *doc, size_t len, size_t chunk, collect *c, char **ret_token)
{
	ks_ms_parser *p = NULL;
	int r;

	assert_int_equal(ks_ms_parser_new(collect_cb, c, &p), 0);
	if (chunk == 0)
		chunk = len;
	r = 0;
	for (size_t off = 0; off < len && r >= 0; off += chunk)
		r = ks_ms_parser_feed(p, doc + off, KS_MIN(chunk, len - off));
	if (r >= 0)
		r = ks_ms_parser_finish(p);
	if (r >= 0)
		assert_int_equal(ks_ms_parser_count(p), c->calls);
	if (ret_token) {
		const char *t = ks_ms_parser_sync_token(p);
		*ret_token = t ? strdup(t) : NULL;
	}
	ks_ms_parser_free(p);
	return r;
}

static int parse_simple(const char *doc, size_t len, size_t chunk)
{
	collect c = {};
	int r = parse_doc(doc, len, chunk, &c, NULL);

	collect_done(&c);
	return r;
}

static const size_t chunk_sizes[] = { 0, 1, 7, 4096 };

/* libxml2 prints to stderr by default; the parser must keep it quiet whatever it is fed. */
typedef struct stderr_capture {
	int saved;
	FILE *f;
} stderr_capture;

static void stderr_begin(stderr_capture *s)
{
	fflush(stderr);
	s->f = tmpfile();
	assert_non_null(s->f);
	s->saved = dup(STDERR_FILENO);
	assert_true(s->saved >= 0);
	assert_true(dup2(fileno(s->f), STDERR_FILENO) >= 0);
}

static long stderr_end(stderr_capture *s)
{
	fflush(stderr);
	assert_true(dup2(s->saved, STDERR_FILENO) >= 0);
	close(s->saved);
	long n = ftell(s->f);
	struct stat st;
	assert_int_equal(fstat(fileno(s->f), &st), 0);
	fclose(s->f);
	return KS_MAX(n, (long) st.st_size);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- realistic server responses ------------------------------------------------------------ */

static const struct {
	const char *file;
	const char *sync_token;
	size_t n;
	const char *dump;
} fixtures[] = {
	{ "radicale_principal.xml", NULL, 1,
	  "href=/alice/\n"
	  "principal=/alice/\n"
	  "calendar-home=/alice/\n"
	  "addressbook-home=/alice/\n"
	  "rt=collection,principal\n"
	  "--\n" },
	{ "radicale_home_depth1.xml", NULL, 4,
	  "href=/alice/\n"
	  "rt=collection,principal\n"
	  "priv=read,write,write-content,bind,unbind\n"
	  "--\n"
	  "href=/alice/8a3b2f5e-0c1d-4e6f-9a7b-2c4d6e8f0a1b/\n"
	  "displayname=Work\n"
	  "color=#2a78c4ff\n"
	  "sync-token=http://radicale.org/ns/sync/"
	  "5e4f7c2a9b8d1e3f6a0c4b7d9e2f5a8c1b3d6e9f0a2c4e6b8d0f1a3c5e7b9d1f\n"
	  "ctag=\"5e4f7c2a9b8d1e3f6a0c4b7d9e2f5a8c\"\n"
	  "description=Office calendar\n"
	  "rt=collection,calendar\n"
	  "comp=VEVENT\n"
	  "priv=read,write,write-content,bind,unbind\n"
	  "sync-report\n"
	  "--\n"
	  "href=/alice/tasks/\n"
	  "displayname=Tasks\n"
	  "sync-token=http://radicale.org/ns/sync/d41d8cd98f00b204e9800998ecf8427e\n"
	  "ctag=\"d41d8cd98f00b204e9800998ecf8427e\"\n"
	  "rt=collection,calendar\n"
	  "comp=VTODO,VJOURNAL\n"
	  "priv=read\n"
	  "sync-report\n"
	  "--\n"
	  "href=/alice/contacts/\n"
	  "displayname=Contacts\n"
	  "sync-token=http://radicale.org/ns/sync/0f1e2d3c4b5a69788796a5b4c3d2e1f0\n"
	  "ctag=\"0f1e2d3c4b5a69788796a5b4c3d2e1f0\"\n"
	  "description=Family and friends\n"
	  "rt=collection,addressbook\n"
	  "--\n" },
	{ "infomaniak_principal.xml", NULL, 1,
	  "href=/principals/AB12345/\n"
	  "displayname=Jane Doe\n"
	  "principal=/principals/AB12345/\n"
	  "calendar-home=/calendars/AB12345/\n"
	  "addressbook-home=/addressbooks/AB12345/\n"
	  "rt=principal\n"
	  "--\n" },
	{ "sabredav_calendar_home.xml", NULL, 5,
	  "href=/calendars/AB12345/\n"
	  "rt=collection\n"
	  "priv=read\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/\n"
	  "displayname=Personal\n"
	  "color=#0082C9FF\n"
	  "sync-token=http://sabre.io/ns/sync/1842\n"
	  "ctag=http://sabre.io/ns/sync/1842\n"
	  "rt=collection,calendar\n"
	  "comp=VEVENT\n"
	  "priv=read,write,write-content,bind,unbind\n"
	  "sync-report\n"
	  "--\n"
	  "href=/calendars/AB12345/tasks-1/\n"
	  "displayname=T\xc3\xa2" "ches\n"
	  "color=#E6C800\n"
	  "sync-token=http://sabre.io/ns/sync/77\n"
	  "ctag=http://sabre.io/ns/sync/77\n"
	  "rt=collection,calendar\n"
	  "comp=VTODO\n"
	  "priv=read,write,write-content,bind,unbind\n"
	  "sync-report\n"
	  "--\n"
	  "href=/calendars/AB12345/team-shared_shared_by_CD67890/\n"
	  "displayname=Team (Carla)\n"
	  "color=#795AAB\n"
	  "sync-token=http://sabre.io/ns/sync/305\n"
	  "ctag=http://sabre.io/ns/sync/305\n"
	  "description=Shared by Carla\n"
	  "rt=collection,calendar\n"
	  "comp=VEVENT,VTODO\n"
	  "priv=read\n"
	  "--\n"
	  "href=/calendars/AB12345/inbox/\n"
	  "rt=collection\n"
	  "--\n" },
	{ "sabredav_addressbook_home.xml", NULL, 3,
	  "href=/addressbooks/AB12345/\n"
	  "rt=collection\n"
	  "--\n"
	  "href=/addressbooks/AB12345/contacts/\n"
	  "displayname=Contacts\n"
	  "sync-token=http://sabre.io/ns/sync/912\n"
	  "ctag=http://sabre.io/ns/sync/912\n"
	  "description=Personal contacts\n"
	  "rt=collection,addressbook\n"
	  "priv=read,write,write-content,bind,unbind\n"
	  "sync-report\n"
	  "--\n"
	  "href=/addressbooks/AB12345/organisation-7/\n"
	  "displayname=Organisation\n"
	  "sync-token=http://sabre.io/ns/sync/15\n"
	  "ctag=http://sabre.io/ns/sync/15\n"
	  "rt=collection,addressbook\n"
	  "priv=read\n"
	  "--\n" },
	{ "sabredav_sync_collection.xml", "http://sabre.io/ns/sync/1843", 5,
	  "href=/calendars/AB12345/personal/7b5c3d2e-1a9f-4c55-8e21-3f0d6b9a4c17.ics\n"
	  "etag=\"2b8e5a6f3c1d9e0a7b4c2d5e8f1a3b6c\"\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/Meeting%20Notes%40Home.ics\n"
	  "etag=\"9f86d081884c7d659a2feaa0c55ad015\"\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/caf%c3%a9-meeting.ics\n"
	  "etag=\"e3b0c44298fc1c149afbf4c8996fb924\"\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/0a1b2c3d-deleted.ics\n"
	  "status=404\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/4e5f6a7b-deleted.ics\n"
	  "status=404\n"
	  "--\n" },
	{ "xandikos_sync_truncated.xml", "http://xandikos.org/sync/c0ffee12", 4,
	  "href=/user/calendars/calendar/4b2d7c1e.ics\n"
	  "etag=\"8c3f7a2e1b9d4c6f0e5a3b8d2c7f1e4a\"\n"
	  "--\n"
	  "href=/user/calendars/calendar/9e1a5c3b.ics\n"
	  "etag=\"1d4e7a0b3c6f9e2d5a8b1c4f7e0a3d6b\"\n"
	  "--\n"
	  "href=/user/calendars/calendar/gone.ics\n"
	  "status=404\n"
	  "--\n"
	  "href=/user/calendars/calendar/\n"
	  "status=507\n"
	  "--\n" },
	{ "sabredav_calendar_multiget.xml", NULL, 3,
	  "href=/calendars/AB12345/personal/7b5c3d2e-1a9f-4c55-8e21-3f0d6b9a4c17.ics\n"
	  "etag=\"2b8e5a6f3c1d9e0a7b4c2d5e8f1a3b6c\"\n"
	  "data=254\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/c8a1f0e2-5b3d-4f7a-9e6c-1d2b3a4c5e6f.ics\n"
	  "etag=\"5d41402abc4b2a76b9719d911017c592\"\n"
	  "data=221\n"
	  "--\n"
	  "href=/calendars/AB12345/personal/vanished.ics\n"
	  "status=404\n"
	  "--\n" },
	{ "icloud_calendar_multiget.xml", NULL, 2,
	  "href=/1234567890/calendars/home/A1B2C3D4-E5F6-7890-ABCD-EF1234567890.ics\n"
	  "etag=\"lr5dyvq1\"\n"
	  "data=299\n"
	  "--\n"
	  "href=/1234567890/calendars/home/missing-event.ics\n"
	  "status=404\n"
	  "--\n" },
	{ "xandikos_calendar_multiget.xml", NULL, 1,
	  "href=/user/calendars/journal/f00dfeed-0001.ics\n"
	  "etag=\"a9993e364706816aba3e25717850c26c\"\n"
	  "data=163\n"
	  "--\n" },
	{ "multiget_cdata_vs_text.xml", NULL, 4,
	  "href=/cal/cdata.ics\n"
	  "etag=\"1\"\n"
	  "data=158\n"
	  "--\n"
	  "href=/cal/text.ics\n"
	  "etag=\"2\"\n"
	  "data=158\n"
	  "--\n"
	  "href=/cal/split.ics\n"
	  "etag=\"3\"\n"
	  "data=158\n"
	  "--\n"
	  "href=/cal/pretty.ics\n"
	  "etag=\"4\"\n"
	  "data=169\n"
	  "--\n" },
	{ "sabredav_addressbook_multiget.xml", NULL, 3,
	  "href=/addressbooks/AB12345/contacts/3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9.vcf\n"
	  "etag=\"a3f5c7e9b1d3f5a7c9e1b3d5f7a9c1e3\"\n"
	  "data=222\n"
	  "--\n"
	  "href=/addressbooks/AB12345/contacts/not-there.vcf\n"
	  "status=404\n"
	  "--\n"
	  "href=/addressbooks/AB12345/contacts/8e7d6c5b-4a39-2817-0615-f4e3d2c1b0a9.vcf\n"
	  "etag=\"0cc175b9c0f1b6a831c399e269772661\"\n"
	  "data=122\n"
	  "--\n" },
	{ "google_calendar_depth1.xml", NULL, 3,
	  "href=/caldav/v2/jane.doe%40gmail.com/events/\n"
	  "displayname=jane.doe@gmail.com\n"
	  "color=#9FC6E7\n"
	  "sync-token=https://www.google.com/calendar/dav/jane.doe%40gmail.com/events/sync/"
	  "CPDe2Lm3uIQDEPDe2Lm3uIQDGAUg6Mrj1wI=\n"
	  "ctag=63841234567\n"
	  "rt=collection,calendar\n"
	  "--\n"
	  "href=/caldav/v2/jane.doe%40gmail.com/events/"
	  "5ab3kq2pnd0m8rv6fq0c4o7u1a%40google.com.ics\n"
	  "etag=\"63841234001\"\n"
	  "rt=\n"
	  "--\n"
	  "href=/caldav/v2/jane.doe%40gmail.com/events/abc%2bdef%3a1.ics\n"
	  "etag=\"63841234002\"\n"
	  "rt=\n"
	  "--\n" },
	{ "odd_prefixes.xml", NULL, 2,
	  "href=/ab/odd/1.vcf\n"
	  "etag=\"right\"\n"
	  "data=55\n"
	  "--\n"
	  "href=/cal/odd/\n"
	  "displayname=Odd  name\n"
	  "calendar-home=/cal/home/\n"
	  "rt=collection,calendar\n"
	  "comp=VTODO\n"
	  "--\n" },
};

static void test_fixtures(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(fixtures); i++) {
		size_t len;
		_cleanup_free_ char *doc = fixture_read(fixtures[i].file, &len);

		for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
			collect c = {};
			_cleanup_free_ char *token = NULL;

			int r = parse_doc(doc, len, chunk_sizes[j], &c, &token);

			if (r != 0 || !c.dump.data || strcmp(c.dump.data, fixtures[i].dump) != 0)
				print_error("%s, chunks of %zu\n", fixtures[i].file, chunk_sizes[j]);
			assert_int_equal(r, 0);
			assert_string_equal(c.dump.data ? c.dump.data : "", fixtures[i].dump);
			assert_int_equal(c.calls, fixtures[i].n);
			if (fixtures[i].sync_token)
				assert_string_equal(token, fixtures[i].sync_token);
			else
				assert_null(token);
			collect_done(&c);
		}
	}
}

/* Every cut of a valid body before the end of its root element is a truncated body. */
static void test_fixture_prefixes_fail(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(fixtures); i++) {
		size_t len;
		_cleanup_free_ char *doc = fixture_read(fixtures[i].file, &len);
		size_t root_end = (size_t) (strrchr(doc, '>') - doc) + 1;
		size_t step = root_end > 1500 ? root_end / 1500 : 1;

		for (size_t cut = 0; cut < root_end; cut += step) {
			int r = parse_simple(doc, cut, cut % 2 ? 1 : 0);
			if (r != -EBADMSG)
				fail_msg("%s cut at %zu: %d", fixtures[i].file, cut, r);
		}
		assert_int_equal(parse_simple(doc, root_end, 0), 0);
	}
}

static const struct {
	const char *file;
	const char *href;
	const char *data;
} exact_data[] = {
	{ "sabredav_calendar_multiget.xml",
	  "/calendars/AB12345/personal/c8a1f0e2-5b3d-4f7a-9e6c-1d2b3a4c5e6f.ics",
	  "BEGIN:VCALENDAR\r\n"
	  "VERSION:2.0\r\n"
	  "PRODID:-//Nextcloud calendar v4.6.5\r\n"
	  "BEGIN:VTODO\r\n"
	  "UID:c8a1f0e2-5b3d-4f7a-9e6c-1d2b3a4c5e6f\r\n"
	  "DTSTAMP:20240302T101500Z\r\n"
	  "SUMMARY:Buy milk & bread\r\n"
	  "STATUS:NEEDS-ACTION\r\n"
	  "END:VTODO\r\n"
	  "END:VCALENDAR\r\n" },
	/* CR LF inside CDATA reaches us as LF: XML end-of-line handling applies there too. */
	{ "icloud_calendar_multiget.xml",
	  "/1234567890/calendars/home/A1B2C3D4-E5F6-7890-ABCD-EF1234567890.ics",
	  "BEGIN:VCALENDAR\n"
	  "VERSION:2.0\n"
	  "PRODID:-//Apple Inc.//iOS 17.3//EN\n"
	  "BEGIN:VEVENT\n"
	  "UID:A1B2C3D4-E5F6-7890-ABCD-EF1234567890\n"
	  "DTSTAMP:20240110T120000Z\n"
	  "DTSTART;TZID=Europe/Zurich:20240115T090000\n"
	  "DTEND;TZID=Europe/Zurich:20240115T100000\n"
	  "SUMMARY:Standup <daily>\n"
	  "DESCRIPTION:Agenda: A&B\n"
	  "END:VEVENT\n"
	  "END:VCALENDAR\n" },
	{ "xandikos_calendar_multiget.xml", "/user/calendars/journal/f00dfeed-0001.ics",
	  "BEGIN:VCALENDAR\n"
	  "VERSION:2.0\n"
	  "PRODID:-//xandikos//EN\n"
	  "BEGIN:VJOURNAL\n"
	  "UID:f00dfeed-0001\n"
	  "DTSTAMP:20240201T080000Z\n"
	  "SUMMARY:Notes: R&D <draft>\n"
	  "END:VJOURNAL\n"
	  "END:VCALENDAR\n" },
	{ "sabredav_addressbook_multiget.xml",
	  "/addressbooks/AB12345/contacts/8e7d6c5b-4a39-2817-0615-f4e3d2c1b0a9.vcf",
	  "BEGIN:VCARD\r\n"
	  "VERSION:3.0\r\n"
	  "UID:8e7d6c5b-4a39-2817-0615-f4e3d2c1b0a9\r\n"
	  "FN:Ada & Co\r\n"
	  "N:;Ada & Co;;;\r\n"
	  "ORG:Ada & Co\r\n"
	  "END:VCARD\r\n" },
	{ "odd_prefixes.xml", "/ab/odd/1.vcf",
	  "BEGIN:VCARD\nVERSION:4.0\nUID:odd-1\nFN:Odd One\nEND:VCARD\n" },
};

#define SAME_EVENT                                                                         \
	"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//ksync test//EN\nBEGIN:VEVENT\nUID:same-1\n" \
	"DTSTAMP:20240101T000000Z\nSUMMARY:a < b && c > d ]] done\nEND:VEVENT\nEND:VCALENDAR\n"

static const struct {
	const char *href;
	const char *data;
} same_event[] = {
	{ "/cal/cdata.ics", SAME_EVENT },
	{ "/cal/text.ics", SAME_EVENT },
	{ "/cal/split.ics", SAME_EVENT },
	/* Whitespace the server put around the object is part of the text and is kept. */
	{ "/cal/pretty.ics", "\n      " SAME_EVENT "    " },
};

static void check_data(const char *file, const char *href, const char *want)
{
	size_t len;
	_cleanup_free_ char *doc = fixture_read(file, &len);

	for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
		collect c = { .want_href = href };

		assert_int_equal(parse_doc(doc, len, chunk_sizes[j], &c, NULL), 0);
		assert_true(c.data_seen);
		assert_int_equal(c.data.len, strlen(want));
		assert_memory_equal(c.data.data, want, c.data.len);
		collect_done(&c);
	}
}

static void test_data_exact(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(exact_data); i++)
		check_data(exact_data[i].file, exact_data[i].href, exact_data[i].data);
	for (size_t i = 0; i < ELEMENTSOF(same_event); i++)
		check_data("multiget_cdata_vs_text.xml", same_event[i].href, same_event[i].data);
}

/* ---- status lines and propstat handling ---------------------------------------------------- */

static int parse_status_doc(const char *line, bool in_propstat, collect *c)
{
	char doc[1024];

	if (!in_propstat)
		snprintf(doc, sizeof(doc),
			 "<multistatus xmlns='DAV:'><response><href>/x</href>"
			 "<status>%s</status></response></multistatus>",
			 line);
	else
		snprintf(doc, sizeof(doc),
			 "<multistatus xmlns='DAV:'><response><href>/x</href><propstat>"
			 "<prop><getetag>\"e\"</getetag></prop><status>%s</status>"
			 "</propstat></response></multistatus>",
			 line);
	return parse_doc(doc, strlen(doc), 0, c, NULL);
}

/* An ETag goes back in If-Match: one with a control character (CR LF would add a header
 * line) is reported as none; tabs and other text are kept as they are. */
static void test_etag_controls(void **state)
{
	static const struct {
		const char *xml;
		const char *dump;
	} cases[] = {
		{ "\"a&#13;&#10;X-Injected: 1\"", NULL },
		{ "\"a\nb\"", NULL },
		{ "\"a&#127;\"", NULL },
		{ "\"a\tb\"", "etag=\"a\tb\"\n" },
		{ "W/\"caf\xc3\xa9\"", "etag=W/\"caf\xc3\xa9\"\n" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char doc[512];
		collect c = {};

		snprintf(doc, sizeof(doc),
			 "<multistatus xmlns='DAV:'><response><href>/x</href><propstat><prop>"
			 "<getetag>%s</getetag></prop><status>HTTP/1.1 200 OK</status></propstat>"
			 "</response></multistatus>", cases[i].xml);
		assert_int_equal(parse_doc(doc, strlen(doc), 0, &c, NULL), 0);
		assert_int_equal(c.calls, 1);
		if (cases[i].dump)
			assert_non_null(strstr(c.dump.data, cases[i].dump));
		else
			assert_null(strstr(c.dump.data, "etag="));
		collect_done(&c);
	}
}

static void test_status_lines(void **state)
{
	static const struct {
		const char *line;
		int code;	/* or a negative errno */
	} cases[] = {
		{ "HTTP/1.1 200 OK", 200 },
		{ "HTTP/2 200", 200 },
		{ "HTTP/1.0 201 Created", 201 },
		{ "HTTP/1.1 404 Not Found", 404 },
		{ "HTTP/1.1 404", 404 },
		{ "\n      HTTP/1.1 507 Insufficient Storage\n    ", 507 },
		{ "http/1.1 403 Forbidden", 403 },
		{ "HTTP/1.1\t424\tFailed Dependency", 424 },
		{ "HTTP/1.1 2000 OK", -EBADMSG },
		{ "HTTP/1.1 20 OK", -EBADMSG },
		{ "HTTP/1.1 099 Low", -EBADMSG },
		{ "HTTP/1.1 600 High", -EBADMSG },
		{ "HTTP/1.1", -EBADMSG },
		{ "HTTP/1.1 OK", -EBADMSG },
		{ "garbage", -EBADMSG },
		{ "", -EBADMSG },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		collect c = {};
		int r = parse_status_doc(cases[i].line, false, &c);

		if (cases[i].code < 0)
			assert_int_equal(r, cases[i].code);
		else {
			char want[64];

			assert_int_equal(r, 0);
			snprintf(want, sizeof(want), "href=/x\nstatus=%d\n--\n", cases[i].code);
			assert_string_equal(c.dump.data, want);
		}
		collect_done(&c);

		c = (collect) {};
		r = parse_status_doc(cases[i].line, true, &c);
		if (cases[i].code < 0)
			assert_int_equal(r, cases[i].code);
		else {
			assert_int_equal(r, 0);
			if (cases[i].code / 100 == 2)
				assert_string_equal(c.dump.data, "href=/x\netag=\"e\"\n--\n");
			else
				assert_string_equal(c.dump.data, "href=/x\n--\n");
		}
		collect_done(&c);
	}
}

static void test_propstat_order_and_merge(void **state)
{
	static const struct {
		const char *body;
		const char *dump;
	} cases[] = {
		/* status before prop */
		{ "<propstat><status>HTTP/1.1 404 Not Found</status><prop><getetag>\"a\"</getetag>"
		  "</prop></propstat><propstat><status>HTTP/1.1 200 OK</status><prop>"
		  "<displayname>N</displayname></prop></propstat>",
		  "href=/x\ndisplayname=N\n--\n" },
		/* a 404 propstat after the 200 one does not undo it */
		{ "<propstat><prop><getetag>\"a\"</getetag>"
		  "<resourcetype><collection/></resourcetype>"
		  "</prop><status>HTTP/1.1 200 OK</status></propstat><propstat><prop><getetag/>"
		  "<resourcetype><calendar xmlns='urn:ietf:params:xml:ns:caldav'/></resourcetype>"
		  "</prop><status>HTTP/1.1 404 Not Found</status></propstat>",
		  "href=/x\netag=\"a\"\nrt=collection\n--\n" },
		/* no status at all: taken as 200 */
		{ "<propstat><prop><getetag>\"a\"</getetag></prop></propstat>",
		  "href=/x\netag=\"a\"\n--\n" },
		/* an empty property in a 200 propstat is present and empty */
		{ "<propstat><prop><displayname/><getetag></getetag></prop>"
		  "<status>HTTP/1.1 200 OK</status></propstat>",
		  "href=/x\netag=\ndisplayname=\n--\n" },
		/* several 2xx propstats add up */
		{ "<propstat><prop><getetag>\"a\"</getetag></prop><status>HTTP/1.1 200 OK</status>"
		  "</propstat><propstat><prop><displayname>D</displayname></prop>"
		  "<status>HTTP/1.1 200 OK</status></propstat>",
		  "href=/x\netag=\"a\"\ndisplayname=D\n--\n" },
		/* 403 on a protected property */
		{ "<propstat><prop><current-user-privilege-set><privilege><all/></privilege>"
		  "</current-user-privilege-set></prop><status>HTTP/1.1 403 Forbidden</status>"
		  "</propstat>",
		  "href=/x\n--\n" },
		/* only the first href of a response names it */
		{ "<href>/y</href><status>HTTP/1.1 404 Not Found</status>",
		  "href=/x\nstatus=404\n--\n" },
		/* whitespace around tokens and hrefs; none in sync-token */
		{ "<propstat><prop><sync-token>\n  tok \n</sync-token><current-user-principal>\n"
		  "  <href>\n /p/ \n</href>\n</current-user-principal></prop></propstat>",
		  "href=/x\nsync-token=tok\nprincipal=/p/\n--\n" },
		/* a DAV:sync-token anywhere but under prop or multistatus is not one */
		{ "<sync-token>no</sync-token><propstat><sync-token>no</sync-token><prop>"
		  "<resourcetype><sync-token/></resourcetype></prop></propstat>",
		  "href=/x\nrt=\n--\n" },
		/* sync-collection counts inside supported-report/report and (Xandikos) right
		 * inside supported-report; a report set without it says the collection has none
		 * (SabreDAV 1.8) */
		{ "<propstat><prop><supported-report-set><report><sync-collection/></report>"
		  "<sync-collection/><supported-report><calendar-query/></supported-report>"
		  "</supported-report-set></prop></propstat>",
		  "href=/x\nreports-without-sync\n--\n" },
		{ "<propstat><prop><supported-report-set><supported-report><report>"
		  "<sync-collection/></report></supported-report></supported-report-set>"
		  "</prop></propstat>",
		  "href=/x\nsync-report\n--\n" },
		{ "<propstat><prop><supported-report-set><supported-report><sync-collection/>"
		  "</supported-report></supported-report-set></prop></propstat>",
		  "href=/x\nsync-report\n--\n" },
		{ "<propstat><prop><supported-report-set><supported-report><report><prop>"
		  "<sync-collection/></prop></report></supported-report></supported-report-set>"
		  "</prop></propstat>",
		  "href=/x\nreports-without-sync\n--\n" },
		/* ... but not one that came with a 404 */
		{ "<propstat><prop><supported-report-set/></prop>"
		  "<status>HTTP/1.1 404 Not Found</status></propstat>",
		  "href=/x\n--\n" },
		/* privileges, one by one */
		{ "<propstat><prop><current-user-privilege-set><privilege><read/></privilege>"
		  "<privilege><write-content/></privilege><privilege><bind/></privilege>"
		  "<read/><privilege><write-properties/><unbind/></privilege>"
		  "</current-user-privilege-set></prop></propstat>",
		  "href=/x\npriv=read,write-content,bind,unbind\n--\n" },
		{ "<propstat><prop><current-user-privilege-set/></prop></propstat>",
		  "href=/x\npriv=\n--\n" },
		/* comp names are matched without regard to case; unknown ones ignored */
		{ "<propstat><prop><C:supported-calendar-component-set "
		  "xmlns:C='urn:ietf:params:xml:ns:caldav'><C:comp name='vevent'/>"
		  "<C:comp name='VJOURNAL'/><C:comp name='VFREEBUSY'/><C:comp/>"
		  "<C:comp C:name='VTODO'/></C:supported-calendar-component-set></prop></propstat>",
		  "href=/x\ncomp=VEVENT,VJOURNAL\n--\n" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char doc[2048];

		snprintf(doc, sizeof(doc),
			 "<multistatus xmlns='DAV:'><response><href>/x</href>%s</response>"
			 "</multistatus>",
			 cases[i].body);
		for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
			collect c = {};

			assert_int_equal(parse_doc(doc, strlen(doc), chunk_sizes[j], &c, NULL), 0);
			assert_string_equal(c.dump.data, cases[i].dump);
			collect_done(&c);
		}
	}
}

/* XML normalizes CR LF and lone CR to LF on input, in text and CDATA alike; only a character
 * reference carries a CR through. */
static void test_line_ends(void **state)
{
	static const struct {
		const char *content;
		const char *data;
	} cases[] = {
		{ "a\r\nb\rc\n", "a\nb\nc\n" },
		{ "<![CDATA[a\r\nb\rc\n]]>", "a\nb\nc\n" },
		{ "a&#13;\nb&#13;&#10;", "a\r\nb\r\n" },
		{ "<![CDATA[a\r]]>&#10;", "a\n\n" },
		{ "<![CDATA[a\r]]>\n", "a\n\n" },
		{ "<![CDATA[a\r]]><![CDATA[\nb]]>", "a\n\nb" },
		{ "\r\n<![CDATA[\r\n]]>\r\n", "\n\n\n" },
		{ "<![CDATA[\r\r\n\n\r]]>", "\n\n\n\n" },
	};
	/* Long enough that libxml2 hands a CDATA section over in several pieces. */
	char pad[700];

	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = 0;
	const size_t pad_lens[] = { 0, 1, 299, 300, 301, 598, 599, 600, 699 };

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		for (size_t k = 0; k < ELEMENTSOF(pad_lens); k++) {
			char doc[2048], want[1024];
			const char *content = cases[i].content;
			bool cdata = strncmp(content, "<![CDATA[", 9) == 0;

			/* In a CDATA case the pad goes inside the first section, so that a CR may
			 * fall at the end of one of the pieces libxml2 cuts it into. */
			snprintf(doc, sizeof(doc),
				 "<multistatus xmlns='DAV:'><response><href>/l</href><propstat>"
				 "<prop><C:address-data xmlns:C='urn:ietf:params:xml:ns:carddav'>"
				 "%s%.*s%s</C:address-data></prop></propstat></response>"
				 "</multistatus>",
				 cdata ? "<![CDATA[" : "", (int) pad_lens[k], pad,
				 cdata ? content + 9 : content);
			snprintf(want, sizeof(want), "%.*s%s", (int) pad_lens[k], pad,
				 cases[i].data);
			for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
				collect c = { .want_href = "/l" };
				int r = parse_doc(doc, strlen(doc), chunk_sizes[j], &c, NULL);

				assert_int_equal(r, 0);
				assert_true(c.data_seen);
				if (strcmp(c.data.data, want) != 0) {
					print_error("case %zu, pad %zu, chunks of %zu: %s\n", i,
						    pad_lens[k], chunk_sizes[j], c.data.data);
					fail();
				}
				collect_done(&c);
			}
		}
}

/* ---- bad input ----------------------------------------------------------------------------- */

static const struct {
	const char *file;
	int r;
} bad_fixtures[] = {
	{ "truncated.xml", -EBADMSG },
	{ "not_multistatus.xml", -EBADMSG },
	{ "no_namespace_root.xml", -EBADMSG },
	{ "doctype.xml", -EBADMSG },
	{ "billion_laughs.xml", -EBADMSG },
	{ "xxe_passwd.xml", -EBADMSG },
	{ "invalid_utf8.xml", -EBADMSG },
};

static const struct {
	const char *name;
	const char *doc;
	size_t len;	/* 0: strlen(doc) */
	int r;
} bad_docs[] = {
	{ "empty body", "", 0, -EBADMSG },
	{ "only whitespace", " \r\n\t ", 0, -EBADMSG },
	{ "only a declaration", "<?xml version='1.0'?>", 0, -EBADMSG },
	{ "html error page", "<html><body>502 Bad Gateway</body></html>", 0, -EBADMSG },
	{ "json", "{\"error\": \"nope\"}", 0, -EBADMSG },
	{ "garbage bytes", "\x00\x01\xff\xfe\x80<d:\x00", 9, -EBADMSG },
	{ "NUL inside text", "<multistatus xmlns='DAV:'>\0</multistatus>", 41, -EBADMSG },
	{ "wrong namespace root", "<d:multistatus xmlns:d='urn:not-dav'/>", 0, -EBADMSG },
	{ "undefined prefix", "<d:multistatus/>", 0, -EBADMSG },
	{ "undefined prefix inside",
	  "<multistatus xmlns='DAV:'><response><x:href>/a</x:href></response></multistatus>", 0,
	  -EBADMSG },
	{ "mismatched tags", "<multistatus xmlns='DAV:'><response></multistatus></response>", 0,
	  -EBADMSG },
	{ "two roots", "<multistatus xmlns='DAV:'/><multistatus xmlns='DAV:'/>", 0, -EBADMSG },
	{ "trailing junk", "<multistatus xmlns='DAV:'/>junk", 0, -EBADMSG },
	{ "undeclared entity", "<multistatus xmlns='DAV:'>&xxe;</multistatus>", 0, -EBADMSG },
	{ "bad char ref", "<multistatus xmlns='DAV:'>&#0;</multistatus>", 0, -EBADMSG },
	{ "control char", "<multistatus xmlns='DAV:'>\x01</multistatus>", 0, -EBADMSG },
	{ "overlong utf-8",
	  "<multistatus xmlns='DAV:'><response><href>/\xc0\xaf</href></response></multistatus>", 0,
	  -EBADMSG },
	{ "utf-8 surrogate",
	  "<multistatus xmlns='DAV:'><response><href>/\xed\xa0\x80</href></response>"
	  "</multistatus>",
	  0, -EBADMSG },
	{ "invalid utf-8 in attribute",
	  "<multistatus xmlns='DAV:' a='\xff'/>", 0, -EBADMSG },
	{ "unknown encoding",
	  "<?xml version='1.0' encoding='x-no-such'?><multistatus xmlns='DAV:'/>", 0, -EBADMSG },
	{ "bytes the declared encoding cannot convert",
	  "<?xml version='1.0' encoding='EUC-JP'?><multistatus xmlns='DAV:'>\x8e\xff\xff\xff"
	  "</multistatus>",
	  0, -EBADMSG },
	/* Stateful encodings convert differently depending on where the body is cut: only
	 * UTF-8 is read. */
	{ "utf-7 declared",
	  "<?xml version='1.0' encoding='utf-7'?><multistatus xmlns='DAV:'><response>"
	  "<href>/a+AGI-</href></response></multistatus>",
	  0, -EBADMSG },
	{ "hz declared",
	  "<?xml version='1.0' encoding='HZ-GB-2312'?><d:multistatus xmlns:d='DAV:'><d:response>"
	  "<d:href>/+2D3eAA-AGI-</d:href></d:response></d:multistatus>",
	  0, -EBADMSG },
	{ "latin-1 declared",
	  "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><multistatus xmlns='DAV:'/>", 0,
	  -EBADMSG },
	{ "utf-16 declared",
	  "<?xml version='1.0' encoding='UTF-16'?><multistatus xmlns='DAV:'/>", 0, -EBADMSG },
	{ "utf-16 byte-order mark", "\xff\xfe<\0m\0/\0>\0", 8, -EBADMSG },
	{ "declaration that does not end", "<?xml version='1.0' encoding='utf-8'", 0, -EBADMSG },
	{ "external dtd", "<!DOCTYPE multistatus SYSTEM 'http://127.0.0.1:1/x.dtd'>"
	  "<multistatus xmlns='DAV:'/>", 0, -EBADMSG },
	{ "parameter entity",
	  "<!DOCTYPE m [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]><multistatus xmlns='DAV:'/>",
	  0, -EBADMSG },
	{ "response without href",
	  "<multistatus xmlns='DAV:'><response><status>HTTP/1.1 404 Not Found</status>"
	  "</response></multistatus>",
	  0, -EBADMSG },
	{ "unterminated cdata",
	  "<multistatus xmlns='DAV:'><response><href><![CDATA[/a</href></response>"
	  "</multistatus>",
	  0, -EBADMSG },
	{ "unterminated comment", "<multistatus xmlns='DAV:'><!-- </multistatus>", 0, -EBADMSG },
	{ "attribute without quotes", "<multistatus xmlns=DAV:/>", 0, -EBADMSG },
	{ "duplicate attribute", "<multistatus xmlns='DAV:' a='1' a='2'/>", 0, -EBADMSG },
};

static void check_bad(const char *name, const char *doc, size_t len, int want)
{
	for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
		stderr_capture cap;
		collect c = {};

		stderr_begin(&cap);
		int r = parse_doc(doc, len, chunk_sizes[j], &c, NULL);
		long printed = stderr_end(&cap);
		if (r != want)
			fail_msg("%s, chunks of %zu: got %d, want %d", name, chunk_sizes[j], r,
				 want);
		if (printed != 0)
			fail_msg("%s: %ld bytes printed to stderr", name, printed);
		/* Nothing from /etc/passwd ever reaches a callback. */
		assert_null(c.dump.data ? strstr(c.dump.data, "root:") : NULL);
		collect_done(&c);
	}
}

static void test_bad_fixtures(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(bad_fixtures); i++) {
		size_t len;
		_cleanup_free_ char *doc = fixture_read(bad_fixtures[i].file, &len);

		check_bad(bad_fixtures[i].file, doc, len, bad_fixtures[i].r);
	}
}

static void test_bad_docs(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(bad_docs); i++) {
		size_t len = bad_docs[i].len ? bad_docs[i].len : strlen(bad_docs[i].doc);

		check_bad(bad_docs[i].name, bad_docs[i].doc, len, bad_docs[i].r);
	}
}

static char *nested_doc(unsigned depth)
{
	ks_buf b = {};

	/* multistatus, response, propstat, prop, then unknown elements down to depth */
	assert_int_equal(ks_buf_puts(&b, "<multistatus xmlns='DAV:'><response><href>/d</href>"
					 "<propstat><prop>"),
			 0);
	for (unsigned d = 5; d <= depth; d++)
		assert_int_equal(ks_buf_puts(&b, "<x:n xmlns:x='urn:x'>"), 0);
	for (unsigned d = 5; d <= depth; d++)
		assert_int_equal(ks_buf_puts(&b, "</x:n>"), 0);
	assert_int_equal(ks_buf_puts(&b, "</prop></propstat></response></multistatus>"), 0);
	return ks_buf_steal(&b);
}

/* UTF-8 and US-ASCII, declared in any case and with or without a byte-order mark, are read
 * alike in every chunking; anything else is refused with a reason naming the encoding. */
static void test_declared_encoding(void **state)
{
	static const char *const ok[] = {
		"<?xml version='1.0' encoding='utf-8'?><multistatus xmlns='DAV:'/>",
		"<?xml version=\"1.0\" encoding = \"UTF-8\" ?>\n<multistatus xmlns='DAV:'/>",
		"\xef\xbb\xbf<?xml version='1.0' encoding='US-ASCII'?><multistatus xmlns='DAV:'/>",
		"\xef\xbb\xbf<multistatus xmlns='DAV:'/>",
		"<?xml version='1.0'?><multistatus xmlns='DAV:'/>",
		"<multistatus xmlns='DAV:'/>",
	};
	static const size_t sizes[] = { 0, 1, 2, 3, 4, 5, 6, 13 };

	for (size_t i = 0; i < ELEMENTSOF(ok); i++)
		for (size_t j = 0; j < ELEMENTSOF(sizes); j++)
			if (parse_simple(ok[i], strlen(ok[i]), sizes[j]) != 0)
				fail_msg("case %zu, chunks of %zu refused", i, sizes[j]);

	static const char utf7[] = "<?xml version='1.0' encoding='utf-7'?><multistatus "
				   "xmlns='DAV:'/>";
	for (size_t j = 0; j < ELEMENTSOF(sizes); j++) {
		ks_ms_parser *p = NULL;
		collect c = {};
		size_t chunk = sizes[j] ? sizes[j] : sizeof(utf7) - 1;
		int r = 0;

		assert_int_equal(ks_ms_parser_new(collect_cb, &c, &p), 0);
		for (size_t off = 0; off < sizeof(utf7) - 1 && r >= 0; off += chunk)
			r = ks_ms_parser_feed(p, utf7 + off, KS_MIN(chunk, sizeof(utf7) - 1 - off));
		if (r >= 0)
			r = ks_ms_parser_finish(p);
		assert_int_equal(r, -EBADMSG);
		assert_non_null(strstr(ks_ms_parser_why(p), "'utf-7'"));
		assert_non_null(strstr(ks_ms_parser_why(p), "UTF-8"));
		ks_ms_parser_free(p);
		collect_done(&c);
	}
}

static void test_depth_cap(void **state)
{
	_cleanup_free_ char *ok = nested_doc(KS_XML_MAX_DEPTH);
	_cleanup_free_ char *deep = nested_doc(KS_XML_MAX_DEPTH + 1);
	_cleanup_free_ char *very = nested_doc(100000);

	for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
		assert_int_equal(parse_simple(ok, strlen(ok), chunk_sizes[j]), 0);
		assert_int_equal(parse_simple(deep, strlen(deep), chunk_sizes[j]), -EBADMSG);
	}
	assert_int_equal(parse_simple(very, strlen(very), 4096), -EBADMSG);
}

static char *text_doc(const char *open, const char *close, size_t n, char fill)
{
	ks_buf b = {};
	char *t = malloc(n + 1);

	assert_non_null(t);
	memset(t, fill, n);
	t[n] = 0;
	assert_int_equal(ks_buf_printf(&b,
				       "<multistatus xmlns='DAV:' "
				       "xmlns:C='urn:ietf:params:xml:ns:caldav'><response>"
				       "<href>/h</href><propstat><prop>%s%s%s</prop></propstat>"
				       "</response></multistatus>",
				       open, t, close),
			 0);
	free(t);
	return ks_buf_steal(&b);
}

static void test_text_caps(void **state)
{
	static const struct {
		const char *open, *close;
		size_t cap;
		int r;
	} cases[] = {
		{ "<displayname>", "</displayname>", KS_XML_MAX_TEXT, -EBADMSG },
		{ "<getetag>", "</getetag>", KS_XML_MAX_TEXT, -EBADMSG },
		{ "<current-user-principal><href>", "</href></current-user-principal>",
		  KS_XML_MAX_TEXT, -EBADMSG },
		/* an oversized item is its own error, so a caller can skip just that item */
		{ "<C:calendar-data>", "</C:calendar-data>", KS_CARD_MAX, -EFBIG },
		{ "<C:calendar-data><![CDATA[", "]]></C:calendar-data>", KS_CARD_MAX, -EFBIG },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		const char *o = cases[i].open, *c = cases[i].close;
		_cleanup_free_ char *ok = text_doc(o, c, cases[i].cap, 'a');
		_cleanup_free_ char *big = text_doc(o, c, cases[i].cap + 1, 'a');

		assert_int_equal(parse_simple(ok, strlen(ok), 0), 0);
		assert_int_equal(parse_simple(ok, strlen(ok), 16384), 0);
		assert_int_equal(parse_simple(big, strlen(big), 0), cases[i].r);
		assert_int_equal(parse_simple(big, strlen(big), 16384), cases[i].r);
	}

	/* The href of the response itself and the top-level token are capped too. */
	ks_buf b = {};
	char *t = calloc(1, KS_XML_MAX_TEXT + 2);
	assert_non_null(t);
	memset(t, 'h', KS_XML_MAX_TEXT + 1);
	assert_int_equal(ks_buf_printf(&b, "<multistatus xmlns='DAV:'><response><href>%s</href>"
					   "</response></multistatus>", t), 0);
	assert_int_equal(parse_simple(b.data, b.len, 0), -EBADMSG);
	ks_buf_reset(&b);
	assert_int_equal(ks_buf_printf(&b, "<multistatus xmlns='DAV:'><sync-token>%s</sync-token>"
					   "</multistatus>", t), 0);
	assert_int_equal(parse_simple(b.data, b.len, 0), -EBADMSG);
	ks_buf_done(&b);
	free(t);
}

/* An external entity, an external DTD and a parameter entity all name a file; the parser must
 * never open it. inotify sees any open, whatever the result. */
static void test_no_external_access(void **state)
{
	char dir[] = "/tmp/ksync-test-xml-XXXXXX";
	char path[256];

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/secret.txt", dir);
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	fputs("KSYNC-SECRET-CONTENT\n", f);
	fclose(f);

	int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(ifd >= 0);
	assert_true(inotify_add_watch(ifd, path, IN_OPEN | IN_ACCESS) >= 0);

	/* Each document is pre + path + post. */
	static const struct {
		const char *pre, *post;
	} docs[] = {
		{ "<?xml version='1.0'?><!DOCTYPE m [<!ENTITY x SYSTEM 'file://",
		  "'>]><multistatus xmlns='DAV:'><response><href>/a&x;</href><propstat><prop>"
		  "<displayname>&x;</displayname></prop></propstat></response></multistatus>" },
		{ "<!DOCTYPE multistatus SYSTEM 'file://", "'><multistatus xmlns='DAV:'/>" },
		{ "<!DOCTYPE m [<!ENTITY % p SYSTEM 'file://",
		  "'> %p;]><multistatus xmlns='DAV:'/>" },
		{ "<!DOCTYPE m [<!ENTITY x SYSTEM '",
		  "'>]><multistatus xmlns='DAV:'>&x;</multistatus>" },
		{ "<multistatus xmlns='DAV:'>&x;<x:include "
		  "xmlns:x='http://www.w3.org/2001/XInclude' href='file://",
		  "' parse='text'/></multistatus>" },
	};

	for (size_t i = 0; i < ELEMENTSOF(docs); i++) {
		char doc[1024];
		snprintf(doc, sizeof(doc), "%s%s%s", docs[i].pre, path, docs[i].post);
		for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
			collect c = {};
			assert_int_equal(parse_doc(doc, strlen(doc), chunk_sizes[j], &c, NULL),
					 -EBADMSG);
			assert_null(c.dump.data ? strstr(c.dump.data, "KSYNC-SECRET") : NULL);
			collect_done(&c);
		}
	}

	char ev[4096];
	ssize_t n = read(ifd, ev, sizeof(ev));
	assert_true(n < 0 && errno == EAGAIN);
	close(ifd);
	unlink(path);
	rmdir(dir);
}

static void test_billion_laughs_fast(void **state)
{
	size_t len;
	_cleanup_free_ char *doc = fixture_read("billion_laughs.xml", &len);
	double t0 = now_sec();

	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(parse_simple(doc, len, 0), -EBADMSG);
	/* Expanded, this is 3 GB of "lol"; refused at the DOCTYPE it costs microseconds. */
	assert_true(now_sec() - t0 < 2.0);
}

/* ---- API behaviour ------------------------------------------------------------------------- */

static void test_callback_error_stops(void **state)
{
	size_t len;
	_cleanup_free_ char *doc = fixture_read("sabredav_sync_collection.xml", &len);

	for (size_t j = 0; j < ELEMENTSOF(chunk_sizes); j++) {
		collect c = { .fail_at = 2, .fail_r = -ECANCELED };
		ks_ms_parser *p = NULL;
		size_t chunk = chunk_sizes[j] ? chunk_sizes[j] : len;
		int r = 0;

		assert_int_equal(ks_ms_parser_new(collect_cb, &c, &p), 0);
		for (size_t off = 0; off < len && r >= 0; off += chunk)
			r = ks_ms_parser_feed(p, doc + off, KS_MIN(chunk, len - off));
		assert_int_equal(r, -ECANCELED);
		assert_int_equal(c.calls, 2);
		/* The error sticks: no more callbacks, and every later call reports it. */
		assert_int_equal(ks_ms_parser_feed(p, "<x/>", 4), -ECANCELED);
		assert_int_equal(ks_ms_parser_finish(p), -ECANCELED);
		assert_int_equal(c.calls, 2);
		ks_ms_parser_free(p);
		collect_done(&c);
	}
}

static int count_cb(const ks_ms_response *r, void *userdata)
{
	(*(size_t *) userdata)++;
	return 0;
}

static void test_lifecycle(void **state)
{
	static const char doc[] = "<multistatus xmlns='DAV:'><response><href>/a</href>"
				  "<status>HTTP/1.1 404 Not Found</status></response>"
				  "</multistatus>\n";
	ks_ms_parser *p = NULL;
	size_t n = 0;

	assert_null(ks_ms_parser_free(NULL));

	assert_int_equal(ks_ms_parser_new(count_cb, &n, &p), 0);
	assert_int_equal(ks_ms_parser_feed(p, doc, 0), 0);
	assert_int_equal(ks_ms_parser_feed(p, doc, sizeof(doc) - 1), 0);
	assert_null(ks_ms_parser_sync_token(p));
	assert_int_equal(ks_ms_parser_finish(p), 0);
	assert_int_equal(ks_ms_parser_finish(p), 0);
	assert_int_equal(ks_ms_parser_feed(p, "x", 1), -EINVAL);
	assert_int_equal(ks_ms_parser_count(p), 1);
	assert_int_equal(n, 1);
	assert_null(ks_ms_parser_free(p));

	/* Freed in the middle of a document. */
	assert_int_equal(ks_ms_parser_new(count_cb, &n, &p), 0);
	assert_int_equal(ks_ms_parser_feed(p, doc, 40), 0);
	ks_ms_parser_free(p);

	/* Never fed at all. */
	assert_int_equal(ks_ms_parser_new(count_cb, &n, &p), 0);
	assert_int_equal(ks_ms_parser_finish(p), -EBADMSG);
	ks_ms_parser_free(p);

	/* An empty multistatus is a valid answer with no members. */
	n = 0;
	assert_int_equal(ks_ms_parser_new(count_cb, &n, &p), 0);
	assert_int_equal(ks_ms_parser_feed(p, "<D:multistatus xmlns:D=\"DAV:\"/>", 31), 0);
	assert_int_equal(ks_ms_parser_finish(p), 0);
	assert_int_equal(n, 0);
	ks_ms_parser_free(p);

	/* The whole body in one call, larger than any internal step. */
	ks_buf b = {};
	assert_int_equal(ks_buf_puts(&b, "<multistatus xmlns='DAV:'>"), 0);
	for (unsigned i = 0; i < 20000; i++)
		assert_int_equal(ks_buf_printf(&b, "<response><href>/i/%u</href><status>"
						   "HTTP/1.1 404 Not Found</status></response>",
					       i),
				 0);
	assert_int_equal(ks_buf_puts(&b, "</multistatus>"), 0);
	n = 0;
	assert_int_equal(ks_ms_parser_new(count_cb, &n, &p), 0);
	assert_int_equal(ks_ms_parser_feed(p, b.data, b.len), 0);
	assert_int_equal(ks_ms_parser_finish(p), 0);
	assert_int_equal(n, 20000);
	ks_ms_parser_free(p);
	ks_buf_done(&b);
}

/* Produces a multistatus of n responses piece by piece, never holding more than one. Even
 * responses carry an etag and calendar-data; odd ones are deleted members (404, no props).
 * Response big_at carries big_len more bytes of data, handed out in pieces. */
typedef struct gen {
	size_t i, n;
	size_t big_at, big_len, big_left;
	bool opened, closed, tail_pending;
	char pending[4096];
	size_t len, off;
} gen;

static void gen_refill(gen *g)
{
	int k = 0;

	g->off = 0;
	if (g->big_left > 0) {
		size_t m = KS_MIN(g->big_left, sizeof(g->pending));
		memset(g->pending, 'x', m);
		g->big_left -= m;
		g->tail_pending = g->big_left == 0;
		g->len = m;
		return;
	}
	if (g->tail_pending) {
		g->tail_pending = false;
		k = snprintf(g->pending, sizeof(g->pending),
			     "]]></cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status>"
			     "</d:propstat></d:response>\n");
	} else if (!g->opened) {
		g->opened = true;
		k = snprintf(g->pending, sizeof(g->pending),
			     "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" "
			     "xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">\n");
	} else if (g->i < g->n) {
		size_t i = g->i++;

		if (i % 2)
			k = snprintf(g->pending, sizeof(g->pending),
				     " <d:response><d:href>/c/%zu.ics</d:href><d:status>HTTP/1.1 "
				     "404 Not Found</d:status></d:response>\n",
				     i);
		else if (i == g->big_at && g->big_len > 0) {
			k = snprintf(g->pending, sizeof(g->pending),
				     " <d:response><d:href>/c/%zu.ics</d:href><d:propstat><d:prop>"
				     "<d:getetag>&quot;%zu&quot;</d:getetag><cal:calendar-data>"
				     "BEGIN:VCALENDAR&#13;\nVERSION:2.0&#13;\n<![CDATA[",
				     i, i);
			g->big_left = g->big_len;
		} else
			k = snprintf(g->pending, sizeof(g->pending),
				     " <d:response><d:href>/c/%zu.ics</d:href><d:propstat><d:prop>"
				     "<d:getetag>&quot;%zu&quot;</d:getetag><cal:calendar-data>"
				     "BEGIN:VCALENDAR&#13;\nVERSION:2.0&#13;\nBEGIN:VEVENT&#13;\n"
				     "UID:%zu&#13;\nSUMMARY:event number %zu&#13;\n"
				     "END:VEVENT&#13;\n"
				     "END:VCALENDAR&#13;\n</cal:calendar-data></d:prop>"
				     "<d:status>HTTP/1.1 200 OK</d:status></d:propstat>"
				     "</d:response>\n",
				     i, i, i, i);
	} else if (!g->closed) {
		g->closed = true;
		k = snprintf(g->pending, sizeof(g->pending), "</d:multistatus>\n");
	}
	g->len = (size_t) k;
}

typedef struct mem_check {
	size_t calls;
	size_t at_10k;
	size_t at_end;
	size_t during_big;
	size_t after_big;
	size_t big_at;
	bool big_seen;
} mem_check;

static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

static int mem_cb(const ks_ms_response *r, void *userdata)
{
	mem_check *m = userdata;
	size_t i = m->calls++;
	char want[64];

	snprintf(want, sizeof(want), "/c/%zu.ics", i);
	assert_string_equal(r->href, want);
	if (i % 2) {
		/* Nothing of the previous response leaks into this one. */
		assert_int_equal(r->status, 404);
		assert_null(r->etag);
		assert_null(r->data);
		assert_int_equal(r->data_len, 0);
	} else {
		snprintf(want, sizeof(want), "\"%zu\"", i);
		assert_int_equal(r->status, 0);
		assert_string_equal(r->etag, want);
		assert_non_null(r->data);
		assert_true(strncmp(r->data, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n", 30) == 0);
		if (i == m->big_at) {
			assert_true(r->data_len > 1024 * 1024);
			m->big_seen = true;
			m->during_big = heap_in_use();
		}
	}
	if (m->calls == 10000)
		m->at_10k = heap_in_use();
	if (m->big_at && m->calls == m->big_at + 3)
		m->after_big = heap_in_use();
	return 0;
}

static void test_memory_flat_100k(void **state)
{
	const size_t n = 100000;
	mem_check m = { .big_at = 50000 };
	gen g = { .n = n, .big_at = 50000, .big_len = 2 * 1024 * 1024 };
	ks_ms_parser *p = NULL;
	char chunk[4096];
	size_t fed = 0;

	assert_int_equal(ks_ms_parser_new(mem_cb, &m, &p), 0);
	for (;;) {
		size_t have = 0;

		while (have < sizeof(chunk)) {
			if (g.off == g.len) {
				gen_refill(&g);
				if (g.len == 0)
					break;
			}
			size_t k = KS_MIN(sizeof(chunk) - have, g.len - g.off);
			memcpy(chunk + have, g.pending + g.off, k);
			have += k;
			g.off += k;
		}
		if (have == 0)
			break;
		assert_int_equal(ks_ms_parser_feed(p, chunk, have), 0);
		fed += have;
	}
	assert_int_equal(ks_ms_parser_finish(p), 0);
	m.at_end = heap_in_use();
	assert_int_equal(m.calls, n);
	assert_int_equal(ks_ms_parser_count(p), n);
	assert_true(m.big_seen);
	ks_ms_parser_free(p);

	print_message("fed %zu bytes; heap at 10k responses %zu, with the 2 MB item %zu, after it "
		      "%zu, at 100k %zu\n", fed, m.at_10k, m.during_big, m.after_big, m.at_end);
	/* mallinfo2() reports 0 under ASan, which has its own heap: nothing to compare then. */
	if (m.at_10k) {
		/* 90,000 more responses cost nothing once the buffers have their size. */
		assert_true(m.at_end < KS_MAX(m.at_10k, m.after_big) + 64 * 1024);
		/* The big item's buffer is given back once its response is done. libxml2 keeps
		 * its input buffer at the size the item needed, once. */
		assert_true(m.after_big + 2 * 1024 * 1024 < m.during_big);
		assert_true(m.after_big < m.at_10k + 3 * g.big_len);
	}
}

/* A 10,000-item addressbook-multiget with 1 KB vCards, as Nextcloud sends it. */
static char *multiget_doc(size_t n, size_t *ret_len, size_t *ret_card_len)
{
	ks_buf b = {};
	char card[1400];
	size_t k = 0, decoded = 0;

	/* Each "&#13;" and "&amp;" is one byte once parsed; decoded counts those bytes. */
	k += (size_t) snprintf(card + k, sizeof(card) - k,
			       "BEGIN:VCARD&#13;\nVERSION:3.0&#13;\nPRODID:-//Sabre//Sabre VObject "
			       "4.5.3//EN&#13;\nFN:Person Name&#13;\nN:Name;Person;;;&#13;\n");
	for (;;) {
		decoded = k;
		for (const char *a = strchr(card, '&'); a; a = strchr(a + 1, '&'))
			decoded -= 4;
		if (decoded >= 1024 - strlen("END:VCARD\r\n"))
			break;
		k += (size_t) snprintf(card + k, sizeof(card) - k,
				       "NOTE:lorem ipsum dolor sit amet &amp; more&#13;\n");
	}
	k += (size_t) snprintf(card + k, sizeof(card) - k, "END:VCARD&#13;\n");
	decoded += strlen("END:VCARD\r\n");

	assert_int_equal(ks_buf_puts(&b, "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" "
					 "xmlns:card=\"urn:ietf:params:xml:ns:carddav\">\n"),
			 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ks_buf_printf(&b,
					       " <d:response>\n  <d:href>/addressbooks/AB12345/"
					       "contacts/%08zx-1a2b-3c4d-5e6f.vcf</d:href>\n"
					       "  <d:propstat>\n   <d:prop>\n    <d:getetag>&quot;"
					       "%032zx&quot;</d:getetag>\n    <card:address-data>"
					       "%s</card:address-data>\n   </d:prop>\n   "
					       "<d:status>HTTP/1.1 200 OK</d:status>\n  "
					       "</d:propstat>\n </d:response>\n",
					       i, i, card),
				 0);
	assert_int_equal(ks_buf_puts(&b, "</d:multistatus>\n"), 0);
	*ret_len = b.len;
	*ret_card_len = decoded;
	return ks_buf_steal(&b);
}

static int bytes_cb(const ks_ms_response *r, void *userdata)
{
	*(size_t *) userdata += r->data_len;
	return 0;
}

static void test_throughput(void **state)
{
	size_t len, card_len, n = 10000;
	_cleanup_free_ char *doc = multiget_doc(n, &len, &card_len);
	double best = 1e9;

	for (unsigned rep = 0; rep < 5; rep++) {
		ks_ms_parser *p = NULL;
		size_t bytes = 0;
		double t0 = now_sec();

		assert_int_equal(ks_ms_parser_new(bytes_cb, &bytes, &p), 0);
		/* curl hands over at most 16 KB per write callback. */
		for (size_t off = 0; off < len; off += 16384)
			assert_int_equal(ks_ms_parser_feed(p, doc + off, KS_MIN(16384, len - off)),
					 0);
		assert_int_equal(ks_ms_parser_finish(p), 0);
		double dt = now_sec() - t0;
		assert_int_equal(ks_ms_parser_count(p), n);
		assert_int_equal(bytes, n * card_len);
		ks_ms_parser_free(p);
		best = KS_MIN(best, dt);
	}
	assert_true(card_len >= 1024);
	print_message("multiget of %zu x 1 KB vCards: %.1f MB in %.1f ms, %.0f MB/s\n", n,
		      (double) len / 1e6, best * 1e3, (double) len / 1e6 / best);
}

/* Mutated server bodies: the parser returns 0 or a negative errno, never crashes, never prints,
 * and gives the same answer however the body is cut into pieces. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void test_mutations(void **state)
{
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	stderr_capture cap;

	stderr_begin(&cap);
	for (size_t i = 0; i < ELEMENTSOF(fixtures); i++) {
		size_t len;
		_cleanup_free_ char *orig = fixture_read(fixtures[i].file, &len);
		_cleanup_free_ char *doc = malloc(len * 2 + 64);
		assert_non_null(doc);

		for (unsigned it = 0; it < 200; it++) {
			size_t n = len;
			memcpy(doc, orig, len);
			for (unsigned m = 1 + rng_next(&seed) % 4; m > 0; m--) {
				size_t at = rng_next(&seed) % n;
				/* KS_MIN evaluates its arguments twice: draw the length first. */
				size_t span = rng_next(&seed) % 32;
				switch (rng_next(&seed) % 5) {
				case 0:
					doc[at] = (char) rng_next(&seed);
					break;
				case 1:
					doc[at] ^= (char) (1u << (rng_next(&seed) % 8));
					break;
				case 2: {
					size_t k = KS_MIN(n - at, span);
					memmove(doc + at, doc + at + k, n - at - k);
					n -= k;
					break;
				}
				case 3: {
					size_t k = KS_MIN(n - at, span);
					if (n + k <= len * 2 + 64) {
						memmove(doc + at + k, doc + at, n - at);
						n += k;
					}
					break;
				}
				default:
					doc[at] = "<>&/:'\"]!?;#"[rng_next(&seed) % 12];
					break;
				}
				if (n == 0)
					break;
			}
			collect a = {}, b = {};
			int ra = parse_doc(doc, n, 0, &a, NULL);
			int rb = parse_doc(doc, n, 1 + rng_next(&seed) % 13, &b, NULL);
			assert_true(ra <= 0);
			if (ra != rb)
				fail_msg("%s mutation %u: whole %d, pieces %d",
					 fixtures[i].file, it, ra, rb);
			if (ra == 0)
				assert_string_equal(a.dump.data ? a.dump.data : "",
						    b.dump.data ? b.dump.data : "");
			collect_done(&a);
			collect_done(&b);
		}
	}
	for (unsigned it = 0; it < 500; it++) {
		char junk[512];
		size_t n = rng_next(&seed) % sizeof(junk);
		for (size_t k = 0; k < n; k++)
			junk[k] = (char) rng_next(&seed);
		assert_true(parse_simple(junk, n, 0) < 0);
		assert_true(parse_simple(junk, n, 3) < 0);
	}
	assert_int_equal(stderr_end(&cap), 0);
}

/* ---- ks_xml_escape -------------------------------------------------------------------------- */

static void test_escape(void **state)
{
	static const struct {
		const char *in;
		const char *out;	/* NULL: -EINVAL */
	} cases[] = {
		{ "", "" },
		{ "plain", "plain" },
		{ "/dav/a b/%40x.ics", "/dav/a b/%40x.ics" },
		{ "a&b<c>d\"e'f", "a&amp;b&lt;c&gt;d&quot;e&apos;f" },
		{ "&&", "&amp;&amp;" },
		{ "<", "&lt;" },
		{ "http://sabre.io/ns/sync/42", "http://sabre.io/ns/sync/42" },
		{ "line\r\nnext\ttab", "line&#13;\nnext\ttab" },
		{ "Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x85",
		  "Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x85" },
		{ "bell\a", NULL },
		{ "esc\x1b", NULL },
		{ "\xff", NULL },
		{ "caf\xc3", NULL },
		{ "\xc0\xaf", NULL },
		{ "\xed\xa0\x80", NULL },
		{ "\xef\xbf\xbe", NULL },
		{ "\xf4\x90\x80\x80", NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		ks_buf b = {};

		assert_int_equal(ks_buf_puts(&b, "<x>"), 0);
		int r = ks_xml_escape(&b, cases[i].in);
		if (cases[i].out) {
			char want[256];
			assert_int_equal(r, 0);
			snprintf(want, sizeof(want), "<x>%s", cases[i].out);
			assert_string_equal(b.data, want);
		} else {
			assert_int_equal(r, -EINVAL);
			assert_string_equal(b.data, "<x>");
			assert_int_equal(b.len, 3);
		}
		ks_buf_done(&b);
	}

	/* The cap of the buffer is honoured, and the buffer is left as it was. */
	ks_buf b = { .max = 8 };
	assert_int_equal(ks_buf_puts(&b, "ab"), 0);
	assert_int_equal(ks_xml_escape(&b, "&&"), -EFBIG);
	assert_string_equal(b.data, "ab");
	ks_buf_done(&b);
}

/* Whatever is escaped parses back to itself. */
static void test_escape_roundtrip(void **state)
{
	static const char *const values[] = {
		"/dav/calendars/a&b/<c>.ics", "\"quoted\" 'single'", "x\r\ny", "Caf\xc3\xa9",
	};

	for (size_t i = 0; i < ELEMENTSOF(values); i++) {
		ks_buf b = {};
		collect c = {};
		char want[256];

		assert_int_equal(ks_buf_puts(&b, "<multistatus xmlns='DAV:'><response><href>x"), 0);
		assert_int_equal(ks_xml_escape(&b, values[i]), 0);
		assert_int_equal(ks_buf_puts(&b, "x</href></response></multistatus>"), 0);
		assert_int_equal(parse_doc(b.data, b.len, 0, &c, NULL), 0);
		snprintf(want, sizeof(want), "href=x%sx\n--\n", values[i]);
		assert_string_equal(c.dump.data, want);
		collect_done(&c);
		ks_buf_done(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_fixture_prefixes_fail),
		cmocka_unit_test(test_data_exact),
		cmocka_unit_test(test_etag_controls),
		cmocka_unit_test(test_status_lines),
		cmocka_unit_test(test_propstat_order_and_merge),
		cmocka_unit_test(test_line_ends),
		cmocka_unit_test(test_bad_fixtures),
		cmocka_unit_test(test_bad_docs),
		cmocka_unit_test(test_declared_encoding),
		cmocka_unit_test(test_depth_cap),
		cmocka_unit_test(test_text_caps),
		cmocka_unit_test(test_no_external_access),
		cmocka_unit_test(test_billion_laughs_fast),
		cmocka_unit_test(test_callback_error_stops),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_memory_flat_100k),
		cmocka_unit_test(test_throughput),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escape_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

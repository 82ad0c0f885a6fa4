/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf_p.h"
#include "json_p.h"
#include "engine_p.h"
#include "ksync.h"
#include "macro.h"
#include "manage_p.h"

static char *fixture(const char *name)
{
	const char *dir = getenv("KSYNC_FIXTURES");
	char path[4096];
	ks_buf b = {};
	FILE *f;

	if (!dir)
		fail_msg("KSYNC_FIXTURES is not set");
	snprintf(path, sizeof(path), "%s/manage/%s", dir, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	for (;;) {
		char chunk[4096];
		size_t n = fread(chunk, 1, sizeof(chunk), f);

		if (n == 0)
			break;
		assert_int_equal(ks_buf_append(&b, chunk, n), 0);
	}
	fclose(f);
	return b.data ? ks_buf_steal(&b) : strdup("");
}

/* ---- names and bodies --------------------------------------------------------------------- */

static void test_components_parse(void **state)
{
	static const struct {
		const char *names[4];
		int r;
		unsigned want;
	} cases[] = {
		{ { NULL }, 0, 0 },
		{ { "VEVENT", NULL }, 0, KS_CALENDAR_EVENTS },
		{ { "vtodo", NULL }, 0, KS_CALENDAR_TASKS },
		{ { "VEVENT", "VTODO", NULL }, 0, KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS },
		{ { "VEVENT,VTODO, vjournal", NULL }, 0,
		  KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS | KS_CALENDAR_JOURNALS },
		{ { "tasks", NULL }, 0, KS_CALENDAR_TASKS },
		{ { "Events journals", NULL }, 0, KS_CALENDAR_EVENTS | KS_CALENDAR_JOURNALS },
		{ { "", " , ", NULL }, 0, 0 },
		{ { "VTODO", "VTODO", NULL }, 0, KS_CALENDAR_TASKS },
		{ { "VFREEBUSY", NULL }, -EINVAL, 0 },
		{ { "VEVENTS", NULL }, -EINVAL, 0 },
		{ { "VEVENT", "task", NULL }, -EINVAL, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		unsigned got = 0xdead;
		int r = ks_calendar_components_parse(cases[i].names, &got);

		if (r != cases[i].r)
			fail_msg("case %zu: returned %d, want %d", i, r, cases[i].r);
		if (r == 0 && got != cases[i].want)
			fail_msg("case %zu: 0x%x, want 0x%x", i, got, cases[i].want);
		if (r < 0)
			assert_int_equal(got, 0xdead);
	}
	unsigned got;
	assert_int_equal(ks_calendar_components_parse(NULL, &got), 0);
	assert_int_equal(got, 0);
}

static void test_slug(void **state)
{
	static const struct {
		const char *name, *suffix, *want;
	} cases[] = {
		{ "Family", NULL, "family" },
		{ "Family & Friends", NULL, "family-friends" },
		{ "  --Work--  ", NULL, "work" },
		{ "Tasks (work) 2024", NULL, "tasks-work-2024" },
		{ "\xc3\x89quipe Z\xc3\xbcrich", NULL, "equipe-zurich" },
		{ "Stra\xc3\x9f" "e", NULL, "strasse" },
		{ "\xc5\x92uvres \xc3\xa6ternes", NULL, "oeuvres-aeternes" },
		{ "Caf\xc3\xa9\xc3\x97" "Bar", NULL, "cafe-bar" },
		{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", NULL, "" },
		{ "\xe6\x97\xa5\xe6\x9c\xac 2024", NULL, "2024" },
		{ "\xf0\x9f\x8e\x82 Birthdays", NULL, "birthdays" },
		{ "a\xff\xfe" "b", NULL, "a-b" },
		{ "a\xc3", NULL, "a" },
		{ "", NULL, "" },
		{ "Family", "1a2b3c4d", "family-1a2b3c4d" },
		{ "", "0f1e2d3c-aaaa-4bbb-8ccc-000000000000",
		  "0f1e2d3c-aaaa-4bbb-8ccc-000000000000" },
		{ "!!!", "x", "x" },
		/* 48 characters at most, cut at a piece, never ending in '-' */
		{ "abcdefghij abcdefghij abcdefghij abcdefghij abcdefghij", NULL,
		  "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcd" },
		{ "abcdefghij abcdefghij abcdefghij abcdefghij abcd efgh", NULL,
		  "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcd" },
		{ "abcdefghijabcdefghijabcdefghijabcdefghijabcdefg\xc3\x9f", NULL,
		  "abcdefghijabcdefghijabcdefghijabcdefghijabcdefg" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *got = NULL;

		assert_int_equal(ks_manage_slug(cases[i].name, cases[i].suffix, &got), 0);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("case %zu: '%s', want '%s'", i, got, cases[i].want);
		assert_true(strlen(got) <= KS_MANAGE_SLUG_MAX + 1 +
			    (cases[i].suffix ? strlen(cases[i].suffix) : 0));
		free(got);
	}
}

static void test_uuid(void **state)
{
	char a[37], b[37];

	assert_int_equal(ks_manage_uuid(a), 0);
	assert_int_equal(ks_manage_uuid(b), 0);
	assert_int_equal(strlen(a), 36);
	assert_string_not_equal(a, b);
	for (size_t i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(a[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", a[i]));
	}
	assert_int_equal(a[14], '4');
	assert_non_null(strchr("89ab", a[19]));
}

static void test_mkcol_body(void **state)
{
	_cleanup_free_ char *want = fixture("mkcol_family.xml");
	char *body = NULL;

	assert_int_equal(ks_manage_mkcol_body("Family & \"Friends\"", "Close <family>", &body), 0);
	assert_string_equal(body, want);
	free(body);

	assert_int_equal(ks_manage_mkcol_body("Family", "", &body), 0);
	assert_null(strstr(body, "addressbook-description"));
	assert_non_null(strstr(body, "<d:displayname>Family</d:displayname></d:prop>"));
	free(body);
	assert_int_equal(ks_manage_mkcol_body("Family", NULL, &body), 0);
	assert_null(strstr(body, "addressbook-description"));
	free(body);

	body = (char *) &body;
	assert_int_equal(ks_manage_mkcol_body("bad\xff", NULL, &body), -EINVAL);
	assert_int_equal(ks_manage_mkcol_body("ok", "bell\a", &body), -EINVAL);
	assert_ptr_equal(body, &body);
}

static void test_mkcalendar_body(void **state)
{
	_cleanup_free_ char *want = fixture("mkcalendar_tasks.xml");
	char *body = NULL;

	assert_int_equal(ks_manage_mkcalendar_body("T\xc3\xa2" "ches", KS_CALENDAR_TASKS,
						   "#ff8800", &body), 0);
	assert_string_equal(body, want);
	free(body);

	static const struct {
		unsigned comps;
		const char *color;
		const char *want_set;	/* NULL: no component set */
		const char *want_color;	/* NULL: no color */
	} cases[] = {
		{ 0, NULL, NULL, NULL },
		{ KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS | KS_CALENDAR_JOURNALS, NULL,
		  "<c:supported-calendar-component-set><c:comp name=\"VEVENT\"/><c:comp "
		  "name=\"VTODO\"/><c:comp name=\"VJOURNAL\"/></c:supported-calendar-component-set>",
		  NULL },
		{ KS_CALENDAR_EVENTS, "#abc", "<c:comp name=\"VEVENT\"/></c:supported", "#AABBCC" },
		{ 0, " #11223344 ", NULL, "#112233" },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		assert_int_equal(ks_manage_mkcalendar_body("Cal", cases[i].comps, cases[i].color,
							   &body), 0);
		if (cases[i].want_set)
			assert_non_null(strstr(body, cases[i].want_set));
		else
			assert_null(strstr(body, "supported-calendar-component-set"));
		if (cases[i].want_color) {
			char tag[64];
			snprintf(tag, sizeof(tag), "<ic:calendar-color>%s</ic:calendar-color>",
				 cases[i].want_color);
			assert_non_null(strstr(body, tag));
		} else
			assert_null(strstr(body, "calendar-color>"));
		free(body);
	}

	static const char *const bad_colors[] = { "red", "#12345", "#ff8800 x", "ff8800", "#",
						  "#ggg", "" };
	for (size_t i = 0; i < ELEMENTSOF(bad_colors); i++) {
		body = (char *) &body;
		if (ks_manage_mkcalendar_body("Cal", 0, bad_colors[i], &body) != -EINVAL)
			fail_msg("color '%s' accepted", bad_colors[i]);
		assert_ptr_equal(body, &body);
	}
	assert_int_equal(ks_manage_mkcalendar_body("a\x01", 0, NULL, &body), -EINVAL);
}

static void test_proppatch_body(void **state)
{
	char *body = (char *) &body;

	assert_int_equal(ks_manage_proppatch_body(true, NULL, NULL, NULL, &body), -ENODATA);
	assert_ptr_equal(body, &body);

	assert_int_equal(ks_manage_proppatch_body(true, NULL, NULL, "#0a0B0c", &body), 0);
	assert_string_equal(body,
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<d:propertyupdate xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" "
		"xmlns:a=\"urn:ietf:params:xml:ns:carddav\" xmlns:ic=\"http://apple.com/ns/ical/\">"
		"<d:set><d:prop><ic:calendar-color>#0A0B0C</ic:calendar-color></d:prop></d:set>"
		"</d:propertyupdate>\n");
	free(body);

	assert_int_equal(ks_manage_proppatch_body(false, "A & B", "d", NULL, &body), 0);
	assert_non_null(strstr(body, "<d:prop><d:displayname>A &amp; B</d:displayname>"
			       "<a:addressbook-description>d</a:addressbook-description></d:prop>"));
	free(body);
	assert_int_equal(ks_manage_proppatch_body(true, NULL, "d", NULL, &body), 0);
	assert_non_null(strstr(body, "<c:calendar-description>d</c:calendar-description>"));
	free(body);
}

/* ---- answers ------------------------------------------------------------------------------ */

static void test_create_result(void **state)
{
	static const struct {
		bool calendar;
		long status;
		const char *body;	/* "@file" for a fixture */
		int r;
		const char *msg;	/* substring of the message */
	} cases[] = {
		{ false, 201, NULL, 0, NULL },
		{ false, 201, "@xandikos_mkcol_created_201.xml", 0, NULL },
		{ true, 201, "@xandikos_mkcalendar_created_201.xml", 0, NULL },
		{ true, 200, NULL, 0, NULL },
		{ true, 204, NULL, 0, NULL },
		{ false, 405, "@radicale_mkcol_exists_405.txt", -EEXIST, NULL },
		{ true, 409, "@radicale_mkcalendar_exists_409.xml", -EEXIST, NULL },
		{ true, 207, "@xandikos_mkcalendar_exists_207.xml", -EEXIST, NULL },
		{ true, 403, "<error xmlns=\"DAV:\"><resource-must-be-null/></error>", -EEXIST,
		  NULL },
		{ false, 409, NULL, -EEXIST, NULL },
		{ false, 401, NULL, -EACCES, "application password" },
		{ false, 403, "@radicale_forbidden_403.txt", -EACCES,
		  "the server does not allow creating address books at /h/x/ (read-only account?)" },
		{ true, 403, NULL, -EACCES,
		  "the server does not allow creating calendars at /h/x/ (read-only account?)" },
		{ true, 403, "<error xmlns=\"urn:ietf:params:xml:ns:caldav\">"
		  "<calendar-collection-location-ok/></error>", -EACCES,
		  "the server does not allow a calendar at /h/x/" },
		{ false, 415, NULL, -EOPNOTSUPP, "the server does not support creating address "
		  "books (extended MKCOL, RFC 5689; HTTP 415)" },
		{ true, 501, NULL, -EOPNOTSUPP, "the server does not support creating calendars "
		  "(MKCALENDAR, RFC 4791; HTTP 501)" },
		{ true, 507, NULL, -ENOSPC, "no room" },
		{ true, 503, NULL, -EAGAIN, "busy (HTTP 503)" },
		{ true, 429, NULL, -EAGAIN, "busy (HTTP 429)" },
		{ true, 207, "<d:multistatus xmlns:d=\"DAV:\"/>", -EPROTO, "HTTP 207" },
		{ false, 500, NULL, -EIO, "failed to create /h/x/ (HTTP 500)" },
		{ false, 400, NULL, -EPROTO, "refused to create /h/x/ (HTTP 400; does it support "
		  "extended MKCOL, RFC 5689?)" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *body = NULL;
		char *msg = NULL;
		int r;

		if (cases[i].body && cases[i].body[0] == '@')
			body = fixture(cases[i].body + 1);
		else if (cases[i].body)
			body = strdup(cases[i].body);
		r = ks_manage_create_result(cases[i].calendar, cases[i].status, body, "/h/x/", &msg);
		if (r != cases[i].r)
			fail_msg("case %zu (HTTP %ld): %d, want %d", i, cases[i].status, r,
				 cases[i].r);
		if (cases[i].msg) {
			if (!msg || !strstr(msg, cases[i].msg))
				fail_msg("case %zu: message '%s' lacks '%s'", i, msg ? msg : "",
					 cases[i].msg);
		} else
			assert_null(msg);
		free(msg);
	}
	assert_non_null(strstr(ks_manage_auth_message(), "two-factor"));
	assert_non_null(strstr(ks_manage_auth_message(), "Manager"));
}

static void test_probe_json(void **state)
{
	ks_collection cols[] = {
		{ .href = (char *) "/p/card/default/", .kind = KS_COLLECTION_ADDRESSBOOK,
		  .displayname = (char *) "Contacts \"main\"" },
		{ .href = (char *) "/p/cal/work/", .kind = KS_COLLECTION_CALENDAR,
		  .displayname = NULL, .components = KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS,
		  .readonly = true },
		/* The same last segment: the first sync names it work-2 (and the address book
		 * of that name keeps its own). */
		{ .href = (char *) "/p/shared/work/", .kind = KS_COLLECTION_CALENDAR,
		  .displayname = (char *) "W" },
		{ .href = (char *) "/p/card/work/", .kind = KS_COLLECTION_ADDRESSBOOK,
		  .displayname = (char *) "W" },
	};
	char *json = NULL;

	assert_int_equal(ks_manage_probe_json("ik", "https://sync.infomaniak.com/", "/p/", cols,
					      ELEMENTSOF(cols), &json), 0);
	assert_string_equal(json,
		"{\"name\":\"ik\",\"url\":\"https://sync.infomaniak.com/\",\"principal\":\"/p/\","
		"\"collections\":[{\"href\":\"/p/card/default/\",\"dir\":\"default\","
		"\"kind\":\"addressbook\","
		"\"displayname\":\"Contacts \\\"main\\\"\",\"components\":[],\"readonly\":false},"
		"{\"href\":\"/p/cal/work/\",\"dir\":\"work\",\"kind\":\"calendar\","
		"\"displayname\":null,"
		"\"components\":[\"VEVENT\",\"VTODO\"],\"readonly\":true},"
		"{\"href\":\"/p/shared/work/\",\"dir\":\"work-2\",\"kind\":\"calendar\","
		"\"displayname\":\"W\",\"components\":[],\"readonly\":false},"
		"{\"href\":\"/p/card/work/\",\"dir\":\"work\",\"kind\":\"addressbook\","
		"\"displayname\":\"W\",\"components\":[],\"readonly\":false}]}");

	_cleanup_(ks_json_freep) ks_json *j = NULL;
	assert_int_equal(ks_json_parse(json, strlen(json), &j, NULL), 0);
	assert_int_equal(ks_json_count(ks_json_get(j, "collections")), 4);
	free(json);

	assert_int_equal(ks_manage_probe_json("x", "http://127.0.0.1/", "/", NULL, 0, &json), 0);
	assert_string_equal(json, "{\"name\":\"x\",\"url\":\"http://127.0.0.1/\","
			    "\"principal\":\"/\",\"collections\":[]}");
	free(json);
}

/* ---- client configuration ----------------------------------------------------------------- */

/* The three texts of a clients JSON object; owned by the caller. */
static void clients_parse(const char *json, char **khal, char **khard, char **todoman)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;

	assert_int_equal(ks_json_parse(json, strlen(json), &j, NULL), 0);
	assert_int_equal(ks_json_count(j), 3);
	*khal = strdup(ks_json_get_string(j, "khal"));
	*khard = strdup(ks_json_get_string(j, "khard"));
	*todoman = strdup(ks_json_get_string(j, "todoman"));
	assert_non_null(*khal);
	assert_non_null(*khard);
	assert_non_null(*todoman);
}

static void test_clients_json(void **state)
{
	const ks_client_collection cols[] = {
		{ .account = "ik", .dir = "contacts", .displayname = "Contacts" },
		{ .account = "ik", .dir = "shared", .displayname = "Team [shared]", .readonly = true },
		{ .account = "home", .dir = "default", .displayname = "Contacts" },
		{ .account = "ik", .dir = "personal", .calendar = true, .displayname = "Personal",
		  .color = "#FF8800", .components = KS_CALENDAR_EVENTS },
		{ .account = "ik", .dir = "tasks", .calendar = true, .displayname = "T\xc3\xa2" "ches",
		  .components = KS_CALENDAR_TASKS },
		{ .account = "home", .dir = "family", .calendar = true, .displayname = "Family",
		  .components = KS_CALENDAR_EVENTS | KS_CALENDAR_TASKS, .readonly = true },
	};
	_cleanup_free_ char *json = NULL, *khal = NULL, *khard = NULL, *todoman = NULL;
	_cleanup_free_ char *want_khal = fixture("khal.conf");
	_cleanup_free_ char *want_khard = fixture("khard.conf");
	_cleanup_free_ char *want_todoman = fixture("todoman.py");

	assert_int_equal(ks_manage_clients_json("/data/ksync/", cols, ELEMENTSOF(cols), false,
						&json), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_string_equal(khal, want_khal);
	assert_string_equal(khard, want_khard);
	assert_string_equal(todoman, want_todoman);
}

static void test_clients_json_edges(void **state)
{
	_cleanup_free_ char *json = NULL, *khal = NULL, *khard = NULL, *todoman = NULL;

	assert_int_equal(ks_manage_clients_json("/d", NULL, 0, true, &json), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_string_equal(khal, "# khal: ~/.config/khal/config\n"
			    "# No calendar with events is synced yet.\n");
	assert_string_equal(khard, "# khard: ~/.config/khard/khard.conf\n"
			    "# No address book is synced yet.\n");
	assert_string_equal(todoman, "# todoman: ~/.config/todoman/config.py\n"
			    "# No calendar with tasks is synced yet.\n");
	free(json);
	free(khal);
	free(khard);
	free(todoman);

	/* Unknown components: everywhere; odd paths quoted for each reader. */
	const ks_client_collection cols[] = {
		{ .account = "a", .dir = "c1", .calendar = true },
		{ .account = "a", .dir = "c2", .calendar = true, .displayname = "a/c1" },
	};
	assert_int_equal(ks_manage_clients_json("/d/it's \"x\" *", cols, ELEMENTSOF(cols), true,
						&json), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_non_null(strstr(khal, "[[a/c1]]\npath = \"\"\"/d/it's \"x\" */calendars/a/c1\"\"\"\n"));
	assert_non_null(strstr(khal, "[[a/c2]]\n"));
	assert_non_null(strstr(khal, "# default_calendar = a/c1\n"));
	assert_non_null(strstr(todoman, "path = \"/d/it's \\\"x\\\" [*]/calendars/*/*\"\n"));
	assert_null(strstr(todoman, "this may also match"));
	assert_non_null(strstr(todoman, "# default_list = \"c1\"\n"));
	assert_null(strstr(todoman, "distinct"));
	free(json);
	free(khal);
	free(khard);
	free(todoman);

	/* todoman refuses lists of the same name: the text says which. */
	const ks_client_collection dup[] = {
		{ .account = "a", .dir = "t1", .calendar = true, .displayname = "Tasks" },
		{ .account = "a", .dir = "x", .calendar = true, .displayname = "Other\nline" },
		{ .account = "b", .dir = "t2", .calendar = true, .displayname = "Tasks" },
		{ .account = "c", .dir = "Tasks", .calendar = true },
		{ .account = "c", .dir = "o", .calendar = true, .displayname = "Other\nline" },
	};
	assert_int_equal(ks_manage_clients_json("/d", dup, ELEMENTSOF(dup), true, &json), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_non_null(strstr(todoman, "\n# todoman needs a distinct name for each list; rename "
			       "one of each group on the server:\n"
			       "#   \"Tasks\": a/t1, b/t2, c/Tasks\n"
			       "#   \"Other?line\": a/x, c/o\n# default_list"));
}

/* ---- directories -------------------------------------------------------------------------- */

static char tmpdir[] = "/tmp/ksync-test-manage-XXXXXX";

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_dir(const char *rel)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	assert_int_equal(mkdir(p, 0700), 0);
}

static void make_file(const char *rel, const char *text)
{
	char p[4096];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void test_clients_config_walk(void **state)
{
	_cleanup_free_ char *json = NULL, *khal = NULL, *khard = NULL, *todoman = NULL;
	char data[4096], link[4096], *err = NULL;

	snprintf(data, sizeof(data), "%s/data", tmpdir);
	/* Nothing there yet: empty texts, no error. */
	assert_int_equal(ks_clients_config(NULL, data, NULL, 0, &json, &err), 0);
	assert_null(err);
	clients_parse(json, &khal, &khard, &todoman);
	assert_non_null(strstr(khal, "No calendar"));
	free(json);
	free(khal);
	free(khard);
	free(todoman);

	make_dir("data");
	make_dir("data/contacts");
	make_dir("data/contacts/work");
	make_dir("data/contacts/work/default");
	make_file("data/contacts/work/default/displayname", "Work contacts\n");
	make_dir("data/contacts/work/.hidden");
	make_file("data/contacts/work/stray-file", "x");
	make_dir("data/contacts/old");
	make_dir("data/contacts/old/book");
	make_dir("data/calendars");
	make_dir("data/calendars/work");
	make_dir("data/calendars/work/b-cal");
	make_file("data/calendars/work/b-cal/displayname", "Meetings\r\n");
	make_file("data/calendars/work/b-cal/color", "#00ff0080\n");
	make_dir("data/calendars/work/a-cal");
	make_dir("data/calendars/old");
	make_dir("data/calendars/old/x");
	snprintf(link, sizeof(link), "%s/data/calendars/work/link", tmpdir);
	assert_int_equal(symlink("a-cal", link), 0);

	assert_int_equal(ks_clients_config(NULL, data, NULL, 0, &json, &err), 0);
	clients_parse(json, &khal, &khard, &todoman);
	/* Sorted, symlinks, hidden entries and files left out. */
	const char *a = strstr(khal, "[[old/x]]"), *b = strstr(khal, "[[work/a-cal]]"),
		   *c = strstr(khal, "[[Meetings]]");
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_true(a < b && b < c);
	assert_null(strstr(khal, "link"));
	assert_non_null(strstr(khard, "[[Work contacts]]\npath = \""));
	assert_non_null(strstr(khard, "/data/contacts/work/default\"\n"));
	assert_non_null(strstr(khard, "[[old/book]]"));
	assert_null(strstr(khard, "hidden"));
	assert_null(strstr(khard, "stray"));
	assert_non_null(strstr(todoman, "/data/calendars/*/*\"\n"));
	free(json);
	free(khal);
	free(khard);
	free(todoman);

	/* With a config, only its accounts; todoman's glob then names the account. */
	ks_account_config acc = { .name = (char *) "work" };
	ks_config conf = { .accounts = &acc, .n_accounts = 1 };
	assert_int_equal(ks_clients_config(&conf, data, NULL, 0, &json, &err), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_null(strstr(khal, "old"));
	assert_null(strstr(khard, "old"));
	assert_non_null(strstr(todoman, "/data/calendars/work/*\"\n"));
	free(json);
	free(khal);
	free(khard);
	free(todoman);

	/* A given list: used as it is; todoman's glob is exact only if it covers the disk. */
	const ks_client_collection cols[] = {
		{ .account = "work", .dir = "a-cal", .calendar = true,
		  .components = KS_CALENDAR_TASKS },
	};
	assert_int_equal(ks_clients_config(NULL, data, cols, ELEMENTSOF(cols), &json, &err), 0);
	clients_parse(json, &khal, &khard, &todoman);
	assert_non_null(strstr(khal, "No calendar with events"));
	assert_non_null(strstr(khard, "No address book"));
	assert_non_null(strstr(todoman, "this may also match"));
	assert_non_null(strstr(todoman, "\ndefault_list = \"a-cal\"\n"));

	char *out = (char *) &out;
	assert_int_equal(ks_clients_config(NULL, "relative/dir", NULL, 0, &out, &err), -EINVAL);
	assert_ptr_equal(out, &out);
	assert_non_null(strstr(err, "not an absolute path"));
	free(err);
}

/* ---- a canned server ---------------------------------------------------------------------- */

typedef struct fake_req {
	char method[16];
	char path[256];
	char depth[8];
	bool auth;
	char *body;
} fake_req;

typedef struct fake_server fake_server;

/* Sets *status and *body (static text or NULL) for a request. */
typedef void (*fake_fn)(fake_server *s, const fake_req *rq, int *status, const char **body);

struct fake_server {
	int lfd;
	int port;
	pthread_t accept_thread;
	pthread_t conn_threads[16];
	size_t n_conn;
	pthread_mutex_t lock;
	fake_fn fn;
	int step;		/* for handlers that change their answers */
	fake_req log[64];
	size_t n_log;
};

typedef struct conn_arg {
	fake_server *s;
	int fd;
} conn_arg;

static ssize_t read_some(int fd, ks_buf *b)
{
	char chunk[4096];
	ssize_t n = read(fd, chunk, sizeof(chunk));

	if (n > 0 && ks_buf_append(b, chunk, (size_t) n) < 0)
		return -1;
	return n;
}

static void *conn_main(void *userdata)
{
	conn_arg *a = userdata;
	fake_server *s = a->s;
	int fd = a->fd;
	ks_buf in = {};

	free(a);
	for (;;) {
		char *end;

		while (!(end = in.data ? strstr(in.data, "\r\n\r\n") : NULL))
			if (read_some(fd, &in) <= 0)
				goto out;
		size_t head = (size_t) (end - in.data) + 4;
		fake_req rq = {};
		size_t clen = 0;

		sscanf(in.data, "%15s %255s", rq.method, rq.path);
		for (char *l = strstr(in.data, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
			if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
				clen = strtoul(l + 17, NULL, 10);
			else if (strncasecmp(l + 2, "Depth:", 6) == 0)
				sscanf(l + 8, "%7s", rq.depth);
			else if (strncasecmp(l + 2, "Authorization: Basic dTpwdw==", 29) == 0)
				rq.auth = true;
		}
		while (in.len < head + clen)
			if (read_some(fd, &in) <= 0)
				goto out;
		rq.body = strndup(in.data + head, clen);

		int status = 500;
		const char *body = NULL;
		pthread_mutex_lock(&s->lock);
		s->fn(s, &rq, &status, &body);
		if (s->n_log < ELEMENTSOF(s->log))
			s->log[s->n_log++] = rq;
		else
			free(rq.body);
		pthread_mutex_unlock(&s->lock);

		char hdr[256];
		size_t blen = body ? strlen(body) : 0;
		int hl = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n",
				  status, blen, blen ? "Content-Type: application/xml\r\n" : "");
		if (write(fd, hdr, (size_t) hl) != hl || (blen && write(fd, body, blen) !=
							  (ssize_t) blen))
			goto out;
		memmove(in.data, in.data + head + clen, in.len - head - clen);
		in.len -= head + clen;
		in.data[in.len] = 0;
	}
out:
	ks_buf_done(&in);
	close(fd);
	return NULL;
}

static void *accept_main(void *userdata)
{
	fake_server *s = userdata;

	for (;;) {
		int fd = accept(s->lfd, NULL, NULL);

		if (fd < 0)
			return NULL;
		conn_arg *a = malloc(sizeof(*a));
		assert_non_null(a);
		*a = (conn_arg) { s, fd };
		pthread_mutex_lock(&s->lock);
		assert_true(s->n_conn < ELEMENTSOF(s->conn_threads));
		assert_int_equal(pthread_create(&s->conn_threads[s->n_conn++], NULL, conn_main, a),
				 0);
		pthread_mutex_unlock(&s->lock);
	}
}

static void fake_start(fake_server *s, fake_fn fn)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	*s = (fake_server) { .fn = fn };
	pthread_mutex_init(&s->lock, NULL);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *) &sa, &len), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&s->accept_thread, NULL, accept_main, s), 0);
}

/* Every client connection is closed by then (the ks_dav handle is freed). */
static void fake_stop(fake_server *s)
{
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->accept_thread, NULL);
	close(s->lfd);
	for (size_t i = 0; i < s->n_conn; i++)
		pthread_join(s->conn_threads[i], NULL);
	for (size_t i = 0; i < s->n_log; i++)
		free(s->log[i].body);
	pthread_mutex_destroy(&s->lock);
}

/* "METHOD path" of every request, one a line. */
static char *fake_trace(const fake_server *s)
{
	ks_buf b = {};

	for (size_t i = 0; i < s->n_log; i++)
		assert_int_equal(ks_buf_printf(&b, "%s %s\n", s->log[i].method, s->log[i].path), 0);
	return b.data ? ks_buf_steal(&b) : strdup("");
}

#define MS_BEGIN "<d:multistatus xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" " \
		 "xmlns:a=\"urn:ietf:params:xml:ns:carddav\" xmlns:ic=\"http://apple.com/ns/ical/\">"
#define MS_OK "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"

static const char ms_principal[] =
	MS_BEGIN "<d:response><d:href>/</d:href><d:propstat><d:prop><d:current-user-principal>"
	"<d:href>/p/</d:href></d:current-user-principal></d:prop>" MS_OK "</d:multistatus>";
static const char ms_homes[] =
	MS_BEGIN "<d:response><d:href>/p/</d:href><d:propstat><d:prop><c:calendar-home-set>"
	"<d:href>/p/cal/</d:href></c:calendar-home-set><a:addressbook-home-set>"
	"<d:href>/p/card/</d:href></a:addressbook-home-set></d:prop>" MS_OK "</d:multistatus>";
static const char ms_homes_no_cal[] =
	MS_BEGIN "<d:response><d:href>/p/</d:href><d:propstat><d:prop><a:addressbook-home-set>"
	"<d:href>/p/card/</d:href></a:addressbook-home-set></d:prop>" MS_OK "</d:multistatus>";
static const char ms_book[] =
	MS_BEGIN "<d:response><d:href>/p/card/family/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/><a:addressbook/></d:resourcetype>"
	"<d:displayname>Family</d:displayname></d:prop>" MS_OK "</d:multistatus>";
static const char ms_plain[] =
	MS_BEGIN "<d:response><d:href>/p/card/family/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/></d:resourcetype></d:prop>" MS_OK "</d:multistatus>";
static const char ms_cal_bare[] =
	MS_BEGIN "<d:response><d:href>/p/cal/tasks/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
	"<d:displayname>Tasks</d:displayname><c:supported-calendar-component-set>"
	"<c:comp name=\"VEVENT\"/><c:comp name=\"VTODO\"/><c:comp name=\"VJOURNAL\"/>"
	"</c:supported-calendar-component-set></d:prop>" MS_OK "</d:multistatus>";
static const char ms_cal_colored[] =
	MS_BEGIN "<d:response><d:href>/p/cal/tasks/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
	"<d:displayname>Tasks</d:displayname><ic:calendar-color>#FF8800FF</ic:calendar-color>"
	"<c:supported-calendar-component-set><c:comp name=\"VEVENT\"/><c:comp name=\"VTODO\"/>"
	"<c:comp name=\"VJOURNAL\"/></c:supported-calendar-component-set></d:prop>" MS_OK
	"</d:multistatus>";
static const char ms_proppatch_ok[] =
	MS_BEGIN "<d:response><d:href>/p/cal/tasks/</d:href><d:propstat><d:prop>"
	"<ic:calendar-color/></d:prop>" MS_OK "</d:multistatus>";
static const char ms_listing_card[] =
	MS_BEGIN "<d:response><d:href>/p/card/</d:href><d:propstat><d:prop><d:resourcetype>"
	"<d:collection/></d:resourcetype></d:prop>" MS_OK
	"<d:response><d:href>/p/card/default/</d:href><d:propstat><d:prop><d:resourcetype>"
	"<d:collection/><a:addressbook/></d:resourcetype><d:displayname>Contacts</d:displayname>"
	"<d:current-user-privilege-set><d:privilege><d:read/></d:privilege>"
	"</d:current-user-privilege-set></d:prop>" MS_OK "</d:multistatus>";
static const char ms_listing_cal[] =
	MS_BEGIN "<d:response><d:href>/p/cal/work/</d:href><d:propstat><d:prop><d:resourcetype>"
	"<d:collection/><c:calendar/></d:resourcetype><d:displayname>Work</d:displayname>"
	"<c:supported-calendar-component-set><c:comp name=\"VTODO\"/>"
	"</c:supported-calendar-component-set></d:prop>" MS_OK "</d:multistatus>";

/* Discovery, for every handler. Returns true when it answered. */
static bool answer_discovery(const fake_req *rq, int *status, const char **body,
			     const char *homes)
{
	if (strcmp(rq->method, "PROPFIND") != 0)
		return false;
	if (!rq->auth) {
		*status = 401;
		return true;
	}
	if (strcmp(rq->path, "/") == 0) {
		*status = 207;
		*body = ms_principal;
		return true;
	}
	if (strcmp(rq->path, "/p/") == 0) {
		*status = 207;
		*body = homes;
		return true;
	}
	return false;
}

static void h_book_created(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0 && strncmp(rq->path, "/p/card/", 8) == 0) {
		/* Free before the MKCOL, there after it. */
		*status = s->step ? 207 : 404;
		*body = s->step ? ms_book : NULL;
	} else if (strcmp(rq->method, "MKCOL") == 0 && strncmp(rq->path, "/p/card/", 8) == 0) {
		s->step = 1;
		*status = 201;
	}
}

static ks_account_config test_account(const fake_server *s, char *url, size_t size)
{
	snprintf(url, size, "http://127.0.0.1:%d/", s->port);
	return (ks_account_config) { .name = (char *) "t", .url = url, .username = (char *) "u",
				     .password_command = (char *) "printf pw" };
}

static void test_create_addressbook(void **state)
{
	_cleanup_free_ char *want = fixture("mkcol_family.xml"), *trace = NULL;
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_book_created);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family & \"Friends\"", "Close <family>", &href,
					       &err), 0);
	assert_string_equal(href, "/p/card/family-friends/");
	assert_string_equal(s.log[4].method, "MKCOL");
	assert_string_equal(s.log[4].body, want);
	free(href);
	fake_stop(&s);

	fake_start(&s, h_book_created);
	a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family", NULL, &href, &err), 0);
	assert_null(err);
	assert_string_equal(href, "/p/card/family/");
	trace = fake_trace(&s);
	assert_string_equal(trace, "PROPFIND /\nPROPFIND /p/\nPROPFIND /p/card/\n"
			    "PROPFIND /p/card/family/\nMKCOL /p/card/family/\n"
			    "PROPFIND /p/card/family/\n");
	assert_true(s.log[4].auth);
	assert_non_null(strstr(s.log[4].body, "<d:displayname>Family</d:displayname>"));
	assert_string_equal(s.log[2].depth, "1");
	assert_string_equal(s.log[3].depth, "0");
	free(href);
	fake_stop(&s);
}

/* The first name is taken: a suffix. */
static void h_book_taken(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0 && strcmp(rq->path, "/p/card/family/") == 0) {
		*status = 207;
		*body = ms_book;
	} else if (strcmp(rq->method, "PROPFIND") == 0)
		*status = s->step ? 207 : 404;
	else if (strcmp(rq->method, "MKCOL") == 0) {
		s->step = 1;
		*status = 201;
	}
}

/* Xandikos answers a PROPFIND on nothing with a 207 holding a 404. */
static char *xandikos_missing;
static void h_book_xandikos(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0) {
		*status = 207;
		*body = s->step ? ms_book : xandikos_missing;
	} else if (strcmp(rq->method, "MKCOL") == 0) {
		s->step = 1;
		*status = 201;
	}
}

static void test_create_missing_as_207(void **state)
{
	_cleanup_free_ char *trace = NULL;
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	xandikos_missing = fixture("xandikos_propfind_missing_207.xml");
	fake_start(&s, h_book_xandikos);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family", NULL, &href, &err), 0);
	assert_string_equal(href, "/p/card/family/");
	trace = fake_trace(&s);
	assert_string_equal(trace, "PROPFIND /\nPROPFIND /p/\nPROPFIND /p/card/\n"
			    "PROPFIND /p/card/family/\nMKCOL /p/card/family/\n"
			    "PROPFIND /p/card/family/\n");
	free(href);
	fake_stop(&s);
	free(xandikos_missing);
}

static void test_create_taken(void **state)
{
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_book_taken);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family", NULL, &href, &err), 0);
	assert_int_equal(strlen(href), strlen("/p/card/family-12345678/"));
	assert_memory_equal(href, "/p/card/family-", 15);
	assert_int_equal(strspn(href + 15, "0123456789abcdef"), 8);
	assert_string_equal(s.log[5].method, "MKCOL");
	assert_string_equal(s.log[5].path, href);
	free(href);
	fake_stop(&s);
}

/* MKCOL answers with a status. */
static int mkcol_status;
static void h_mkcol_status(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0)
		*status = 404;
	else if (strcmp(rq->method, "MKCOL") == 0)
		*status = mkcol_status;
}

static void test_create_refused(void **state)
{
	static const struct {
		int status;
		int r;
		const char *msg;
		unsigned mkcols;
	} cases[] = {
		{ 403, -EACCES, "does not allow creating address books at /p/card/family/ "
		  "(read-only account?)", 1 },
		{ 405, -EOPNOTSUPP, "the server answers that /p/card/family-", 2 },
		{ 415, -EOPNOTSUPP, "does not support creating address books", 1 },
		{ 507, -ENOSPC, "no room", 1 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		fake_server s;
		char url[64], *href = (char *) &href, *err = NULL;
		unsigned mkcols = 0;

		mkcol_status = cases[i].status;
		fake_start(&s, h_mkcol_status);
		ks_account_config a = test_account(&s, url, sizeof(url));
		assert_int_equal(ks_create_addressbook(&a, "Family", NULL, &href, &err),
				 cases[i].r);
		assert_ptr_equal(href, &href);
		if (!err || !strstr(err, cases[i].msg))
			fail_msg("HTTP %d: message '%s'", cases[i].status, err ? err : "");
		for (size_t j = 0; j < s.n_log; j++)
			mkcols += strcmp(s.log[j].method, "MKCOL") == 0;
		assert_int_equal(mkcols, cases[i].mkcols);
		free(err);
		fake_stop(&s);
	}
}

/* The home set already has a collection of that name: nothing is created. */
static void h_name_taken(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0 && strcmp(rq->depth, "1") == 0) {
		*status = 207;
		*body = strcmp(rq->path, "/p/card/") == 0 ? ms_listing_card : ms_listing_cal;
	} else if (strcmp(rq->method, "PROPFIND") == 0)
		*status = 404;
	else
		*status = 201;
}

static void test_create_name_taken(void **state)
{
	_cleanup_free_ char *trace = NULL;
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_name_taken);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "contacts", NULL, &href, &err), -EEXIST);
	assert_null(href);
	assert_string_equal(err, "an address book called 'Contacts' exists already "
			    "(/p/card/default/); choose another name");
	free(err);
	err = NULL;
	/* Another kind's name is no obstacle; a calendar's name is taken for calendars. */
	assert_int_equal(ks_create_calendar(&a, "Work", 0, NULL, &href, &err), -EEXIST);
	assert_non_null(strstr(err, "a calendar called 'Work' exists already"));
	free(err);
	err = NULL;
	assert_int_equal(ks_rename_collection(&a, "/p/card/other/", false, "CONTACTS", &err),
			 -EEXIST);
	free(err);
	trace = fake_trace(&s);
	assert_null(strstr(trace, "MKCOL"));
	assert_null(strstr(trace, "MKCALENDAR"));
	assert_null(strstr(trace, "PROPPATCH"));
	fake_stop(&s);
}

static void h_unauthorized(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	*status = 401;
}

static void test_create_auth(void **state)
{
	fake_server s;
	char url[64], *href = NULL, *err = NULL, *json = (char *) &json;

	fake_start(&s, h_unauthorized);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_calendar(&a, "X", 0, NULL, &href, &err), -EACCES);
	assert_string_equal(err, ks_manage_auth_message());
	free(err);
	err = NULL;
	assert_int_equal(ks_probe_account(&a, &json, &err), -EACCES);
	assert_ptr_equal(json, &json);
	assert_non_null(strstr(err, "application password"));
	free(err);
	fake_stop(&s);
}

/* A server that makes a plain collection of an extended MKCOL. */
static void h_plain(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0) {
		*status = s->step ? 207 : 404;
		*body = s->step ? ms_plain : NULL;
	} else if (strcmp(rq->method, "MKCOL") == 0) {
		s->step = 1;
		*status = 201;
	} else if (strcmp(rq->method, "DELETE") == 0)
		*status = 204;
}

static void test_create_plain_collection(void **state)
{
	_cleanup_free_ char *trace = NULL;
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_plain);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family", NULL, &href, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err, "a plain collection"));
	trace = fake_trace(&s);
	assert_non_null(strstr(trace, "MKCOL /p/card/family/\nPROPFIND /p/card/family/\n"
			       "DELETE /p/card/family/\n"));
	free(err);
	fake_stop(&s);
}

/* Xandikos-like: MKCALENDAR keeps neither the color nor the component set; PROPPATCH sets
 * the color. */
static void h_calendar(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0 && strcmp(rq->path, "/p/cal/tasks/") == 0) {
		*status = s->step ? 207 : 404;
		*body = s->step == 1 ? ms_cal_bare : s->step == 2 ? ms_cal_colored : NULL;
	} else if (strcmp(rq->method, "MKCALENDAR") == 0) {
		s->step = 1;
		*status = 201;
	} else if (strcmp(rq->method, "PROPPATCH") == 0) {
		s->step = 2;
		*status = 207;
		*body = ms_proppatch_ok;
	}
}

typedef struct notes {
	ks_buf text;
} notes;

static void note_sink(int level, const char *msg, void *userdata)
{
	notes *n = userdata;

	if (level <= KS_LOG_NOTICE)
		assert_int_equal(ks_buf_printf(&n->text, "%s\n", msg), 0);
}

static void test_create_calendar(void **state)
{
	_cleanup_free_ char *trace = NULL;
	notes n = {};
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	ks_log_set_sink(note_sink, &n);
	fake_start(&s, h_calendar);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_calendar(&a, "Tasks", KS_CALENDAR_TASKS, "#ff8800", &href, &err),
			 0);
	assert_string_equal(href, "/p/cal/tasks/");
	trace = fake_trace(&s);
	assert_string_equal(trace, "PROPFIND /\nPROPFIND /p/\nPROPFIND /p/cal/\n"
			    "PROPFIND /p/cal/tasks/\nMKCALENDAR /p/cal/tasks/\n"
			    "PROPFIND /p/cal/tasks/\nPROPPATCH /p/cal/tasks/\n"
			    "PROPFIND /p/cal/tasks/\n");
	assert_non_null(strstr(s.log[4].body, "<c:comp name=\"VTODO\"/>"));
	assert_non_null(strstr(s.log[6].body, "<ic:calendar-color>#FF8800</ic:calendar-color>"));
	assert_null(strstr(s.log[6].body, "displayname"));
	assert_string_equal(n.text.data, "account 't': the server keeps its own component set "
			    "(VEVENT, VTODO, VJOURNAL) for the new calendar /p/cal/tasks/ instead "
			    "of VTODO\n");
	ks_log_set_sink(NULL, NULL);
	ks_buf_done(&n.text);
	free(href);
	fake_stop(&s);
}

static void h_no_cal_home(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (!answer_discovery(rq, status, body, ms_homes_no_cal))
		*status = 404;
}

static void test_create_without_home(void **state)
{
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_no_cal_home);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_calendar(&a, "Tasks", 0, NULL, &href, &err), -EOPNOTSUPP);
	assert_string_equal(err, "the server reports no calendar-home-set for /p/, so it offers "
			    "no calendars to this account");
	free(err);
	assert_int_equal(s.n_log, 2);
	fake_stop(&s);
}

static void h_probe(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0 && strcmp(rq->depth, "1") == 0) {
		*status = 207;
		*body = strcmp(rq->path, "/p/card/") == 0 ? ms_listing_card : ms_listing_cal;
	}
}

static void test_probe(void **state)
{
	_cleanup_free_ char *trace = NULL;
	fake_server s;
	char url[64], *json = NULL, *err = NULL;

	fake_start(&s, h_probe);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_probe_account(&a, &json, &err), 0);
	assert_null(err);
	char want[1024];
	snprintf(want, sizeof(want),
		 "{\"name\":\"t\",\"url\":\"%s\",\"principal\":\"/p/\",\"collections\":["
		 "{\"href\":\"/p/card/default/\",\"dir\":\"default\",\"kind\":\"addressbook\","
		 "\"displayname\":\"Contacts\",\"components\":[],\"readonly\":true},"
		 "{\"href\":\"/p/cal/work/\",\"dir\":\"work\",\"kind\":\"calendar\","
		 "\"displayname\":\"Work\","
		 "\"components\":[\"VTODO\"],\"readonly\":false}]}", url);
	assert_string_equal(json, want);
	trace = fake_trace(&s);
	assert_string_equal(trace, "PROPFIND /\nPROPFIND /p/\nPROPFIND /p/card/\n"
			    "PROPFIND /p/cal/\n");
	free(json);
	fake_stop(&s);
}

/* Xandikos drops the description of an extended MKCOL and reports it empty; PROPPATCH sets
 * it. */
static const char ms_book_empty_desc[] =
	MS_BEGIN "<d:response><d:href>/p/card/family/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/><a:addressbook/></d:resourcetype>"
	"<d:displayname>Family</d:displayname><a:addressbook-description/></d:prop>" MS_OK
	"</d:multistatus>";
static const char ms_book_desc[] =
	MS_BEGIN "<d:response><d:href>/p/card/family/</d:href><d:propstat><d:prop>"
	"<d:resourcetype><d:collection/><a:addressbook/></d:resourcetype>"
	"<d:displayname>Family</d:displayname><a:addressbook-description>Close"
	"</a:addressbook-description></d:prop>" MS_OK "</d:multistatus>";

static void h_book_desc(fake_server *s, const fake_req *rq, int *status, const char **body)
{
	if (answer_discovery(rq, status, body, ms_homes))
		return;
	if (strcmp(rq->method, "PROPFIND") == 0) {
		*status = s->step ? 207 : 404;
		*body = s->step == 1 ? ms_book_empty_desc : s->step == 2 ? ms_book_desc : NULL;
	} else if (strcmp(rq->method, "MKCOL") == 0) {
		s->step = 1;
		*status = 201;
	} else if (strcmp(rq->method, "PROPPATCH") == 0) {
		s->step = 2;
		*status = 207;
		*body = ms_book_desc;
	}
}

static void test_create_description_patched(void **state)
{
	fake_server s;
	char url[64], *href = NULL, *err = NULL;

	fake_start(&s, h_book_desc);
	ks_account_config a = test_account(&s, url, sizeof(url));
	assert_int_equal(ks_create_addressbook(&a, "Family", "Close", &href, &err), 0);
	assert_int_equal(s.n_log, 8);
	assert_string_equal(s.log[6].method, "PROPPATCH");
	assert_non_null(strstr(s.log[6].body, "<d:prop><a:addressbook-description>Close"
			       "</a:addressbook-description></d:prop>"));
	free(href);
	fake_stop(&s);
}

/* Checked before anything is sent. */
static void test_account_checks(void **state)
{
	static const struct {
		ks_account_config a;
		const char *msg;
	} cases[] = {
		{ { .name = (char *) "t" }, "account 't' needs url, provider or feed" },
		{ { .name = (char *) "t", .url = (char *) "http://dav.example.org/" },
		  "account 't': plain http:// to 'dav.example.org' would send the password "
		  "unencrypted; use https:// or set allow_insecure_http = true" },
		{ { .name = (char *) "t", .url = (char *) "ftp://x/" },
		  "invalid URL 'ftp://x/' for url; it must start with http:// or https://" },
		{ { .name = (char *) "a b", .url = (char *) "https://x/" },
		  "invalid account name 'a b'" },
		{ { .name = (char *) "t", .url = (char *) "https://x/",
		    .password_command = (char *) "a\nb" },
		  "the value of password_command contains a line break" },
		{ { .name = (char *) "t", .url = (char *) "http://127.0.0.1:9/",
		    .password_command = (char *) "exit 3" },
		  "cannot get the password of account 't': password_command exited with status 3" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *err = NULL, *json = NULL;
		int r = ks_probe_account(&cases[i].a, &json, &err);

		if (r >= 0 || !err || !strstr(err, cases[i].msg))
			fail_msg("case %zu: %d '%s'", i, r, err ? err : "");
		assert_null(json);
		free(err);
	}

	ks_account_config a = { .name = (char *) "t", .url = (char *) "http://127.0.0.1:9/" };
	char *err = NULL;
	assert_int_equal(ks_create_calendar(&a, "X", 0, "blue", NULL, &err), -EINVAL);
	assert_string_equal(err, "invalid color 'blue'; use #RRGGBB");
	free(err);
	err = NULL;
	assert_int_equal(ks_create_calendar(&a, "", 0, NULL, NULL, &err), -EINVAL);
	free(err);
	err = NULL;
	assert_int_equal(ks_create_calendar(&a, "X", 1u << 5, NULL, NULL, &err), -EINVAL);
	free(err);
	err = NULL;
	assert_int_equal(ks_create_addressbook(&a, "bad\x01", NULL, NULL, &err), -EINVAL);
	free(err);
}

/* A port bound but not listening refuses connections. */
static void test_connection_refused(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char url[64], *err = NULL, *json = NULL;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
	ks_account_config a = { .name = (char *) "t", .url = url };
	assert_int_equal(ks_probe_account(&a, &json, &err), -ECONNREFUSED);
	assert_non_null(strstr(err, "discovery at"));
	free(err);
	close(fd);
}

/* Accounts already discovered with the same principal on the same server are named. */
static void test_same_as(void **state)
{
	char dir[sizeof(tmpdir) + 16];
	ks_engine *e = NULL;

	snprintf(dir, sizeof(dir), "%s/same", tmpdir);
	assert_int_equal(ks_engine_new(dir, &e), 0);
	ks_cache_account a = { .principal = (char *) "/user/" };
	ks_cache_account b = { .principal = (char *) "/other/" };
	assert_int_equal(ks_cache_put_account(e->cache, "a", &a), 0);
	assert_int_equal(ks_cache_put_account(e->cache, "b", &b), 0);
	assert_int_equal(ks_cache_put_account(e->cache, "elsewhere", &a), 0);
	ks_account_config accs[] = {
		{ .name = (char *) "a", .url = (char *) "HTTP://H.example:1/dav/" },
		{ .name = (char *) "b", .url = (char *) "http://h.example:1/" },
		{ .name = (char *) "elsewhere", .url = (char *) "http://h.example:2/" },
		{ .name = (char *) "new", .url = (char *) "http://h.example:1/" },
	};
	ks_config c = { .accounts = accs, .n_accounts = ELEMENTSOF(accs) };
	char *json = strdup("{\"name\":\"x\",\"principal\":\"/user/\",\"collections\":[]}");

	assert_non_null(json);
	assert_int_equal(ks_probe_json_add_same_as(e, &c, "http://h.example:1/", &json), 0);
	assert_string_equal(json, "{\"name\":\"x\",\"principal\":\"/user/\",\"collections\":[],"
			    "\"same_as\":[\"a\"]}");
	free(json);
	json = strdup("[]");
	assert_int_equal(ks_probe_json_add_same_as(e, &c, "http://h.example:1/", &json),
			 -EBADMSG);
	free(json);
	ks_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_components_parse),
		cmocka_unit_test(test_slug),
		cmocka_unit_test(test_uuid),
		cmocka_unit_test(test_mkcol_body),
		cmocka_unit_test(test_mkcalendar_body),
		cmocka_unit_test(test_proppatch_body),
		cmocka_unit_test(test_create_result),
		cmocka_unit_test(test_probe_json),
		cmocka_unit_test(test_clients_json),
		cmocka_unit_test(test_clients_json_edges),
		cmocka_unit_test(test_clients_config_walk),
		cmocka_unit_test(test_create_addressbook),
		cmocka_unit_test(test_create_missing_as_207),
		cmocka_unit_test(test_create_taken),
		cmocka_unit_test(test_create_name_taken),
		cmocka_unit_test(test_create_refused),
		cmocka_unit_test(test_create_auth),
		cmocka_unit_test(test_create_plain_collection),
		cmocka_unit_test(test_create_calendar),
		cmocka_unit_test(test_create_description_patched),
		cmocka_unit_test(test_create_without_home),
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_same_as),
		cmocka_unit_test(test_account_checks),
		cmocka_unit_test(test_connection_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "table.h"
#include "util/macro.h"

static void help(void)
{
	printf("Usage: ksyncctl [-v] status [--json]\n"
	       "\n"
	       "Show every account: its state, last and next sync and errors; its collections\n"
	       "with item counts and local changes not yet sent; and the conflicts that left a\n"
	       "copy to look at. With -v before the verb, also each collection's directory,\n"
	       "address on the server and last run.\n"
	       "\n"
	       "  --json       print ksyncd's answer as JSON\n"
	       "  -h, --help   show this help\n");
}

static int parse_argv(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			arg_json = true;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind < argc)
		return ctl_error(-EINVAL, "status takes no arguments.");
	return 1;
}

/* "last sync 2026-11-26 09:14 (5 min ago): ok" and the like. */
static void print_when(const char *label, int64_t t, const char *result)
{
	char abs[CTL_TIME_MAX], rel[CTL_TIME_MAX];

	printf("  %-11s", label);
	if (t <= 0)
		fputs("never", stdout);
	else
		printf("%s (%s)", ctl_format_time(t, abs), ctl_format_ago(t, rel));
	if (result) {
		fputs(", ", stdout);
		ctl_fputs(result, stdout);
	}
	fputc('\n', stdout);
}

static int print_collections(const ks_json *cols)
{
	_cleanup_(table_freep) table *t = NULL;
	int r;

	r = table_new(7, &t, "COLLECTION", "KIND", "SYNC", "ITEMS", "PENDING", "LAST SYNC",
		      "NAME");
	if (r < 0)
		return ctl_error(r, "Failed to build the table: %m");
	table_align_right(t, 3);
	table_align_right(t, 4);
	for (size_t i = 0; r >= 0 && i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *res = ks_json_get_string(c, "last_result");
		bool enabled = ks_json_get_bool(c, "enabled", true);
		char kind[64], ago[CTL_TIME_MAX];

		r = table_add(t, ks_json_get_string(c, "path"));
		if (r >= 0)
			r = table_add(t, ctl_kind(c, kind, sizeof(kind)));
		if (r >= 0)
			r = table_add(t, enabled ? "on" : "off");
		if (r >= 0)
			r = table_addf(t, "%lld", (long long) ks_json_get_int(c, "items", 0));
		if (r >= 0)
			r = table_addf(t, "%lld", (long long) ks_json_get_int(c, "pending", 0));
		if (r >= 0) {
			int64_t last = ks_json_get_int(c, "last_sync", 0);
			const char *when = ctl_format_ago(last, ago);
			if (res && strcmp(res, "ok") != 0)
				r = table_addf(t, "%s, %s", when, strcmp(res, "skipped") == 0 ?
					       "not synced" : res);
			else
				r = table_add(t, when);
		}
		if (r >= 0) {
			const char *dn = ks_json_get_string(c, "displayname");
			bool ro = ks_json_get_bool(c, "readonly", false);
			r = table_addf(t, "%s%s", dn ? dn : "-", ro ? " (read-only)" : "");
		}
	}
	if (r < 0)
		return ctl_error(r, "Failed to build the table: %m");
	if (table_rows(t) > 0) {
		fputc('\n', stdout);
		table_print(t, stdout, "  ");
	} else
		fputs("  no collections found yet\n", stdout);

	for (size_t i = 0; arg_verbose && i < ks_json_count(cols); i++) {
		/* -v: where each one lives, here and on the server, and when it was tried. */
		const ks_json *c = ks_json_at(cols, i);
		char when[CTL_TIME_MAX];
		fputs("  ", stdout);
		ctl_fputs(ks_json_get_string(c, "path"), stdout);
		fputs(": ", stdout);
		ctl_fputs(ks_json_get_string(c, "dir"), stdout);
		fputs("\n      ", stdout);
		ctl_fputs(ks_json_get_string(c, "href"), stdout);
		printf(", last run %s\n", ctl_format_time(ks_json_get_int(c, "last_run", 0), when));
	}
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		/* Calendars that keep only a time window of their events. */
		const ks_json *c = ks_json_at(cols, i);
		const ks_json *win = ks_json_get(c, "window");
		if (!win || ks_json_get_type(win) != KS_JSON_OBJECT)
			continue;
		int64_t past = ks_json_get_int(win, "past_days", 0);
		int64_t future = ks_json_get_int(win, "future_days", 0);
		fputs("  ", stdout);
		ctl_fputs(ks_json_get_string(c, "path"), stdout);
		fputs(": events ", stdout);
		if (past)
			printf("of the last %lld day(s)", (long long) past);
		if (past && future)
			fputs(" and ", stdout);
		if (future)
			printf("%sthe next %lld day(s)", past ? "" : "of ", (long long) future);
		printf(" only; %lld more on the server\n",
		       (long long) ks_json_get_int(win, "outside", 0));
	}
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *err = ks_json_get_string(c, "last_error");
		if (!err)
			continue;
		fputs("  ", stdout);
		ctl_fputs(ks_json_get_string(c, "path"), stdout);
		fputs(": ", stdout);
		ctl_fputs(err, stdout);
		fputc('\n', stdout);
	}
	return 0;
}

/* Each local change not on the server yet, and why: the daemon's log is not where anyone
 * looks. */
static void print_pending(const ks_json *cols)
{
	bool header = false;

	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const ks_json *files = ks_json_get(c, "pending_files");
		int64_t n = ks_json_get_int(c, "pending", 0);

		if (n <= 0)
			continue;
		if (!header)
			fputs("\n  Not on the server yet:\n", stdout);
		header = true;
		for (size_t k = 0; k < ks_json_count(files); k++) {
			const ks_json *f = ks_json_at(files, k);
			fputs("    ", stdout);
			ctl_fputs(ks_json_get_string(c, "path"), stdout);
			fputc('/', stdout);
			ctl_fputs(ks_json_get_string(f, "file"), stdout);
			fputs(" (", stdout);
			ctl_fputs(ks_json_get_string(f, "change"), stdout);
			fputs("): ", stdout);
			ctl_fputs(ks_json_get_string(f, "reason"), stdout);
			fputc('\n', stdout);
		}
		if ((size_t) n > ks_json_count(files)) {
			fputs("    ", stdout);
			ctl_fputs(ks_json_get_string(c, "path"), stdout);
			printf(": %lld more\n", (long long) n - (long long) ks_json_count(files));
		}
	}
}

/* The conflict's file as a path the user can open: a bare name is in its collection's
 * directory. */
static char *conflict_file(const ks_json *conflict, const ks_json *cols)
{
	const char *file = ks_json_get_string(conflict, "file");
	const char *coll = ks_json_get_string(conflict, "collection");
	char *p = NULL;

	if (!file || file[0] == '/' || !coll)
		return file ? strdup(file) : NULL;
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *path = ks_json_get_string(c, "path");
		const char *dir = ks_json_get_string(c, "dir");

		if (path && dir && strcmp(path, coll) == 0) {
			if (asprintf(&p, "%s/%s", dir, file) < 0)
				return NULL;
			return p;
		}
	}
	return strdup(file);
}

static void print_conflicts(const ks_json *conflicts, const ks_json *cols)
{
	size_t n = ks_json_count(conflicts);
	char when[CTL_TIME_MAX];

	if (n == 0)
		return;
	printf("\n  Conflicts (%zu):\n", n);
	for (size_t i = 0; i < n; i++) {
		const ks_json *c = ks_json_at(conflicts, i);
		const char *what = ks_json_get_string(c, "what");
		const char *winner = ks_json_get_string(c, "winner");

		fputs("    ", stdout);
		ctl_fputs(ks_json_get_string(c, "collection"), stdout);
		printf(" (%s)", ctl_format_time(ks_json_get_int(c, "time", 0), when));
		if (what) {
			fputs(": ", stdout);
			ctl_fputs(what, stdout);
		}
		_cleanup_free_ char *file = conflict_file(c, cols);
		fputs("\n      file: ", stdout);
		ctl_fputs(file, stdout);
		if (winner) {
			fputs(" (holds the ", stdout);
			ctl_fputs(winner, stdout);
			fputs(" version)", stdout);
		}
		fputs("\n      copy: ", stdout);
		ctl_fputs(ks_json_get_string(c, "kept"), stdout);
		fputs(" (the other version)\n", stdout);
	}
	fputs("    Keep one side with 'ksyncctl conflicts resolve', or merge by hand what you want\n"
	      "    to keep into the file, then delete the copy.\n", stdout);
}

static int print_account(const ks_json *a)
{
	const char *state = ks_json_get_string(a, "state");
	const char *err = ks_json_get_string(a, "last_error");
	const ks_json *cols = ks_json_get(a, "collections");
	int64_t pending = 0;
	char when[CTL_TIME_MAX];

	fputs(ks_json_get_bool(a, "subscription", false) ? "Subscription " : "Account ", stdout);
	ctl_fputs(ks_json_get_string(a, "name"), stdout);
	fputs("  ", stdout);
	ctl_fputs(ks_json_get_string(a, "url"), stdout);
	fputc('\n', stdout);

	printf("  %-11s", "state");
	ctl_fputs(state, stdout);
	if (state && strcmp(state, "backoff") == 0) {
		int64_t retry = ks_json_get_int(a, "retry_in", -1);
		if (retry >= 0)
			printf(", retrying %s", ctl_format_ago(time(NULL) + retry, when));
	}
	fputc('\n', stdout);
	print_when("last sync", ks_json_get_int(a, "last_sync", 0),
		   ks_json_get_string(a, "last_result"));
	if (err) {
		printf("  %-11s", "error");
		ctl_fputs(err, stdout);
		fputc('\n', stdout);
	}
	int64_t next = ks_json_get_int(a, "next_sync", 0);
	if (next > 0)
		print_when("next sync", next, NULL);
	for (size_t i = 0; i < ks_json_count(cols); i++)
		pending += ks_json_get_int(ks_json_at(cols, i), "pending", 0);
	if (pending > 0)
		printf("  %-11s%lld local change%s not sent yet\n", "pending", (long long) pending,
		       pending == 1 ? "" : "s");

	int r = print_collections(cols);
	print_pending(cols);
	print_conflicts(ks_json_get(a, "conflicts"), cols);
	return r;
}

/* The problems of ksync.conf that ksyncd holds: errors (what they left out) and warnings. */
static void print_config(const ks_json *config)
{
	const ks_json *errors = ks_json_get(config, "errors");
	const ks_json *warnings = ks_json_get(config, "warnings");
	const ks_json *invalid = ks_json_get(config, "invalid_accounts");

	if (ks_json_count(errors) > 0) {
		fputs("\nThe configuration ", stdout);
		ctl_fputs(ks_json_get_string(config, "path"), stdout);
		fputs(" has errors", stdout);
		if (ks_json_count(invalid) > 0) {
			fputs("; left out until it is fixed:", stdout);
			for (size_t i = 0; i < ks_json_count(invalid); i++) {
				fputs(i ? ", " : " ", stdout);
				ctl_fputs(ks_json_string(ks_json_at(invalid, i)), stdout);
			}
		} else
			fputs("; the configuration read before stays in use", stdout);
		fputs(":\n", stdout);
		for (size_t i = 0; i < ks_json_count(errors); i++) {
			fputs("  ", stdout);
			ctl_fputs(ks_json_string(ks_json_at(errors, i)), stdout);
			fputc('\n', stdout);
		}
		fputs("ksyncd reads the file again when it changes.\n", stdout);
	}
	for (size_t i = 0; i < ks_json_count(warnings); i++) {
		fputs(i ? "  " : "\nWarnings about the configuration:\n  ", stdout);
		ctl_fputs(ks_json_string(ks_json_at(warnings, i)), stdout);
		fputc('\n', stdout);
	}
}

int cmd_status(int argc, char **argv)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *text;
	int r;

	r = parse_argv(argc, argv);
	if (r <= 0)
		return r;
	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "Status", CTL_TIMEOUT_USEC, NULL, &reply, NULL);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);

	const ks_json *accounts = ks_json_get(j, "accounts");
	fputs("ksyncd ", stdout);
	ctl_fputs(ks_json_get_string(j, "version"), stdout);
	fputc('\n', stdout);
	print_config(ks_json_get(j, "config"));
	if (ks_json_count(accounts) == 0)
		fputs("\nNo accounts. Add one with 'ksyncctl account add NAME --provider "
		      "infomaniak\n--username USER --ask-password' (see ksyncctl(1)).\n",
		      stdout);
	for (size_t i = 0; r >= 0 && i < ks_json_count(accounts); i++) {
		fputc('\n', stdout);
		r = print_account(ks_json_at(accounts, i));
	}
	return r;
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "table.h"
#include "util/macro.h"

static void help(void)
{
	printf("Usage: ksyncctl collections [--json] [ACCOUNT]\n"
	       "\n"
	       "List the address books, calendars and task lists of every account, or of\n"
	       "ACCOUNT: what they hold, whether they sync, and their directories.\n"
	       "\n"
	       "  --json       print ksyncd's answer as JSON\n"
	       "  -h, --help   show this help\n");
}

int cmd_collections(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_(table_freep) table *t = NULL;
	const char *account = "", *text;
	int c, r;

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
		account = argv[optind++];
	if (optind < argc)
		return ctl_error(-EINVAL, "collections takes at most one ACCOUNT.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "Collections", CTL_TIMEOUT_USEC, NULL, &reply, "s", account);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);

	const ks_json *cols = ks_json_get(j, "collections");
	if (ks_json_count(cols) == 0) {
		fputs("No collections.\n", stdout);
		return 0;
	}
	r = table_new(6, &t, "COLLECTION", "KIND", "SYNC", "ITEMS", "NAME", "DIRECTORY");
	if (r < 0)
		return ctl_error(r, "Out of memory.");
	table_align_right(t, 3);
	for (size_t i = 0; r >= 0 && i < ks_json_count(cols); i++) {
		const ks_json *col = ks_json_at(cols, i);
		const char *dn = ks_json_get_string(col, "displayname");
		const char *acc = ks_json_get_string(col, "account");
		char kind[64];

		r = table_addf(t, "%s/%s", acc ? acc : "-", ks_json_get_string(col, "path") ?: "-");
		if (r >= 0)
			r = table_add(t, ctl_kind(col, kind, sizeof(kind)));
		if (r >= 0)
			r = table_add(t, ks_json_get_bool(col, "enabled", true) ? "on" : "off");
		if (r >= 0)
			r = table_addf(t, "%lld", (long long) ks_json_get_int(col, "items", 0));
		if (r >= 0) {
			bool ro = ks_json_get_bool(col, "readonly", false);
			r = table_addf(t, "%s%s", dn ? dn : "-", ro ? " (read-only)" : "");
		}
		if (r >= 0)
			r = table_add(t, ks_json_get_string(col, "dir"));
	}
	if (r < 0)
		return ctl_error(r, "Out of memory.");
	table_print(t, stdout, "");
	return 0;
}

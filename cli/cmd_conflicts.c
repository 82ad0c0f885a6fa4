/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util/macro.h"

static const char *arg_keep;

static void help(void)
{
	printf("Usage: ksyncctl conflicts [list] [--json] [ACCOUNT]\n"
	       "       ksyncctl conflicts resolve [--json] ITEM --keep local|server|both\n"
	       "\n"
	       "List the conflicts that left a copy of the losing version, or resolve one.\n"
	       "ITEM is the id or the ACCOUNT/COLLECTION/FILE that the list shows. The version\n"
	       "kept is written into the item's file and sent by a sync, like any edit; 'both'\n"
	       "keeps the server's version in the item and makes the local one a new item with\n"
	       "a new UID. The copy is removed once its version is in the collection.\n"
	       "\n"
	       "  --keep SIDE  local, server or both\n"
	       "  --json       print ksyncd's answer as JSON\n"
	       "  -h, --help   show this help\n");
}

static int do_list(sd_bus *bus, const char *account)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *text;
	char when[CTL_TIME_MAX];
	int r;

	r = ctl_call(bus, "Conflicts", CTL_TIMEOUT_USEC, NULL, &reply, "s", account);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);

	const ks_json *list = ks_json_get(j, "conflicts");
	size_t n = ks_json_count(list);
	if (n == 0) {
		fputs("No conflicts.\n", stdout);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const ks_json *c = ks_json_at(list, i);
		const char *what = ks_json_get_string(c, "what");
		const char *winner = ks_json_get_string(c, "winner");
		const char *path = ks_json_get_string(c, "path");

		printf("%s%lld  ", i ? "\n" : "", (long long) ks_json_get_int(c, "id", 0));
		ctl_fputs(ks_json_get_string(c, "account"), stdout);
		fputc('/', stdout);
		ctl_fputs(ks_json_get_string(c, "collection"), stdout);
		fputc('/', stdout);
		ctl_fputs(ks_json_get_string(c, "file"), stdout);
		printf("  %s", ctl_format_time(ks_json_get_int(c, "time", 0), when));
		if (what) {
			fputs(": ", stdout);
			ctl_fputs(what, stdout);
		}
		fputs("\n    file: ", stdout);
		ctl_fputs(path ? path : "(its collection is gone)", stdout);
		if (winner && path) {
			fputs(" (holds the ", stdout);
			ctl_fputs(winner, stdout);
			fputs(" version)", stdout);
		}
		fputs("\n    copy: ", stdout);
		ctl_fputs(ks_json_get_string(c, "kept"), stdout);
		printf(" (the %s version)\n",
		       winner && strcmp(winner, "local") == 0 ? "server" : "local");
	}
	fputs("\nResolve one with 'ksyncctl conflicts resolve ITEM --keep local|server|both'\n"
	      "(ITEM: the number or the path above), or merge the copy into the file by hand\n"
	      "and delete the copy.\n", stdout);
	return 0;
}

static int do_resolve(sd_bus *bus, const char *item)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *text;
	int r;

	r = ctl_call(bus, "ResolveConflict", CTL_TIMEOUT_NETWORK_USEC, NULL, &reply, "ss", item,
		     arg_keep);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		r = ctl_print_json(text);
	else {
		const char *kept = ks_json_get_string(j, "kept");
		const char *new_file = ks_json_get_string(j, "new_file");
		_cleanup_free_ char *name = NULL;

		if (asprintf(&name, "%s/%s/%s", ks_json_get_string(j, "account") ?: "?",
			     ks_json_get_string(j, "collection") ?: "?",
			     ks_json_get_string(j, "file") ?: "?") < 0)
			return ctl_error(-ENOMEM, "Out of memory.");
		if (kept && strcmp(kept, "both") == 0) {
			fputs("Kept both versions of ", stdout);
			ctl_fputs(name, stdout);
			fputs(": the server's in the item, the local one as a new item in ", stdout);
			ctl_fputs(new_file, stdout);
		} else {
			printf("Kept the %s version of ", kept ? kept : "chosen");
			ctl_fputs(name, stdout);
		}
		fputs(".\n", stdout);
	}
	const ks_json *synced = ks_json_get(j, "synced");
	if (synced && !ks_json_get_bool(j, "synced", false))
		return ctl_error(-EIO, "The sync that sends it failed; 'ksyncctl status' says why, "
				 "and the next sync tries again.");
	if (synced && !arg_json)
		fputs("Sent to the server.\n", stdout);
	return r;
}

int cmd_conflicts(int argc, char **argv)
{
	enum { ARG_JSON = 0x100, ARG_KEEP };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "keep", required_argument, NULL, ARG_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	const char *sub = "list", *arg = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			arg_json = true;
			break;
		case ARG_KEEP:
			arg_keep = optarg;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind < argc && (strcmp(argv[optind], "list") == 0 ||
			      strcmp(argv[optind], "resolve") == 0))
		sub = argv[optind++];
	if (optind < argc)
		arg = argv[optind++];
	if (optind < argc)
		return ctl_error(-EINVAL, "Too many arguments; see 'ksyncctl conflicts --help'.");
	bool resolve = strcmp(sub, "resolve") == 0;
	if (resolve && !arg)
		return ctl_error(-EINVAL, "Give the conflict to resolve, as 'ksyncctl conflicts' "
				 "lists it.");
	if (resolve && !arg_keep)
		return ctl_error(-EINVAL, "Say which version to keep: --keep local, --keep server "
				 "or --keep both.");
	if (arg_keep && !resolve)
		return ctl_error(-EINVAL, "--keep goes with 'resolve'.");
	if (arg_keep && strcmp(arg_keep, "local") != 0 && strcmp(arg_keep, "server") != 0 &&
	    strcmp(arg_keep, "both") != 0)
		return ctl_error(-EINVAL, "--keep takes local, server or both, not '%s'.",
				 arg_keep);

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	return resolve ? do_resolve(bus, arg) : do_list(bus, arg ? arg : "");
}

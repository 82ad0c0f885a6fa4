/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "util/macro.h"

/* rename-collection and delete-collection: on the server, then a sync that lists the home
 * sets takes the new name, or removes the collection here. */

static void rename_help(void)
{
	printf("Usage: ksyncctl rename-collection ACCOUNT/COLLECTION NEW-NAME\n"
	       "\n"
	       "Give an address book, calendar or task list the name NEW-NAME on the server\n"
	       "(its display name; the directory keeps its name), then sync. A name another\n"
	       "collection of the same kind already has is refused.\n"
	       "\n"
	       "  -h, --help   show this help\n");
}

int cmd_rename_collection(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *text;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			rename_help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind + 2 != argc)
		return ctl_error(-EINVAL, "rename-collection needs ACCOUNT/COLLECTION and NEW-NAME; "
				 "see 'ksyncctl rename-collection --help'.");
	const char *target = argv[optind], *name = argv[optind + 1];
	r = ctl_check_collection_target(target);
	if (r < 0)
		return r;
	if (!*name)
		return ctl_error(-EINVAL, "The new name is empty.");
	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "RenameCollection", CTL_TIMEOUT_NETWORK_USEC, NULL, &reply, "ss", target,
		     name);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		return ctl_print_json(text);
	fputs("Renamed ", stdout);
	ctl_fputs(target, stdout);
	fputs(" to '", stdout);
	ctl_fputs(ks_json_get_string(j, "displayname") ?: name, stdout);
	fputs("'.\n", stdout);
	return 0;
}

static void delete_help(void)
{
	printf("Usage: ksyncctl delete-collection ACCOUNT/COLLECTION [--allow-mass-delete]\n"
	       "\n"
	       "Delete an address book, calendar or task list on the server, with everything\n"
	       "in it, then sync, which removes it here. As for the mass-deletion guard, a\n"
	       "collection of two items or more is deleted only after a 'y' on a terminal or\n"
	       "with --allow-mass-delete. Local changes never sent are kept under conflicts/.\n"
	       "\n"
	       "  --allow-mass-delete  delete it whatever it holds, without asking\n"
	       "  -h, --help           show this help\n");
}

/* The collection's object as Collections answers it; NULL (logged) when not found. */
static const ks_json *find_collection(sd_bus *bus, const char *target, ks_json **ret_all)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_free_ char *account = strndup(target, strcspn(target, "/"));
	const char *name = target + strcspn(target, "/") + 1;
	ks_json *all = NULL;

	if (!account || ctl_call(bus, "Collections", CTL_TIMEOUT_USEC, NULL, &reply, "s",
				 account) < 0 || ctl_reply_json(reply, &all, NULL) < 0)
		return NULL;
	*ret_all = all;
	const ks_json *cols = ks_json_get(all, "collections");
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *n = ks_json_get_string(c, "name"), *p = ks_json_get_string(c, "path");
		if ((n && strcmp(n, name) == 0) || (p && strcmp(p, name) == 0))
			return c;
	}
	return NULL;
}

int cmd_delete_collection(int argc, char **argv)
{
	enum { ARG_MASS = 0x100 };
	static const struct option options[] = {
		{ "allow-mass-delete", no_argument, NULL, ARG_MASS },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL, *all = NULL;
	bool allow = false;
	const char *text;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_MASS:
			allow = true;
			break;
		case 'h':
			delete_help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "delete-collection needs ACCOUNT/COLLECTION; see "
				 "'ksyncctl delete-collection --help'.");
	const char *target = argv[optind];
	r = ctl_check_collection_target(target);
	if (r < 0)
		return r;
	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	if (!allow && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
		const ks_json *col = find_collection(bus, target, &all);
		int64_t items = col ? ks_json_get_int(col, "items", 0) : 0;
		if (items >= 2) {
			char answer[16] = "";
			fputs("Delete ", stdout);
			ctl_fputs(target, stdout);
			printf(" with its %lld items on the server and here? [y/N] ",
			       (long long) items);
			fflush(stdout);
			if (!fgets(answer, sizeof(answer), stdin) ||
			    (answer[0] != 'y' && answer[0] != 'Y'))
				return ctl_error(-ECANCELED, "Nothing deleted.");
			allow = true;
		}
	}
	r = ctl_call(bus, "DeleteCollection", CTL_TIMEOUT_NETWORK_USEC, NULL, &reply, "sb",
		     target, allow);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	if (arg_json)
		r = ctl_print_json(text);
	else {
		fputs("Deleted ", stdout);
		ctl_fputs(target, stdout);
		printf(" (%lld items) on the server.\n", (long long) ks_json_get_int(j, "items", 0));
	}
	if (!ks_json_get_bool(j, "synced", false))
		return ctl_error(-EIO, "The sync that removes it here failed; 'ksyncctl status' "
				 "says why.");
	if (!arg_json)
		fputs("Removed it here too.\n", stdout);
	return r;
}

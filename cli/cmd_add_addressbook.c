/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "util/macro.h"

static void help(void)
{
	printf("Usage: ksyncctl add-addressbook ACCOUNT NAME [--description TEXT]\n"
	       "\n"
	       "Create an address book called NAME on the account's server, sync it, and print\n"
	       "the directory that holds its contacts.\n"
	       "\n"
	       "  --description TEXT   a description stored with the address book\n"
	       "  -h, --help           show this help\n");
}

int cmd_add_addressbook(int argc, char **argv)
{
	enum { ARG_DESCRIPTION = 0x100 };
	static const struct option options[] = {
		{ "description", required_argument, NULL, ARG_DESCRIPTION },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *description = "";
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_DESCRIPTION:
			description = optarg;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json("add-addressbook");
	if (r < 0)
		return r;
	if (optind + 2 != argc)
		return ctl_error(-EINVAL, "add-addressbook needs ACCOUNT and NAME.");
	const char *account = argv[optind], *name = argv[optind + 1];
	if (!*account || !*name)
		return ctl_error(-EINVAL, "ACCOUNT and NAME may not be empty.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "CreateAddressBook", CTL_TIMEOUT_NETWORK_USEC, NULL, &reply, "sss",
		     account, name, description);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0)
		return r;

	fputs("Created address book ", stdout);
	fputc('\'', stdout);
	ctl_fputs(ks_json_get_string(j, "displayname") ?: name, stdout);
	fputs("' (", stdout);
	ctl_fputs(account, stdout);
	fputc('/', stdout);
	ctl_fputs(ks_json_get_string(j, "path"), stdout);
	fputs(").\nDirectory: ", stdout);
	ctl_fputs(ks_json_get_string(j, "dir"), stdout);
	fputc('\n', stdout);
	return 0;
}

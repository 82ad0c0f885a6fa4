/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util/ipc.h"
#include "util/macro.h"

static const struct verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *args;
	const char *summary;
} verbs[] = {
	{ "status", cmd_status, "", "accounts, collections, last and next sync, conflicts" },
	{ "sync", cmd_sync, "[--force] [ACCOUNT[/COLLECTION]]", "sync now and wait for the end" },
	{ "account", cmd_account, "add|list|remove ...", "add, list or remove accounts" },
	{ "subscribe", cmd_subscribe, "NAME URL", "subscribe to a published calendar (.ics)" },
	{ "collections", cmd_collections, "[ACCOUNT]", "list the collections" },
	{ "enable", cmd_enable, "ACCOUNT/COLLECTION", "sync this collection" },
	{ "disable", cmd_disable, "ACCOUNT/COLLECTION", "stop syncing this collection" },
	{ "add-addressbook", cmd_add_addressbook, "ACCOUNT NAME", "create an address book" },
	{ "add-calendar", cmd_add_calendar, "ACCOUNT NAME", "create a calendar or task list" },
	{ "rename-collection", cmd_rename_collection, "ACCOUNT/COLLECTION NAME",
	  "rename a collection on the server" },
	{ "delete-collection", cmd_delete_collection, "ACCOUNT/COLLECTION",
	  "delete a collection on the server and here" },
	{ "clients", cmd_clients, "", "print khal, khard and todoman configuration" },
	{ "reload", cmd_reload, "", "make ksyncd read its configuration again" },
	{ "config", cmd_config, "check [FILE]", "check ksync.conf without syncing" },
	{ "duplicates", cmd_duplicates, "[list|show|merge|undo] ...",
	  "find and merge duplicate contacts" },
	{ "conflicts", cmd_conflicts, "[list|resolve ITEM --keep SIDE]",
	  "list conflicts, or keep one side" },
	{ "log", cmd_log, "[-f] [-n LINES]", "show ksyncd's log (journalctl --user -u ksyncd)" },
};

static void help(void)
{
	printf("Usage: ksyncctl [--json] VERB [ARGUMENTS]\n"
	       "\n"
	       "Control ksyncd, the CalDAV/CardDAV sync daemon, over D-Bus.\n"
	       "\n"
	       "Verbs:\n");
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
		int n = printf("  %s %s", verbs[i].name, verbs[i].args);
		printf("%*s%s\n", n < 45 ? 45 - n : 1, "", verbs[i].summary);
	}
	printf("\n"
	       "Options:\n"
	       "  --json         print answers as JSON (status, sync, collections, account list,\n"
	       "                 clients, conflicts, duplicates)\n"
	       "  -v, --verbose  more detail\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "'ksyncctl VERB --help' shows the options of a verb. Without a verb, ksyncctl\n"
	       "shows the status. Exit status: 0 done, 1 failed, 2 usage error, 3 configuration\n"
	       "error, 4 credentials refused or no password, 5 server unreachable. See\n"
	       "ksyncctl(1).\n");
}

static int parse_argv(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
		{ "json", no_argument, NULL, ARG_JSON },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	int c;

	/* '+': options after the verb belong to the verb. */
	while ((c = getopt_long(argc, argv, "+hvV", options, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			arg_json = true;
			break;
		case 'v':
			arg_verbose = true;
			break;
		case 'h':
			help();
			return 0;
		case 'V':
			printf("ksyncctl %s (D-Bus interface %s version %u)\n", CTL_VERSION,
			       KS_IPC_INTERFACE, KS_IPC_VERSION);
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	return 1;
}

/* What a verb's result means as an exit status. */
static int exit_status(int r)
{
	if (r >= 0)
		return EXIT_SUCCESS;
	if (ctl_exit_status)
		return ctl_exit_status;
	return r == -EINVAL ? CTL_EXIT_USAGE : CTL_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
	int r;

	/* Only for the width of characters in aligned columns: numbers stay in the C locale. */
	(void) setlocale(LC_CTYPE, "");
	/* getopt's messages name the program as the user calls it, not by its path. */
	static char self[] = "ksyncctl";
	if (argc > 0)
		argv[0] = self;
	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? CTL_EXIT_USAGE : EXIT_SUCCESS;

	if (optind >= argc) {
		char *args[] = { (char *) "status", NULL };
		ctl_verb = "status";
		return exit_status(cmd_status(1, args));
	}
	const char *name = argv[optind];
	if (strcmp(name, "help") == 0) {
		help();
		return EXIT_SUCCESS;
	}
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		if (strcmp(name, verbs[i].name) == 0) {
			/* The verb sees itself as argv[0], which getopt's messages start with. */
			_cleanup_free_ char *label = NULL;
			if (asprintf(&label, "ksyncctl %s", name) >= 0)
				argv[optind] = label;
			ctl_verb = verbs[i].name;
			r = verbs[i].run(argc - optind, argv + optind);
			return exit_status(r);
		}
	ctl_error(-EINVAL, "Unknown verb '%s'; 'ksyncctl --help' lists them.", name);
	return CTL_EXIT_USAGE;
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "macro.h"
#include "table.h"

/* As [account NAME] in ksync.conf: the name becomes a directory name. */
#define ACCOUNT_NAME_MAX 64

static void help(void)
{
	printf("Usage: ksyncctl account add NAME (--provider PROVIDER | --url URL)\n"
	       "                           --username USER\n"
	       "                           (--password-command CMD | --password-file FILE)\n"
	       "       ksyncctl account list\n"
	       "       ksyncctl account remove NAME [--delete-local-data]\n"
	       "\n"
	       "add     find the account's address books, calendars and task lists on the\n"
	       "        server, show them, and write the account into ksync.conf\n"
	       "list    show the configured accounts\n"
	       "remove  remove the account from ksync.conf\n"
	       "\n"
	       "  --provider PROVIDER       a known provider: infomaniak\n"
	       "  --url URL                 the server's CalDAV/CardDAV URL\n"
	       "  --username USER           the user name (Infomaniak: the account id of the\n"
	       "                            Manager, like AB12345, not the e-mail address)\n"
	       "  --password-command CMD    a command printing the password (run by ksyncd\n"
	       "                            with /bin/sh -c)\n"
	       "  --password-file FILE      a file holding the password, mode 0600\n"
	       "  --delete-local-data       also delete the account's local files and cache\n"
	       "  -h, --help                show this help\n");
}

static bool name_is_valid(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= ACCOUNT_NAME_MAX && name[0] != '.' &&
	       strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789._-") == n;
}

static int check_name(const char *name)
{
	if (name_is_valid(name))
		return 0;
	return ctl_error(-EINVAL, "Invalid account name '%s': use 1 to %u of A-Z a-z 0-9 . _ -, "
			 "not starting with '.'.", name, ACCOUNT_NAME_MAX);
}

static bool mentions_authentication(const char *msg)
{
	static const char *const words[] = { "401", "authenticat", "unauthori" };

	for (size_t i = 0; msg && i < ELEMENTSOF(words); i++)
		if (strcasestr(msg, words[i]))
			return true;
	return false;
}

/* ksyncd reads the file from its own working directory, not ours. */
static int absolute_path(const char *path, char **ret)
{
	if (path[0] == '/') {
		*ret = strdup(path);
		return *ret ? 0 : -ENOMEM;
	}
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	if (!cwd)
		return -errno;
	if (asprintf(ret, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path) < 0)
		return -ENOMEM;
	return 0;
}

static void print_found(const ks_json *j)
{
	const ks_json *cols = ks_json_get(j, "collections");
	_cleanup_(table_freep) table *t = NULL;

	fputs("Account ", stdout);
	ctl_fputs(ks_json_get_string(j, "name"), stdout);
	fputs(": ", stdout);
	ctl_fputs(ks_json_get_string(j, "url"), stdout);
	fputs("\nPrincipal: ", stdout);
	ctl_fputs(ks_json_get_string(j, "principal"), stdout);
	size_t n = ks_json_count(cols);
	printf("\nFound %zu collection%s", n, n == 1 ? "" : "s");
	if (ks_json_count(cols) == 0 || table_new(3, &t, "KIND", "NAME", "HREF") < 0) {
		fputs(".\n", stdout);
		return;
	}
	fputs(":\n", stdout);
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *dn = ks_json_get_string(c, "displayname");
		char kind[64];

		(void) table_add(t, ctl_kind(c, kind, sizeof(kind)));
		(void) table_addf(t, "%s%s", dn ? dn : "-",
				  ks_json_get_bool(c, "readonly", false) ? " (read-only)" : "");
		(void) table_add(t, ks_json_get_string(c, "href"));
	}
	table_print(t, stdout, "  ");
}

static int account_add(int argc, char **argv)
{
	enum { ARG_PROVIDER = 0x100, ARG_URL, ARG_USERNAME, ARG_PASSWORD_COMMAND,
	       ARG_PASSWORD_FILE };
	static const struct option options[] = {
		{ "provider", required_argument, NULL, ARG_PROVIDER },
		{ "url", required_argument, NULL, ARG_URL },
		{ "username", required_argument, NULL, ARG_USERNAME },
		{ "password-command", required_argument, NULL, ARG_PASSWORD_COMMAND },
		{ "password-file", required_argument, NULL, ARG_PASSWORD_FILE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *provider = NULL, *url = NULL, *username = NULL, *command = NULL;
	const char *file = NULL;
	_cleanup_free_ char *abs_file = NULL;
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_PROVIDER:
			provider = optarg;
			break;
		case ARG_URL:
			url = optarg;
			break;
		case ARG_USERNAME:
			username = optarg;
			break;
		case ARG_PASSWORD_COMMAND:
			command = optarg;
			break;
		case ARG_PASSWORD_FILE:
			file = optarg;
			break;
		case 'h':
			help();
			return 0;
		default:
			return -EINVAL;
		}
	}
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "account add needs exactly one NAME.");
	const char *name = argv[optind];
	r = check_name(name);
	if (r < 0)
		return r;
	if (!provider == !url)
		return ctl_error(-EINVAL, "account add needs either --provider or --url.");
	if (provider && !*provider)
		return ctl_error(-EINVAL, "--provider needs a name, e.g. infomaniak.");
	if (url && !*url)
		return ctl_error(-EINVAL, "--url needs a URL.");
	if (!username || !*username)
		return ctl_error(-EINVAL, "account add needs --username.");
	if (!command == !file)
		return ctl_error(-EINVAL, "account add needs either --password-command or "
				 "--password-file.");
	if (command && !*command)
		return ctl_error(-EINVAL, "--password-command needs a command.");
	if (file) {
		if (!*file)
			return ctl_error(-EINVAL, "--password-file needs a file name.");
		r = absolute_path(file, &abs_file);
		if (r < 0)
			return ctl_error(r, "Failed to make '%s' an absolute path: %m", file);
	}

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "AddAccount", CTL_TIMEOUT_NETWORK_USEC, &e, &reply, "ssssss", name,
		     provider ?: "", url ?: "", username, command ?: "", abs_file ?: "");
	if (r < 0) {
		/* Said once: ksyncd's own message may explain it already. */
		if (sd_bus_error_is_set(&e) && mentions_authentication(e.message) &&
		    !strcasestr(e.message, "application password"))
			fputs("ksyncctl: With two-factor authentication on, the server refuses "
			      "the usual password:\n"
			      "ksyncctl: create an application password for ksync (Infomaniak: "
			      "in the Manager,\n"
			      "ksyncctl: under application passwords) and give that one to "
			      "--password-command\n"
			      "ksyncctl: or --password-file. Also check that the user name is "
			      "right (Infomaniak:\n"
			      "ksyncctl: the account id like AB12345, not the e-mail address).\n",
			      stderr);
		return r;
	}
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0)
		return r;
	print_found(j);
	printf("Added to the configuration; ksyncd syncs it now ('ksyncctl status' shows how "
	       "far it got).\n");
	return 0;
}

static int account_list(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_(table_freep) table *t = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		return ctl_error(-EINVAL, "account list takes no arguments.");

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "Status", CTL_TIMEOUT_USEC, NULL, &reply, NULL);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0)
		return r;

	const ks_json *accounts = ks_json_get(j, "accounts");
	if (ks_json_count(accounts) == 0) {
		fputs("No accounts.\n", stdout);
		return 0;
	}
	r = table_new(5, &t, "NAME", "STATE", "COLLECTIONS", "LAST SYNC", "URL");
	if (r < 0)
		return ctl_error(r, "Out of memory.");
	table_align_right(t, 2);
	for (size_t i = 0; r >= 0 && i < ks_json_count(accounts); i++) {
		const ks_json *a = ks_json_at(accounts, i);
		const ks_json *cols = ks_json_get(a, "collections");
		const char *res = ks_json_get_string(a, "last_result");
		size_t enabled = 0;
		char ago[CTL_TIME_MAX];

		for (size_t k = 0; k < ks_json_count(cols); k++)
			enabled += ks_json_get_bool(ks_json_at(cols, k), "enabled", true);
		r = table_add(t, ks_json_get_string(a, "name"));
		if (r >= 0)
			r = table_add(t, ks_json_get_string(a, "state"));
		if (r >= 0)
			r = enabled == ks_json_count(cols) ?
			    table_addf(t, "%zu", enabled) :
			    table_addf(t, "%zu of %zu", enabled, ks_json_count(cols));
		if (r >= 0) {
			int64_t last = ks_json_get_int(a, "last_sync", 0);
			r = table_addf(t, "%s%s%s", ctl_format_ago(last, ago), res ? ", " : "",
				       res ? res : "");
		}
		if (r >= 0)
			r = table_add(t, ks_json_get_string(a, "url"));
	}
	if (r < 0)
		return ctl_error(r, "Out of memory.");
	table_print(t, stdout, "");
	return 0;
}

static int account_remove(int argc, char **argv)
{
	enum { ARG_DELETE = 0x100 };
	static const struct option options[] = {
		{ "delete-local-data", no_argument, NULL, ARG_DELETE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	bool delete = false;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_DELETE:
			delete = true;
			break;
		case 'h':
			help();
			return 0;
		default:
			return -EINVAL;
		}
	}
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "account remove needs exactly one NAME.");
	const char *name = argv[optind];

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "RemoveAccount", CTL_TIMEOUT_USEC, NULL, NULL, "sb", name, delete);
	if (r < 0)
		return r;
	printf("Account %s removed from the configuration; %s.\n", name,
	       delete ? "its local files and cache entries are deleted"
		      : "its local files are kept (--delete-local-data deletes them)");
	return 0;
}

int cmd_account(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} subs[] = {
		{ "add", account_add },
		{ "list", account_list },
		{ "remove", account_remove },
	};
	int r;

	r = ctl_no_json("account");
	if (r < 0)
		return r;
	if (argc < 2)
		return ctl_error(-EINVAL, "account needs add, list or remove (see 'ksyncctl "
				 "account --help').");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		help();
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(subs); i++)
		if (strcmp(argv[1], subs[i].name) == 0) {
			_cleanup_free_ char *label = NULL;
			if (asprintf(&label, "ksyncctl account %s", subs[i].name) >= 0)
				argv[1] = label;
			return subs[i].run(argc - 1, argv + 1);
		}
	return ctl_error(-EINVAL, "Unknown account command '%s'; use add, list or remove.",
			 argv[1]);
}

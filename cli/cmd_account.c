/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <termios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "ksync.h"
#include "table.h"
#include "util/macro.h"

/* As [account NAME] in ksync.conf: the name becomes a directory name. */
#define ACCOUNT_NAME_MAX 64

static void help(void)
{
	printf("Usage: ksyncctl account add NAME (--provider PROVIDER | --url URL)\n"
	       "                           [--username USER] (--ask-password |\n"
	       "                           --password-command CMD | --password-file FILE |\n"
	       "                           --no-password) [--ca-file FILE]\n"
	       "                           [--allow-insecure-http] [--interval DURATION]\n"
	       "                           [--calendars-path DIR] [--contacts-path DIR]\n"
	       "                           [--adopt DIR]...\n"
	       "       ksyncctl account list [--json]\n"
	       "       ksyncctl account remove NAME [--delete-local-data]\n"
	       "\n"
	       "add     find the account's address books, calendars and task lists on the\n"
	       "        server, show them, and write the account into ksync.conf\n"
	       "list    show the configured accounts\n"
	       "remove  remove the account from ksync.conf\n"
	       "\n"
	       "  --provider PROVIDER       a known provider: infomaniak (--url wins when both\n"
	       "                            are given)\n"
	       "  --url URL                 the server's CalDAV/CardDAV URL\n"
	       "  --username USER           the user name (Infomaniak: the account id of the\n"
	       "                            Manager, like AB12345, not the e-mail address)\n"
	       "  --ask-password            ask for the password once, without echo, and keep\n"
	       "                            it in the desktop keyring (Secret Service)\n"
	       "  --password-command CMD    a command printing the password (run with\n"
	       "                            /bin/sh -c, here now and by ksyncd for each sync)\n"
	       "  --password-file FILE      a file holding the password, mode 0600\n"
	       "  --no-password             a server that needs no authentication\n"
	       "  --ca-file FILE            PEM certificates to verify the server with\n"
	       "  --allow-insecure-http     accept plain http:// to a host that is not local\n"
	       "  --interval DURATION       how often to sync, e.g. 5min (default: [general])\n"
	       "  --calendars-path DIR      keep the calendars in DIR/NAME (default: in the\n"
	       "                            data directory)\n"
	       "  --contacts-path DIR       keep the address books in DIR/NAME\n"
	       "  --adopt DIR               take over a tree another client (vdirsyncer)\n"
	       "                            wrote, such as ~/.calendars: its directories are\n"
	       "                            matched to the server's collections, its files\n"
	       "                            to their items (once per kind)\n"
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
	static const char *const words[] = { "authenticat", "unauthori" };

	for (size_t i = 0; msg && i < ELEMENTSOF(words); i++)
		if (strcasestr(msg, words[i]))
			return true;
	/* A status 401, not the digits of a port or a path ("127.0.0.1:40113/"). */
	for (const char *p = msg; p && (p = strstr(p, "401")); p += 3)
		if ((p == msg || (!isdigit((unsigned char) p[-1]) && !strchr(":/.", p[-1]))) &&
		    !isdigit((unsigned char) p[3]) && !(p[3] && strchr("/.", p[3])))
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

/* The path an option names, made absolute (none: NULL); errors are printed. */
static int option_path(const char *opt, char **ret)
{
	int r;

	if (!opt)
		return 0;
	r = *opt ? absolute_path(opt, ret) : -EINVAL;
	if (r < 0)
		return ctl_error(r, "Failed to make '%s' an absolute path: %m", opt);
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

/* Restores the terminal should the user interrupt the password prompt. */
static struct termios saved_tty;
static int saved_tty_fd = -1;

static void on_prompt_signal(int sig)
{
	if (saved_tty_fd >= 0)
		(void) tcsetattr(saved_tty_fd, TCSAFLUSH, &saved_tty);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Longest password line read. */
#define SECRET_LINE_MAX (64 * 1024)

/* Reads one line from fd into a new string, without its line ending. The line is read into
 * one allocation that never moves, so that no copy of the password stays behind in freed
 * memory. -EFBIG past SECRET_LINE_MAX bytes; -ENODATA for an empty line. */
static int read_secret_line(int fd, char **ret)
{
	char *line = malloc(SECRET_LINE_MAX + 1);
	size_t len = 0;
	int r = 0;

	if (!line)
		return -ENOMEM;
	for (;;) {
		char c;
		ssize_t n = read(fd, &c, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0 || c == '\n')
			break;
		if (len == SECRET_LINE_MAX) {
			r = -EFBIG;
			break;
		}
		line[len++] = c;
	}
	while (r >= 0 && len > 0 && line[len - 1] == '\r')
		len--;
	if (r >= 0 && len == 0)
		r = -ENODATA;
	if (r < 0) {
		explicit_bzero(line, len);
		free(line);
		return r;
	}
	line[len] = 0;
	*ret = line;
	return 0;
}

/* Asks for the password on the terminal, without echo; without a terminal, reads the first
 * line of stdin (for scripts). */
static int ask_password(const char *name, const char *username, char **ret)
{
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	struct termios t;
	int r;

	if (fd < 0 || !isatty(fd) || tcgetattr(fd, &t) < 0) {
		if (fd >= 0)
			(void) close(fd);
		if (isatty(STDIN_FILENO))
			return ctl_error(-ENOTTY, "Failed to open the terminal to ask for the "
					 "password: %m");
		r = read_secret_line(STDIN_FILENO, ret);
		if (r == -ENODATA)
			return ctl_error(r, "No password on standard input.");
		return r < 0 ? ctl_error(r, "Failed to read the password: %m") : 0;
	}
	saved_tty = t;
	saved_tty_fd = fd;
	struct sigaction sa = { .sa_handler = on_prompt_signal }, old_int, old_term;
	sigemptyset(&sa.sa_mask);
	(void) sigaction(SIGINT, &sa, &old_int);
	(void) sigaction(SIGTERM, &sa, &old_term);
	t.c_lflag &= ~(tcflag_t) (ECHO | ECHONL);
	t.c_lflag |= ICANON;
	(void) tcsetattr(fd, TCSAFLUSH, &t);
	dprintf(fd, "Password for %s%s%s (not shown): ", username ? username : "",
		username ? " of account " : "account ", name);
	r = read_secret_line(fd, ret);
	(void) tcsetattr(fd, TCSAFLUSH, &saved_tty);
	(void) write(fd, "\n", 1);
	(void) sigaction(SIGINT, &old_int, NULL);
	(void) sigaction(SIGTERM, &old_term, NULL);
	saved_tty_fd = -1;
	(void) close(fd);
	if (r == -ENODATA)
		return ctl_error(r, "No password given.");
	return r < 0 ? ctl_error(r, "Failed to read the password: %m") : 0;
}

/* Asks a yes/no question on the terminal; false without one. */
static bool ask_yes_no(const char *question)
{
	_cleanup_free_ char *answer = NULL;
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return false;
	if (!isatty(fd)) {
		(void) close(fd);
		return false;
	}
	dprintf(fd, "%s [y/N] ", question);
	int r = read_secret_line(fd, &answer);
	(void) close(fd);
	return r >= 0 && (answer[0] == 'y' || answer[0] == 'Y');
}

/* Creates the directories leading to path (0700), as ksync.conf's own would be. */
static int make_parents(const char *path)
{
	_cleanup_free_ char *dir = strdup(path);

	if (!dir)
		return -ENOMEM;
	for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* Writes the password to path, readable only by the user. */
static int write_password_file(const char *path, const char *password)
{
	int r = make_parents(path);

	if (r < 0)
		return r;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	size_t n = strlen(password);

	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0 || write(fd, password, n) != (ssize_t) n ||
	    write(fd, "\n", 1) != 1 || fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* The config file ksyncd reads (it may have been started with --config). */
static int daemon_config_path(sd_bus *bus, char **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	int r;

	r = ctl_call(bus, "Status", CTL_TIMEOUT_USEC, NULL, &reply, NULL);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0)
		return r;
	const char *path = ks_json_get_string(ks_json_get(j, "config"), "path");
	if (!path)
		return ctl_error(-EPROTO, "ksyncd did not say which configuration file it reads.");
	*ret = strdup(path);
	return *ret ? 0 : ctl_error(-ENOMEM, "Out of memory.");
}

static void print_auth_hint(const sd_bus_error *e)
{
	/* Said once: ksyncd's own message may explain it already. */
	if (sd_bus_error_is_set(e) && mentions_authentication(e->message) &&
	    !strcasestr(e->message, "application password"))
		fputs("ksyncctl: With two-factor authentication on, the server refuses the usual "
		      "password:\n"
		      "ksyncctl: create an application password for ksync (Infomaniak: in the "
		      "Manager,\n"
		      "ksyncctl: under application passwords) and give that one. Also check that "
		      "the user\n"
		      "ksyncctl: name is right (Infomaniak: the account id like AB12345, not the "
		      "e-mail address).\n", stderr);
}

static void print_same_as(const ks_json *j)
{
	const ks_json *same = ks_json_get(j, "same_as");

	for (size_t i = 0; i < ks_json_count(same); i++) {
		fputs("ksyncctl: warning: account ", stderr);
		ctl_fputs(ks_json_string(ks_json_at(same, i)), stderr);
		fputs(" already syncs this principal on this server: every collection would be "
		      "synced twice, into two directories.\n", stderr);
	}
}

typedef enum auth_mode {
	AUTH_NONE_GIVEN,
	AUTH_ASK,
	AUTH_COMMAND,
	AUTH_FILE,
	AUTH_NO_PASSWORD,
} auth_mode;

/* --interval into a, then everything ksync.conf would refuse, refused before anything else
 * happens; *ret_checked is a as the file would read it. */
static int check_settings(ks_account_config *a, const char *interval, ks_config **ret_checked)
{
	_cleanup_free_ char *why = NULL;
	int r;

	if (interval) {
		r = ks_duration_parse(interval, &a->interval);
		if (r < 0 || a->interval < 60)
			return ctl_error(-EINVAL, "Invalid --interval '%s': use a duration of at "
					 "least 60s, e.g. 15min.", interval);
	}
	r = ks_config_check_account(a, ret_checked, &why);
	if (r < 0) {
		_cleanup_free_ char *safe = ctl_sanitize(why, true);
		return ctl_error(r, "%s", safe ? safe : "invalid settings");
	}
	return 0;
}

/* Before anything is asked or written: is the name free in config, and does it parse? */
static int check_name_free(const char *config, const char *name)
{
	_cleanup_free_ char *why = NULL;
	ks_config *existing = NULL;
	int r = ks_config_load(config, &existing, &why);

	if (r >= 0 && ks_config_find_account(existing, name))
		r = ctl_error(-EEXIST, "An account '%s' exists already in %s.", name, config);
	else if (r < 0 && r != -ENOENT) {
		_cleanup_free_ char *safe = ctl_sanitize(why, true);
		r = ctl_error(r, "%s has errors; fix them first ('ksyncctl config check' lists "
			      "them):\n%s", config, safe ? safe : "");
	} else
		r = 0;
	ks_config_free(existing);
	return r;
}

/* Writes a into config and has ksyncd read it again. */
static int write_account(sd_bus *bus, const char *config, const ks_account_config *a)
{
	_cleanup_free_ char *why = NULL;
	int r = ks_config_add_account(config, a, &why);

	if (r < 0) {
		_cleanup_free_ char *safe = ctl_sanitize(why, true);
		return ctl_error(r, "Failed to write the account into %s: %s", config,
				 safe ? safe : strerror(-r));
	}
	return ctl_call(bus, "Reload", CTL_TIMEOUT_USEC, NULL, NULL, NULL);
}

static int account_add(int argc, char **argv)
{
	enum { ARG_PROVIDER = 0x100, ARG_URL, ARG_USERNAME, ARG_PASSWORD_COMMAND,
	       ARG_PASSWORD_FILE, ARG_ASK_PASSWORD, ARG_NO_PASSWORD, ARG_CA_FILE,
	       ARG_INSECURE, ARG_INTERVAL, ARG_CALENDARS_PATH, ARG_CONTACTS_PATH, ARG_ADOPT };
	static const struct option options[] = {
		{ "provider", required_argument, NULL, ARG_PROVIDER },
		{ "calendars-path", required_argument, NULL, ARG_CALENDARS_PATH },
		{ "contacts-path", required_argument, NULL, ARG_CONTACTS_PATH },
		{ "adopt", required_argument, NULL, ARG_ADOPT },
		{ "url", required_argument, NULL, ARG_URL },
		{ "username", required_argument, NULL, ARG_USERNAME },
		{ "password-command", required_argument, NULL, ARG_PASSWORD_COMMAND },
		{ "password-file", required_argument, NULL, ARG_PASSWORD_FILE },
		{ "ask-password", no_argument, NULL, ARG_ASK_PASSWORD },
		{ "no-password", no_argument, NULL, ARG_NO_PASSWORD },
		{ "ca-file", required_argument, NULL, ARG_CA_FILE },
		{ "allow-insecure-http", no_argument, NULL, ARG_INSECURE },
		{ "interval", required_argument, NULL, ARG_INTERVAL },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *provider = NULL, *url = NULL, *username = NULL, *command = NULL;
	const char *file = NULL, *ca = NULL, *interval = NULL;
	const char *cal_path = NULL, *card_path = NULL, *adopt[2] = {};
	size_t n_adopt = 0;
	bool insecure = false;
	auth_mode mode = AUTH_NONE_GIVEN;
	unsigned modes = 0;
	_cleanup_free_ char *abs_file = NULL, *abs_ca = NULL, *config = NULL, *why = NULL;
	_cleanup_free_ char *abs_cal = NULL, *abs_card = NULL;
	_cleanup_free_ char *ref = NULL, *pwfile = NULL;
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	char *password = NULL;
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
			mode = AUTH_COMMAND;
			modes++;
			break;
		case ARG_PASSWORD_FILE:
			file = optarg;
			mode = AUTH_FILE;
			modes++;
			break;
		case ARG_ASK_PASSWORD:
			mode = AUTH_ASK;
			modes++;
			break;
		case ARG_NO_PASSWORD:
			mode = AUTH_NO_PASSWORD;
			modes++;
			break;
		case ARG_CA_FILE:
			ca = optarg;
			break;
		case ARG_INSECURE:
			insecure = true;
			break;
		case ARG_INTERVAL:
			interval = optarg;
			break;
		case ARG_CALENDARS_PATH:
			cal_path = optarg;
			break;
		case ARG_CONTACTS_PATH:
			card_path = optarg;
			break;
		case ARG_ADOPT:
			if (n_adopt == ELEMENTSOF(adopt))
				return ctl_error(-EINVAL, "--adopt takes one directory of calendars "
						 "and one of address books, not more.");
			adopt[n_adopt++] = optarg;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "account add needs exactly one NAME.");
	const char *name = argv[optind];
	r = check_name(name);
	if (r < 0)
		return r;
	if (!provider && !url)
		return ctl_error(-EINVAL, "account add needs --provider or --url.");
	if (provider && !*provider)
		return ctl_error(-EINVAL, "--provider needs a name, e.g. infomaniak.");
	if (provider && !ks_config_provider_url(provider))
		return ctl_error(-EINVAL, "Unknown provider '%s'; known providers: infomaniak.",
				 provider);
	if (url && !*url)
		return ctl_error(-EINVAL, "--url needs a URL.");
	if (modes != 1)
		return ctl_error(-EINVAL, "account add needs one of --ask-password, "
				 "--password-command, --password-file and --no-password.");
	if (mode != AUTH_NO_PASSWORD && (!username || !*username))
		return ctl_error(-EINVAL, "account add needs --username (or --no-password for a "
				 "server without authentication).");
	if (command && !*command)
		return ctl_error(-EINVAL, "--password-command needs a command.");
	if (file) {
		if (!*file)
			return ctl_error(-EINVAL, "--password-file needs a file name.");
		r = absolute_path(file, &abs_file);
		if (r < 0)
			return ctl_error(r, "Failed to make '%s' an absolute path: %m", file);
	}
	r = option_path(ca, &abs_ca);
	if (r >= 0)
		r = option_path(cal_path, &abs_cal);
	if (r >= 0)
		r = option_path(card_path, &abs_card);
	if (r < 0)
		return r;
	_cleanup_(ks_account_config_done) ks_account_config a = {
		.allow_insecure_http = insecure,
	};
	const char *url_used = url ? url : ks_config_provider_url(provider);
	if (!(a.name = strdup(name)) || (provider && !(a.provider = strdup(provider))) ||
	    !(a.url = strdup(url_used)) ||
	    (username && *username && !(a.username = strdup(username))) ||
	    (command && !(a.password_command = strdup(command))) ||
	    (abs_file && !(a.password_file = strdup(abs_file))) ||
	    (abs_ca && !(a.ca_file = strdup(abs_ca))) ||
	    (abs_cal && !(a.calendars_path = strdup(abs_cal))) ||
	    (abs_card && !(a.contacts_path = strdup(abs_card))))
		return ctl_error(-ENOMEM, "Out of memory.");
	ks_config *checked = NULL;
	r = check_settings(&a, interval, &checked);
	if (r < 0)
		return r;
	const ks_account_config *ca_checked = &checked->accounts[0];

	r = ctl_bus_open(&bus);
	if (r >= 0)
		r = daemon_config_path(bus, &config);
	if (r < 0) {
		ks_config_free(checked);
		return r;
	}
	/* Before any question is asked: is the name free, and does the file parse? */
	r = check_name_free(config, name);
	if (r < 0) {
		ks_config_free(checked);
		return r;
	}

	/* The password is got here, as the user, in the user's terminal (where a pinentry
	 * prompt of the command can show); ksyncd only gets it to try. */
	free(why);
	why = NULL;
	if (mode == AUTH_ASK)
		r = ask_password(name, a.username, &password);
	else if (mode == AUTH_COMMAND || mode == AUTH_FILE) {
		r = ks_secret_get(ca_checked, NULL, &password, &why);
		if (r < 0) {
			_cleanup_free_ char *safe = ctl_sanitize(why, false);
			r = ctl_error(r, "Failed to get the password: %s", safe ? safe : "");
		}
	}
	if (r < 0) {
		ks_config_free(checked);
		return r;
	}

	r = ctl_new_call(bus, "ProbeAccount", &call);
	if (r >= 0)
		r = sd_bus_message_append(call, "ssss", name, ca_checked->url,
					  a.username ? a.username : "", password ? password : "");
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "{sv}");
	if (r >= 0 && abs_ca)
		r = sd_bus_message_append(call, "{sv}", "ca_file", "s", abs_ca);
	if (r >= 0 && insecure)
		r = sd_bus_message_append(call, "{sv}", "allow_insecure_http", "b", 1);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		(void) sd_bus_message_sensitive(call);
	ks_config_free(checked);
	if (r < 0) {
		ks_secret_free(password);
		return ctl_error(r, "Failed to build the ProbeAccount call: %m");
	}
	r = ctl_send(bus, call, CTL_TIMEOUT_NETWORK_USEC, &e, &reply);
	if (r < 0) {
		ks_secret_free(password);
		print_auth_hint(&e);
		return r;
	}
	r = ctl_reply_json(reply, &j, NULL);
	if (r < 0) {
		ks_secret_free(password);
		return r;
	}
	print_found(j);
	print_same_as(j);
	for (size_t i = 0; i < n_adopt; i++) {
		r = ctl_adopt(&a, adopt[i], j);
		if (r < 0) {
			ks_secret_free(password);
			return r;
		}
	}

	if (mode == AUTH_ASK) {
		_cleanup_free_ char *label = NULL;

		r = ks_secret_ref_for_account(name, &ref);
		if (r >= 0 && asprintf(&label, "ksync: %s (%s at %s)", name,
				       a.username ? a.username : "-", a.url) < 0)
			r = -ENOMEM;
		if (r >= 0) {
			free(why);
			why = NULL;
			r = ks_secret_service_store(ref, label, password, 0, &why);
		}
		if (r == -EHOSTDOWN) {
			const char *slash = strrchr(config, '/');
			_cleanup_free_ char *q = NULL;

			if (asprintf(&pwfile, "%.*s/%s.password", slash ? (int) (slash - config) : 1,
				     slash ? config : ".", name) < 0 ||
			    asprintf(&q, "ksyncctl: %s.\nStore the password in %s instead, readable "
				     "only by you?", why, pwfile) < 0) {
				ks_secret_free(password);
				return ctl_error(-ENOMEM, "Out of memory.");
			}
			if (!ask_yes_no(q)) {
				ks_secret_free(password);
				return ctl_error(r, "%s. Nothing was added: give the password with "
						 "--password-file FILE (a file of mode 0600) or "
						 "--password-command CMD instead.", why);
			}
			r = write_password_file(pwfile, password);
			if (r < 0) {
				ks_secret_free(password);
				return ctl_error(r, "Failed to write '%s': %m", pwfile);
			}
			a.password_file = TAKE_PTR(pwfile);
			pwfile = strdup(a.password_file);
		} else if (r < 0) {
			ks_secret_free(password);
			return ctl_error(r, "Failed to store the password in the keyring: %s",
					 why ? why : strerror(-r));
		} else
			a.password_secret = TAKE_PTR(ref);
	}
	password = ks_secret_free(password);

	r = write_account(bus, config, &a);
	if (r < 0)
		return r;
	printf("Added to %s", config);
	if (a.password_secret)
		fputs(", the password to the keyring", stdout);
	else if (pwfile)
		printf(", the password to %s", pwfile);
	printf("; ksyncd syncs it now ('ksyncctl status' shows how far it got).\n");
	return 0;
}

static int account_list(int argc, char **argv)
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
	if (arg_json) {
		/* The accounts as Status has them, without their collections and conflicts
		 * ('ksyncctl collections --json' and 'ksyncctl conflicts --json' have those). */
		_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
		_cleanup_free_ char *out = NULL;
		r = ks_json_writer_new(false, &w);
		if (r < 0)
			return ctl_error(r, "Out of memory.");
		ks_json_write_object_begin(w);
		ks_json_write_key(w, "accounts");
		ks_json_write_array_begin(w);
		for (size_t i = 0; i < ks_json_count(accounts); i++) {
			const ks_json *a = ks_json_at(accounts, i);
			const ks_json *cols = ks_json_get(a, "collections");
			size_t enabled = 0;
			for (size_t k = 0; k < ks_json_count(cols); k++)
				enabled += ks_json_get_bool(ks_json_at(cols, k), "enabled", true);
			ks_json_write_object_begin(w);
			static const char *const keys[] = { "name", "url", "state", "last_sync",
							    "last_result", "last_error", "next_sync",
							    "retry_in" };
			for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
				const ks_json *v = ks_json_get(a, keys[k]);
				ks_json_write_key(w, keys[k]);
				ks_json_write_value(w, v);
			}
			ks_json_write_key(w, "collections");
			ks_json_write_int(w, (int64_t) ks_json_count(cols));
			ks_json_write_key(w, "enabled");
			ks_json_write_int(w, (int64_t) enabled);
			ks_json_write_object_end(w);
		}
		ks_json_write_array_end(w);
		ks_json_write_object_end(w);
		r = ks_json_writer_steal(w, &out);
		if (r < 0)
			return ctl_error(r, "Failed to write JSON: %m");
		return ctl_print_json(out);
	}
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
			return ctl_usage_error();
		}
	}
	if (optind + 1 != argc)
		return ctl_error(-EINVAL, "account remove needs exactly one NAME.");
	const char *name = argv[optind];

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	/* Directories ksync.conf put elsewhere are the user's: said before the section goes. */
	_cleanup_free_ char *config = NULL;
	bool own_dirs = false;
	if (delete && daemon_config_path(bus, &config) >= 0) {
		ks_config *conf = NULL;
		if (ks_config_load_partial(config, &conf, NULL) >= 0) {
			const ks_account_config *a = ks_config_find_account(conf, name);
			own_dirs = a && (a->calendars_path || a->contacts_path || a->paths);
		}
		ks_config_free(conf);
	}
	r = ctl_call(bus, "RemoveAccount", CTL_TIMEOUT_USEC, NULL, NULL, "sb", name, delete);
	if (r < 0)
		return r;
	printf("Account %s removed from the configuration; %s.\n", name,
	       !delete ? "its local files are kept (--delete-local-data deletes them)" :
	       own_dirs ? "its files in the data directory and its cache entries are deleted; "
			  "the directories calendars_path, contacts_path and path = named are "
			  "kept as they are" :
			  "its local files and cache entries are deleted");
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

	if (argc < 2)
		return ctl_error(-EINVAL, "account needs add, list or remove (see 'ksyncctl "
				 "account --help').");
	r = strcmp(argv[1], "list") == 0 ? 0 : ctl_no_json("account add and remove");
	if (r < 0)
		return r;
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

static void subscribe_help(void)
{
	printf("Usage: ksyncctl subscribe NAME URL [--interval DURATION]\n"
	       "\n"
	       "Subscribe to a calendar published as an iCalendar file (holidays, a team's or\n"
	       "a sports calendar): an account NAME with feed = URL in ksync.conf, whose one\n"
	       "read-only calendar holds a file per event under calendars/NAME/, fetched\n"
	       "again every DURATION (default: the [general] interval) when the file changed.\n"
	       "webcal:// URLs are fetched over https. 'ksyncctl account remove NAME'\n"
	       "unsubscribes.\n"
	       "\n"
	       "  --interval DURATION    e.g. 1h or 1d (at least 60s)\n"
	       "  --ca-file FILE         trust this CA certificate for the server\n"
	       "  --allow-insecure-http  allow a plain http:// URL to another machine\n"
	       "  -h, --help             show this help\n");
}

int cmd_subscribe(int argc, char **argv)
{
	enum { ARG_INTERVAL = 0x100, ARG_CA_FILE, ARG_INSECURE };
	static const struct option options[] = {
		{ "interval", required_argument, NULL, ARG_INTERVAL },
		{ "ca-file", required_argument, NULL, ARG_CA_FILE },
		{ "allow-insecure-http", no_argument, NULL, ARG_INSECURE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *interval = NULL, *ca = NULL;
	bool insecure = false;
	_cleanup_free_ char *abs_ca = NULL, *config = NULL;
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_INTERVAL:
			interval = optarg;
			break;
		case ARG_CA_FILE:
			ca = optarg;
			break;
		case ARG_INSECURE:
			insecure = true;
			break;
		case 'h':
			subscribe_help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	r = ctl_no_json("subscribe");
	if (r < 0)
		return r;
	if (optind + 2 != argc)
		return ctl_error(-EINVAL, "subscribe needs a NAME and a URL.");
	const char *name = argv[optind], *url = argv[optind + 1];
	r = check_name(name);
	if (r < 0)
		return r;
	r = option_path(ca, &abs_ca);
	if (r < 0)
		return r;
	_cleanup_(ks_account_config_done) ks_account_config a = {
		.allow_insecure_http = insecure,
	};
	if (!(a.name = strdup(name)) || !(a.feed = strdup(url)) ||
	    (abs_ca && !(a.ca_file = strdup(abs_ca))))
		return ctl_error(-ENOMEM, "Out of memory.");
	ks_config *checked = NULL;
	r = check_settings(&a, interval, &checked);
	if (r < 0)
		return r;
	ks_config_free(checked);

	r = ctl_bus_open(&bus);
	if (r >= 0)
		r = daemon_config_path(bus, &config);
	if (r < 0)
		return r;
	r = check_name_free(config, name);
	if (r >= 0)
		r = write_account(bus, config, &a);
	if (r < 0)
		return r;
	printf("Added to %s; ksyncd fetches it now ('ksyncctl status' shows how far it got).\n",
	       config);
	return 0;
}

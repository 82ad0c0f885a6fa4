/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "ksync.h"
#include "table.h"
#include "util/ipc.h"
#include "util/macro.h"

static bool arg_force;
static bool arg_allow_mass_delete;
static bool arg_dry_run;
static const char *arg_target = "";

static void help(void)
{
	printf("Usage: ksyncctl sync [--force] [--allow-mass-delete] [--dry-run] [--json]\n"
	       "                     [ACCOUNT[/COLLECTION]]\n"
	       "\n"
	       "Sync every account, one account, or one collection (its directory name, or\n"
	       "contacts/NAME or calendars/NAME) now, and wait for the end. Progress is shown\n"
	       "on a terminal (with -v before the verb, on lines of its own elsewhere). The\n"
	       "exit status is 0 only when everything synced; 4 when the credentials were\n"
	       "refused or no password was had, 5 when the server could not be reached.\n"
	       "\n"
	       "  --force              ignore stored sync tokens and compare everything,\n"
	       "                       restoring missing or damaged local files\n"
	       "  --allow-mass-delete  let this run delete more than half of a collection\n"
	       "  --dry-run            say what would be fetched, sent and deleted; change\n"
	       "                       nothing\n"
	       "  --json               print each account's result as JSON\n"
	       "  -h, --help           show this help\n");
}

static int parse_argv(int argc, char **argv)
{
	enum { ARG_FORCE = 0x100, ARG_MASS, ARG_JSON, ARG_DRY_RUN };
	static const struct option options[] = {
		{ "force", no_argument, NULL, ARG_FORCE },
		{ "allow-mass-delete", no_argument, NULL, ARG_MASS },
		{ "json", no_argument, NULL, ARG_JSON },
		{ "dry-run", no_argument, NULL, ARG_DRY_RUN },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_FORCE:
			arg_force = true;
			break;
		case ARG_MASS:
			arg_allow_mass_delete = true;
			break;
		case ARG_JSON:
			arg_json = true;
			break;
		case ARG_DRY_RUN:
			arg_dry_run = true;
			break;
		case 'h':
			help();
			return 0;
		default:
			return ctl_usage_error();
		}
	}
	if (optind < argc)
		arg_target = argv[optind++];
	if (optind < argc)
		return ctl_error(-EINVAL, "sync takes at most one ACCOUNT[/COLLECTION].");
	if (arg_target[0] == '/' || (*arg_target && arg_target[strlen(arg_target) - 1] == '/'))
		return ctl_error(-EINVAL, "Expected ACCOUNT or ACCOUNT/COLLECTION, not '%s'.",
				 arg_target);
	return 1;
}

typedef struct sync_state {
	ks_json_writer *json;	/* --json: the accounts' results, as an array being written */
	int failure;		/* the worst CTL_EXIT_* of the accounts' failures, 0: none */
	uint32_t run_id;
	bool started;		/* the Sync call answered: run_id is known */
	char *daemon;		/* unique bus name of the ksyncd that answered */
	char *account;		/* the account named in the target, or NULL for all */
	bool progress;		/* show progress on stderr */
	bool progress_shown;	/* a progress line is on the terminal */
	bool done, ok, lost;
} sync_state;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void clear_progress(sync_state *s)
{
	if (!s->progress_shown)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	s->progress_shown = false;
}

static void show_progress(sync_state *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void show_progress(sync_state *s, const char *fmt, ...)
{
	struct winsize ws = {};
	char line[512];
	va_list ap;

	if (!s->progress && !arg_verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!s->progress) {
		/* -v without a terminal: each step on a line of its own. */
		_cleanup_free_ char *plain = ctl_sanitize(line, false);
		fprintf(stderr, "%s\n", plain ? plain : "");
		return;
	}

	_cleanup_free_ char *safe = ctl_sanitize(line, false);
	if (!safe)
		return;
	/* A line wider than the terminal wraps, and '\r' no longer reaches its start. */
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) >= 0 && ws.ws_col > 1 &&
	    strlen(safe) >= ws.ws_col)
		safe[ws.ws_col - 1] = 0;
	fprintf(stderr, "\r\033[K%s", safe);
	fflush(stderr);
	s->progress_shown = true;
}

/* Signals from anyone but the ksyncd that took the call are not ours. */
static bool ours(sync_state *s, sd_bus_message *m, uint32_t run_id)
{
	const char *sender = sd_bus_message_get_sender(m);

	if (!s->started || run_id != s->run_id)
		return false;
	return !s->daemon || !sender || strcmp(sender, s->daemon) == 0;
}

static int on_started(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	sync_state *s = userdata;
	const char *account;
	uint32_t run_id;

	if (sd_bus_message_read(m, "us", &run_id, &account) < 0 || !ours(s, m, run_id))
		return 0;
	show_progress(s, "%s: syncing", account);
	return 0;
}

static int on_progress(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	sync_state *s = userdata;
	const char *account, *collection;
	uint32_t run_id, done, total;

	if (sd_bus_message_read(m, "ussuu", &run_id, &account, &collection, &done, &total) < 0 ||
	    !ours(s, m, run_id))
		return 0;
	show_progress(s, "%s/%s: %u/%u", account, collection, done, total);
	return 0;
}

/* "3 new, 1 changed; 1 sent; 1 conflict" for a collection's result. */
static void describe_counts(const ks_json *c, char *buf, size_t size)
{
	static const struct {
		const char *key, *words;
		unsigned group;
	} parts[] = {
		{ "added", "new", 0 },
		{ "updated", "changed", 0 },
		{ "deleted", "deleted", 0 },
		{ "uploaded", "sent", 1 },
		{ "removed", "deleted on the server", 1 },
		{ "conflicts", "conflict(s), see 'ksyncctl status'", 2 },
		{ "skipped", "skipped", 3 },
	};
	unsigned last_group = 0;
	size_t n = 0;

	buf[0] = 0;
	for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
		long long v = (long long) ks_json_get_int(c, parts[i].key, 0);
		int k;

		if (v <= 0)
			continue;
		k = snprintf(buf + n, size - n, "%s",
			     n == 0 ? "" : parts[i].group == last_group ? ", " : "; ");
		if (k < 0 || (size_t) k >= size - n)
			return;
		n += (size_t) k;
		k = snprintf(buf + n, size - n, "%lld %s", v, parts[i].words);
		if (k < 0 || (size_t) k >= size - n)
			return;
		n += (size_t) k;
		last_group = parts[i].group;
	}
	if (n == 0)
		snprintf(buf, size, "up to date");
}

/* Prints one account's results; returns how many failures it printed. */
static unsigned print_result(sync_state *s, const char *account, const char *text)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	_cleanup_(table_freep) table *t = NULL;
	unsigned failed = 0;

	clear_progress(s);
	if (ks_json_parse(text, strlen(text), &j, NULL) < 0) {
		ctl_error(-EBADMSG, "ksyncd sent an invalid result for account '%s'.", account);
		return 0;
	}

	const ks_json *cols = ks_json_get(j, "collections");
	if (table_new(2, &t, NULL) < 0) {
		ctl_error(-ENOMEM, "Out of memory.");
		return 0;
	}
	for (size_t i = 0; i < ks_json_count(cols); i++) {
		const ks_json *c = ks_json_at(cols, i);
		const char *path = ks_json_get_string(c, "path");
		char counts[256];

		(void) table_addf(t, "%s/%s:", account, path ? path : "-");
		if (ks_json_get_bool(c, "ok", false)) {
			describe_counts(c, counts, sizeof(counts));
			(void) table_add(t, counts);
		} else if (!ks_json_get_bool(c, "synced", true)) {
			/* The message says "not synced: " and why. */
			const char *err = ks_json_get_string(c, "error");
			(void) table_add(t, err ? err : "not synced");
			failed++;
		} else {
			const char *err = ks_json_get_string(c, "error");
			(void) table_addf(t, "failed: %s", err ? err : "unknown error");
			failed++;
		}
	}
	table_print(t, stdout, "");

	const ks_json *errors = ks_json_get(j, "errors");
	for (size_t i = 0; i < ks_json_count(errors); i++) {
		printf("%s: failed: ", account);
		ctl_fputs(ks_json_string(ks_json_at(errors, i)), stdout);
		fputc('\n', stdout);
		failed++;
	}
	const ks_json *notices = ks_json_get(j, "notices");
	for (size_t i = 0; i < ks_json_count(notices); i++) {
		printf("%s: ", account);
		ctl_fputs(ks_json_string(ks_json_at(notices, i)), stdout);
		fputc('\n', stdout);
	}
	fflush(stdout);
	return failed;
}

static int on_finished(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	sync_state *s = userdata;
	const char *account, *json;
	uint32_t run_id;
	int ok;

	if (sd_bus_message_read(m, "usbs", &run_id, &account, &ok, &json) < 0 ||
	    !ours(s, m, run_id))
		return 0;
	if (!*account) {
		s->done = true;
		s->ok = ok;
		return 0;
	}
	_cleanup_free_ char *safe = ctl_sanitize(account, false);
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	if (ks_json_parse(json, strlen(json), &j, NULL) >= 0) {
		const char *f = ks_json_get_string(j, "failure");
		/* Credentials first, then the network: what the user has to fix. */
		int kind = !f ? 0 : strcmp(f, "authentication") == 0 ? CTL_EXIT_AUTH
			   : strcmp(f, "network") == 0 ? CTL_EXIT_NETWORK : CTL_EXIT_FAILURE;
		if (kind == CTL_EXIT_AUTH || (kind && s->failure != CTL_EXIT_AUTH &&
					      (kind == CTL_EXIT_NETWORK || !s->failure)))
			s->failure = kind;
	}
	if (s->json) {
		(void) ks_json_write_object_begin(s->json);
		(void) ks_json_write_key(s->json, "account");
		(void) ks_json_write_string(s->json, account);
		(void) ks_json_write_key(s->json, "ok");
		(void) ks_json_write_bool(s->json, ok);
		(void) ks_json_write_key(s->json, "result");
		(void) ks_json_write_value(s->json, j);
		(void) ks_json_write_object_end(s->json);
	} else if (print_result(s, safe ? safe : "?", json) == 0 && !ok)
		printf("%s: failed\n", safe ? safe : "?");
	/* A run of a single account may end with that account's signal alone. */
	if (s->account && strcmp(account, s->account) == 0) {
		s->done = true;
		s->ok = ok;
	}
	return 0;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	sync_state *s = userdata;
	const char *name, *old_owner, *new_owner;

	if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
		return 0;
	if (strcmp(name, KS_IPC_BUS_NAME) == 0 && s->started && s->daemon &&
	    strcmp(old_owner, s->daemon) == 0)
		s->lost = true;
	return 0;
}

/* Dispatches messages until the run ends, ksyncd goes away, or SIGINT/SIGTERM. Signals are
 * blocked outside ppoll(), so that one arriving between the check and the wait is not
 * missed. */
static int wait_for_end(sd_bus *bus, sync_state *s, const sigset_t *unblocked)
{
	int r;

	for (;;) {
		r = sd_bus_process(bus, NULL);
		if (r < 0)
			return ctl_error(r, "Lost the connection to the bus: %m");
		if (s->done || s->lost)
			return 0;
		if (r > 0)
			continue;

		uint64_t until;
		struct timespec ts, *tsp = NULL;
		struct pollfd p = { .fd = sd_bus_get_fd(bus), .events = sd_bus_get_events(bus) };

		if (p.fd < 0 || p.events < 0)
			return ctl_error(p.fd < 0 ? p.fd : p.events, "Lost the bus: %m");
		if (sd_bus_get_timeout(bus, &until) >= 0 && until != UINT64_MAX) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			uint64_t n = (uint64_t) now.tv_sec * 1000000 +
				     (uint64_t) now.tv_nsec / 1000;
			uint64_t d = until > n ? until - n : 0;
			ts = (struct timespec) { .tv_sec = (time_t) (d / 1000000),
						 .tv_nsec = (long) (d % 1000000) * 1000 };
			tsp = &ts;
		}
		if (ppoll(&p, 1, tsp, unblocked) < 0 && errno != EINTR)
			return ctl_error(-errno, "Failed to wait for the bus: %m");
		if (interrupted)
			return -EINTR;
	}
}

/* --dry-run: what a sync would do, in words or as JSON; nothing changes. */
static int dry_run(void)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	const char *text;
	int r, failed = 0;

	r = ctl_bus_open(&bus);
	if (r < 0)
		return r;
	r = ctl_call(bus, "Preview", CTL_TIMEOUT_NETWORK_USEC, NULL, &reply, "sb", arg_target,
		     arg_force);
	if (r < 0)
		return r;
	r = ctl_reply_json(reply, &j, &text);
	if (r < 0)
		return r;
	const ks_json *accounts = ks_json_get(j, "accounts");
	for (size_t i = 0; i < ks_json_count(accounts); i++) {
		const ks_json *a = ks_json_at(accounts, i);
		const char *err = ks_json_get_string(a, "error");
		if (err) {
			ctl_error(-EIO, "%s: %s", ks_json_get_string(a, "account") ?: "?", err);
			failed++;
			continue;
		}
		for (size_t k = 0; k < ks_json_count(ks_json_get(a, "collections")); k++)
			failed += ks_json_get_string(ks_json_at(ks_json_get(a, "collections"), k),
						     "error") != NULL;
		if (arg_json)
			continue;
		_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
		_cleanup_free_ char *one = NULL, *words = NULL;
		if (ks_json_writer_new(false, &w) >= 0 && ks_json_write_value(w, a) >= 0 &&
		    ks_json_writer_steal(w, &one) >= 0 &&
		    ks_sync_preview_describe(one, true, &words) >= 0) {
			_cleanup_free_ char *safe = ctl_sanitize(words, true);
			fputs(safe ? safe : "", stdout);
		}
	}
	if (arg_json)
		r = ctl_print_json(text);
	if (failed)
		return ctl_error(-EIO, "Could not tell for everything.");
	return r;
}

int cmd_sync(int argc, char **argv)
{
	_cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	sync_state s = { .progress = isatty(STDERR_FILENO) };
	sigset_t block, old;
	int r;

	r = parse_argv(argc, argv);
	if (r <= 0)
		return r;
	if (arg_dry_run)
		return dry_run();
	if (arg_json) {
		r = ks_json_writer_new(false, &s.json);
		if (r < 0)
			return ctl_error(r, "Out of memory.");
		(void) ks_json_write_object_begin(s.json);
		(void) ks_json_write_key(s.json, "accounts");
		(void) ks_json_write_array_begin(s.json);
	}
	if (*arg_target) {
		s.account = strndup(arg_target, strcspn(arg_target, "/"));
		if (!s.account)
			return ctl_error(-ENOMEM, "Out of memory.");
	}

	r = ctl_bus_open(&bus);
	if (r < 0)
		goto finish;

	/* Subscribed before the call, so that no signal of the run can be missed. */
	r = sd_bus_match_signal(bus, NULL, NULL, KS_IPC_PATH, KS_IPC_INTERFACE, "SyncStarted",
				on_started, &s);
	if (r >= 0)
		r = sd_bus_match_signal(bus, NULL, NULL, KS_IPC_PATH, KS_IPC_INTERFACE,
					"SyncProgress", on_progress, &s);
	if (r >= 0)
		r = sd_bus_match_signal(bus, NULL, NULL, KS_IPC_PATH, KS_IPC_INTERFACE,
					"SyncFinished", on_finished, &s);
	if (r >= 0)
		r = sd_bus_add_match(bus, NULL,
				     "type='signal',sender='org.freedesktop.DBus',"
				     "path='/org/freedesktop/DBus',"
				     "interface='org.freedesktop.DBus',"
				     "member='NameOwnerChanged',arg0='" KS_IPC_BUS_NAME "'",
				     on_owner_changed, &s);
	if (r < 0) {
		ctl_error(r, "Failed to subscribe to ksyncd's signals: %m");
		goto finish;
	}

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	r = ctl_call(bus, "Sync", CTL_TIMEOUT_USEC, NULL, &reply, "sbb", arg_target, arg_force,
		     arg_allow_mass_delete);
	if (r >= 0) {
		r = sd_bus_message_read(reply, "u", &s.run_id);
		if (r < 0)
			ctl_error(r, "Failed to read the answer to Sync: %m");
	}
	if (r >= 0) {
		const char *sender = sd_bus_message_get_sender(reply);
		s.daemon = sender ? strdup(sender) : NULL;
		s.started = true;
		show_progress(&s, "%s: waiting for ksyncd", *arg_target ? arg_target : "sync");
		r = wait_for_end(bus, &s, &old);
	}
	clear_progress(&s);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (r == -EINTR) {
		ctl_error(r, "Interrupted; the sync goes on in ksyncd ('ksyncctl status' "
			  "shows it).");
		goto finish;
	}
	if (r < 0)
		goto finish;
	if (s.lost) {
		r = ctl_error(-ECONNRESET, "ksyncd exited before the sync ended; see 'journalctl "
			      "--user -u ksyncd'.");
		goto finish;
	}
	if (s.json) {
		_cleanup_free_ char *out = NULL;
		(void) ks_json_write_array_end(s.json);
		(void) ks_json_write_key(s.json, "ok");
		(void) ks_json_write_bool(s.json, s.ok);
		(void) ks_json_write_object_end(s.json);
		r = ks_json_writer_steal(s.json, &out);
		if (r < 0) {
			ctl_error(r, "Failed to write the results as JSON: %m");
			goto finish;
		}
		(void) ctl_print_json(out);
	}
	if (!s.ok) {
		ctl_exit_status = s.failure ? s.failure : CTL_EXIT_FAILURE;
		r = ctl_error(-EIO, "Not everything synced.");
		goto finish;
	}
	r = 0;
finish:
	ks_json_writer_free(s.json);
	free(s.daemon);
	free(s.account);
	return r;
}

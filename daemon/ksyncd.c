/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "bus.h"
#include "ksync.h"
#include "log.h"
#include "manager.h"
#include "notify.h"
#include "util/macro.h"

static bool arg_once;
static bool arg_force;
static bool arg_allow_mass_delete;
static bool arg_wait;
static bool arg_dry_run;
static const char *arg_config;
static const char *arg_account;
static bool stderr_tty;

/* KSYNC_TEST_CRASH_AFTER=N: the crash tests' hook, ending the process at once (as kill -9
 * would, without flushing anything) right after the Nth durable step. */
static unsigned long crash_after, crash_steps;

static void crash_hook(const char *what, void *userdata)
{
	if (++crash_steps >= crash_after)
		_exit(100);
}

/* ksyncd --once: SIGTERM and SIGINT stop the run at its next safe point (a password command
 * is ended with its process group); a second one ends the process at once. */
static volatile int once_cancel;

static void on_once_signal(int sig)
{
	once_cancel = 1;
}

static void once_catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_once_signal, .sa_flags = SA_RESETHAND };

	sigemptyset(&sa.sa_mask);
	(void) sigaction(SIGTERM, &sa, NULL);
	(void) sigaction(SIGINT, &sa, NULL);
}

typedef struct once_state {
	unsigned failed;
	bool progress_shown;
} once_state;

static void clear_progress(once_state *s)
{
	if (s->progress_shown) {
		fputs("\r\033[K", stderr);
		s->progress_shown = false;
	}
}

static void on_event(const ks_sync_event *ev, void *userdata)
{
	once_state *s = userdata;

	switch (ev->type) {
	case KS_SYNC_PROGRESS:
		if (stderr_tty && !log_to_journal() && ev->total >= 200) {
			fprintf(stderr, "\r\033[K%s/%s: %u/%u items", ev->account, ev->collection,
				ev->done, ev->total);
			s->progress_shown = true;
		}
		break;
	case KS_SYNC_COLLECTION_DONE:
		clear_progress(s);
		if (log_get_max_level() >= KS_LOG_INFO || ev->added || ev->updated || ev->deleted ||
		    ev->skipped || ev->uploaded || ev->removed || ev->conflicts) {
			printf("%s/%s: %u added, %u updated, %u deleted", ev->account,
			       ev->collection, ev->added, ev->updated, ev->deleted);
			if (ev->uploaded || ev->removed)
				printf("; sent %u, deleted %u on the server", ev->uploaded,
				       ev->removed);
			if (ev->skipped)
				printf("; %u skipped", ev->skipped);
			if (ev->conflicts)
				printf("; %u conflict(s)", ev->conflicts);
			printf(" (%u request%s)\n", ev->requests, ev->requests == 1 ? "" : "s");
		}
		break;
	case KS_SYNC_CONFLICT:
	case KS_SYNC_NOTICE:
		clear_progress(s);
		log_at(KS_LOG_NOTICE, "%s/%s: %s", ev->account, ev->collection, ev->message);
		break;
	case KS_SYNC_COLLECTION_FAILED:
		clear_progress(s);
		s->failed++;
		log_at(KS_LOG_ERR, "%s/%s: %s", ev->account, ev->collection, ev->message);
		break;
	case KS_SYNC_ACCOUNT_FAILED:
		clear_progress(s);
		s->failed++;
		log_at(KS_LOG_ERR, "%s: %s", ev->account, ev->message);
		break;
	case KS_SYNC_CREDENTIALS_REFUSED:
		clear_progress(s);
		s->failed++;
		if (ev->message)
			log_at(KS_LOG_ERR, "%s: %s", ev->account, ev->message);
		break;
	case KS_SYNC_ITEM_SKIPPED:
		clear_progress(s);
		log_at(KS_LOG_WARNING, "%s/%s: %s", ev->account, ev->collection, ev->message);
		break;
	case KS_SYNC_COLLECTION_SKIPPED:
		/* The account's failure, printed once above, says it for every collection. */
		log_at(KS_LOG_INFO, "%s/%s: %s", ev->account, ev->collection, ev->message);
		break;
	}
	fflush(stdout);
}

static int run_once(const ks_config *cfg)
{
	_cleanup_free_ char *data_dir = NULL;
	ks_engine *e = NULL;
	once_state st = {};
	int r;

	r = ks_data_dir_default(&data_dir);
	if (r < 0)
		return log_error_errno(r, "Failed to find the data directory (set HOME or "
				       "XDG_DATA_HOME): %m");
	r = ks_engine_new(data_dir, &e);
	if (r == -EUCLEAN)
		return log_error_errno(r, "Failed to open the cache '%s/ksync.db': the file is "
				       "damaged; move it away and run again to rebuild it", data_dir);
	if (r == -EBUSY)
		return log_error_errno(r, "Failed to open the cache '%s/ksync.db': it is locked by "
				       "another program (waited 5 s); end its transaction or close "
				       "it and run again", data_dir);
	if (r == -EPROTO)
		return log_error_errno(r, "Failed to open the cache '%s/ksync.db': it was written "
				       "by a newer ksync", data_dir);
	if (r < 0)
		return log_error_errno(r, "Failed to open the cache in '%s': %m", data_dir);

	bool found = false;
	for (size_t i = 0; i < cfg->n_accounts; i++) {
		const ks_account_config *a = &cfg->accounts[i];
		if (arg_account && strcmp(arg_account, a->name) != 0)
			continue;
		found = true;
		ks_sync_opts o = {
			.force = arg_force,
			.allow_mass_delete = arg_allow_mass_delete,
			.wait_lock = arg_wait,
			.on_event = on_event,
			.userdata = &st,
			.cancel = &once_cancel,
		};
		if (arg_dry_run) {
			_cleanup_free_ char *json = NULL, *why = NULL, *text = NULL;
			r = ks_sync_preview(e, a, &o, &json, &why);
			if (r >= 0)
				r = ks_sync_preview_describe(json, true, &text);
			if (r < 0) {
				log_at(KS_LOG_ERR, "%s: %s", a->name, why ? why : strerror(-r));
				st.failed++;
			} else
				fputs(text, stdout);
			continue;
		}
		(void) ks_sync_account(e, a, &o);
		if (once_cancel)
			break;
	}
	ks_engine_free(e);
	if (once_cancel) {
		log_at(KS_LOG_NOTICE, "Stopped by a signal; the next run finishes the work.");
		return -ECANCELED;
	}
	if (!found && arg_account) {
		log_at(KS_LOG_ERR, "No account '%s' in %s.", arg_account, cfg->path);
		return -ENOENT;
	}
	if (!found) {
		log_at(KS_LOG_ERR, "No [account NAME] section in %s: nothing to sync.", cfg->path);
		return -ENOENT;
	}
	return st.failed ? -EIO : 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	Manager *m = userdata;

	if (si->ssi_signo == SIGHUP) {
		(void) sd_notify(false, "RELOADING=1");
		(void) manager_reload(m, NULL);
		(void) sd_notify(false, "READY=1");
		return 0;
	}
	/* Runs under way stop at their next safe point; whatever they did not finish, the
	 * next run does. */
	log_at(KS_LOG_INFO, "Stopping.");
	(void) sd_notify(false, "STOPPING=1");
	manager_stop(m);
	return 0;
}

static int run_daemon(const char *config_path)
{
	Manager *m = NULL;
	Notifier *n = NULL;
	sd_event *e = NULL;
	int r;

	r = manager_new(config_path, &m);
	if (r == -EINVAL)
		return EX_CONFIG;
	if (r < 0)
		return r;
	r = sd_event_default(&e);
	if (r < 0) {
		log_error_errno(r, "Failed to create the event loop: %m");
		goto out;
	}
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	/* Blocked before any thread starts, so that only the event loop sees them. */
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	(void) sd_event_add_signal(e, NULL, SIGTERM, on_signal, m);
	(void) sd_event_add_signal(e, NULL, SIGINT, on_signal, m);
	(void) sd_event_add_signal(e, NULL, SIGHUP, on_signal, m);
	(void) sd_event_set_watchdog(e, true);
	m->event = sd_event_ref(e);
	r = bus_setup(m);
	if (r < 0)
		goto out;
	r = notify_new(m, &n);
	if (r < 0) {
		log_error_errno(r, "Failed to set up the notifications: %m");
		goto out;
	}
	bus_watch_network(m);
	r = manager_start(m, e);
	if (r < 0) {
		log_error_errno(r, "Failed to start: %m");
		goto out;
	}
	(void) sd_notifyf(false, "READY=1\nSTATUS=%zu account(s)", m->n_accounts);
	log_at(KS_LOG_INFO, "Started with %zu account(s) from %s.", m->n_accounts, config_path);
	r = sd_event_loop(e);
	if (r < 0)
		log_error_errno(r, "Event loop failed: %m");
out:
	/* The manager first: freeing its accounts ends the notifications under way. */
	manager_free(m);
	notify_free(n);
	sd_event_unref(e);
	return r;
}

static void help(void)
{
	printf("Usage: ksyncd [OPTIONS]\n"
	       "       ksyncd [OPTIONS] --once [ACCOUNT]\n"
	       "\n"
	       "Two-way sync of CalDAV/CardDAV accounts with the vdir tree under\n"
	       "$XDG_DATA_HOME/ksync. Without --once, runs as the service that\n"
	       "ksyncctl talks to over D-Bus.\n"
	       "\n"
	       "  --once               sync every account (or ACCOUNT) once and exit\n"
	       "  --force              ignore stored sync tokens and compare everything\n"
	       "  --allow-mass-delete  let this run delete more than half of a collection\n"
	       "  --wait               wait for another ksync process syncing an account\n"
	       "  --dry-run            with --once: say what would be fetched, sent and\n"
	       "                       deleted, and change nothing\n"
	       "  -c, --config FILE    configuration file (default\n"
	       "                       $XDG_CONFIG_HOME/ksync/ksync.conf)\n"
	       "  --log-level LEVEL    err, warning, notice, info or debug (default: log_level\n"
	       "                       of ksync.conf, else info for the service and notice\n"
	       "                       with --once); debug traces every request\n"
	       "  -h, --help           show this help\n"
	       "  --version            show the version\n"
	       "\n"
	       "Exit status: 0 when every collection synced, 1 when something failed, 2 for a\n"
	       "usage error, 78 when ksync.conf leaves no account to run.\n"
	       "See ksyncd(8) and ksync.conf(5).\n");
}

static int parse_argv(int argc, char **argv)
{
	enum { ARG_ONCE = 0x100, ARG_FORCE, ARG_LOG_LEVEL, ARG_VERSION, ARG_MASS, ARG_WAIT,
	       ARG_DRY_RUN };
	static const struct option options[] = {
		{ "once", no_argument, NULL, ARG_ONCE },
		{ "force", no_argument, NULL, ARG_FORCE },
		{ "allow-mass-delete", no_argument, NULL, ARG_MASS },
		{ "wait", no_argument, NULL, ARG_WAIT },
		{ "dry-run", no_argument, NULL, ARG_DRY_RUN },
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, ARG_LOG_LEVEL },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{}
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
		switch (c) {
		case ARG_ONCE:
			arg_once = true;
			break;
		case ARG_FORCE:
			arg_force = true;
			break;
		case ARG_MASS:
			arg_allow_mass_delete = true;
			break;
		case ARG_WAIT:
			arg_wait = true;
			break;
		case ARG_DRY_RUN:
			arg_dry_run = true;
			break;
		case 'c':
			arg_config = optarg;
			break;
		case ARG_LOG_LEVEL: {
			int l = ks_log_level_parse(optarg);
			if (l < 0) {
				log_at(KS_LOG_ERR, "Unknown log level '%s'.", optarg);
				return -EINVAL;
			}
			log_set_max_level(l);
			break;
		}
		case 'h':
			help();
			return 0;
		case ARG_VERSION:
			printf("ksyncd 0.1\n");
			return 0;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		arg_account = argv[optind++];
	if (optind < argc) {
		log_at(KS_LOG_ERR, "Too many arguments.");
		return -EINVAL;
	}
	if (arg_dry_run && !arg_once) {
		log_at(KS_LOG_ERR, "--dry-run goes with --once ('ksyncctl sync --dry-run' asks the "
		       "service).");
		return -EINVAL;
	}
	return 1;
}

int main(int argc, char **argv)
{
	_cleanup_free_ char *default_path = NULL, *why = NULL;
	ks_config *cfg = NULL;
	int r;

	/* Everything ksyncd creates holds personal data. */
	umask(0077);
	log_open();
	stderr_tty = isatty(STDERR_FILENO);
	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? 2 : 0;
	const char *ca = getenv("KSYNC_TEST_CRASH_AFTER");
	if (ca && *ca) {
		crash_after = strtoul(ca, NULL, 10);
		if (crash_after > 0)
			ks_set_step_hook(crash_hook, NULL);
	}
	if (!arg_config) {
		r = ks_config_default_path(&default_path);
		if (r < 0) {
			log_error_errno(r, "Failed to find the configuration file (set HOME or "
					"XDG_CONFIG_HOME): %m");
			return 1;
		}
		arg_config = default_path;
	}
	if (!arg_once) {
		log_use_config_level(0, true);
		r = run_daemon(arg_config);
		return r == EX_CONFIG ? EX_CONFIG : r < 0 ? 1 : 0;
	}
	r = ks_config_load_partial(arg_config, &cfg, &why);
	if (r < 0) {
		if (why && *why)
			log_at(KS_LOG_ERR, "%s", why);
		else
			log_error_errno(r, "Failed to load configuration '%s': %m", arg_config);
		return 1;
	}
	int config_errors = r;
	log_use_config_level(cfg->log_level, false);
	if (cfg->warnings)
		log_at(KS_LOG_WARNING, "%s", cfg->warnings);
	if (config_errors > 0) {
		/* The accounts without errors still sync; the run fails all the same. */
		log_at(KS_LOG_ERR, "%s", cfg->errors);
		bool asked_invalid = false;
		for (size_t i = 0; arg_account && cfg->invalid_accounts &&
				   cfg->invalid_accounts[i]; i++)
			asked_invalid |= strcmp(cfg->invalid_accounts[i], arg_account) == 0;
		if (cfg->n_accounts == 0 || asked_invalid) {
			log_at(KS_LOG_ERR, "Nothing to sync: fix %s ('ksyncctl config check' checks "
			       "it).", arg_config);
			ks_config_free(cfg);
			return EX_CONFIG;
		}
	}
	once_catch_signals();
	r = run_once(cfg);
	ks_config_free(cfg);
	return r < 0 || config_errors > 0 ? 1 : 0;
}

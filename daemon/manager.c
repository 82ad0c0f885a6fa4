/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"
#include "util/macro.h"

/* A local edit is sent this long after the last file notification, so that an editor's
 * save (temp file, rename, chmod: a few milliseconds) is one run, not several. A file that
 * seems deleted is looked for again once its directory has been quiet for a second (the
 * engine's second look), so a longer pause here would only delay the edit. */
#define DEBOUNCE_USEC (500 * 1000ULL)
/* Backoff after failed runs: 30 s, doubling, at most the account's interval. */
#define BACKOFF_FIRST_SEC 30
/* Runs going on at once (each account has its own connections, at most 4). */
#define MAX_PARALLEL_RUNS 2
/* Without NetworkManager to say when the network is back, a run that found no network is
 * retried at least this often, whatever the backoff. */
#define OFFLINE_RETRY_SEC 60
/* An editor's save of ksync.conf is read once it has settled. */
#define CONFIG_DEBOUNCE_USEC (1000 * 1000ULL)

typedef enum MsgType {
	MSG_EVENT,	/* a ks_sync_event from a run */
	MSG_RUN_DONE,	/* a run ended */
	MSG_JOB_DONE,	/* another job ended */
} MsgType;

typedef struct Msg {
	struct Msg *next;
	MsgType type;
	Job *job;
	/* MSG_EVENT: the event, its strings pointing at the copies below (account: NULL, the
	 * job's account is meant). The worker's own strings are gone by the time the main
	 * loop reads it: every string field of ks_sync_event needs its copy here. */
	ks_sync_event ev;
	char *collection;
	char *message;
	char *credentials;
	char *file;
	int result;
} Msg;

struct Job {
	char *enable_href;
	char *delete_href;
	char *only_collection;
	Manager *m;
	Account *account;	/* NULL for a job that is not a sync run */
	ks_account_config cfg;	/* sync runs: a copy, so that a reload cannot pull it away */
	ks_sync_opts opts;
	char *refused_credentials;
	int (*fn)(Manager *m, void *data);
	void (*done)(Manager *m, void *data, int r);
	void *data;
	pthread_t thread;
};

typedef struct Watch {
	int wd;
	char *account;
} Watch;

typedef struct Run {
	uint32_t id;
	unsigned remaining;
	bool ok;
} Run;

typedef struct Listener {
	const ManagerListener *ops;
	void *userdata;
} Listener;

static void *mfree(void *p)
{
	free(p);
	return NULL;
}

static uint64_t now_sec(void)
{
	return (uint64_t) time(NULL);
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int strv_add(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n] = strdup(s ? s : "");
	if (!nv[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static bool str_same(const char *x, const char *y)
{
	return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

static void results_free(CollectionResult **v, size_t *n)
{
	for (size_t i = 0; i < *n; i++) {
		free((*v)[i].path);
		free((*v)[i].error);
	}
	free(*v);
	*v = NULL;
	*n = 0;
}

/* ---- listeners -------------------------------------------------------------------------- */

int manager_add_listener(Manager *m, const ManagerListener *ops, void *userdata)
{
	Listener *nl = realloc(m->listeners, (m->n_listeners + 1) * sizeof(*nl));

	if (!nl)
		return -ENOMEM;
	m->listeners = nl;
	nl[m->n_listeners++] = (Listener) { .ops = ops, .userdata = userdata };
	return 0;
}

#define TELL(m, event, ...)                                                             \
	do {                                                                            \
		for (size_t _i = 0; _i < (m)->n_listeners; _i++)                        \
			if ((m)->listeners[_i].ops->event)                              \
				(m)->listeners[_i].ops->event((m), __VA_ARGS__,         \
							      (m)->listeners[_i].userdata); \
	} while (0)

static Account *account_free(Account *a)
{
	if (!a)
		return NULL;
	TELL(a->m, account_freed, a);
	sd_event_source_disable_unref(a->timer);
	sd_event_source_disable_unref(a->debounce);
	ks_account_config_done(&a->cfg);
	results_free(&a->results, &a->n_results);
	results_free(&a->run_results, &a->n_run_results);
	strv_free(a->errors, a->n_errors);
	strv_free(a->notices, a->n_notices);
	free(a->waiting_runs);
	free(a->running_runs);
	free(a->last_error);
	free(a->pending_enable);
	free(a->pending_delete);
	free(a->pending_collection);
	free(a->refused_credentials);
	free(a->refused_in_run);
	free(a);
	return NULL;
}

static unsigned interval_of(const Manager *m, const Account *a)
{
	return a->cfg.interval ? a->cfg.interval : m->config->interval;
}

/* ---- the queue from the workers ----------------------------------------------------------- */

static void post(Manager *m, Msg *msg)
{
	uint64_t one = 1;

	pthread_mutex_lock(&m->lock);
	if (m->queue_tail)
		m->queue_tail->next = msg;
	else
		m->queue_head = msg;
	m->queue_tail = msg;
	pthread_mutex_unlock(&m->lock);
	(void) !write(m->efd, &one, sizeof(one));
}

static void on_sync_event(const ks_sync_event *ev, void *userdata)
{
	Job *j = userdata;
	Msg *msg = calloc(1, sizeof(*msg));

	if (!msg)
		return;
	*msg = (Msg) {
		.type = MSG_EVENT, .job = j, .ev = *ev,
		.collection = dup_or_null(ev->collection), .message = dup_or_null(ev->message),
		.credentials = dup_or_null(ev->credentials), .file = dup_or_null(ev->file),
	};
	msg->ev.account = NULL;
	msg->ev.collection = msg->collection;
	msg->ev.message = msg->message;
	msg->ev.credentials = msg->credentials;
	msg->ev.file = msg->file;
	post(j->m, msg);
}

static void *job_main(void *p)
{
	Job *j = p;
	Msg *msg = calloc(1, sizeof(*msg));
	int r;

	if (j->account) {
		ks_engine *e = NULL;
		r = ks_engine_new(j->m->data_dir, &e);
		if (r >= 0) {
			r = ks_sync_account(e, &j->cfg, &j->opts);
			ks_engine_free(e);
		} else {
			ks_sync_event ev = { .type = KS_SYNC_ACCOUNT_FAILED, .account = j->cfg.name,
					     .error = r, .message = "cannot open the cache" };
			on_sync_event(&ev, j);
		}
	} else
		r = j->fn(j->m, j->data);
	if (msg) {
		msg->type = j->account ? MSG_RUN_DONE : MSG_JOB_DONE;
		msg->job = j;
		msg->result = r;
		post(j->m, msg);
	}
	return NULL;
}

static int start_thread(Job *j)
{
	pthread_attr_t attr;
	int r;

	pthread_attr_init(&attr);
	/* A sync run needs little stack; libical's parser a bit more than the minimum. */
	pthread_attr_setstacksize(&attr, 1024 * 1024);
	r = -pthread_create(&j->thread, &attr, job_main, j);
	pthread_attr_destroy(&attr);
	if (r >= 0)
		j->m->running_jobs++;
	return r;
}

int manager_run_job(Manager *m, int (*fn)(Manager *m, void *data),
		    void (*done)(Manager *m, void *data, int r), void *data)
{
	Job *j = calloc(1, sizeof(*j));
	int r;

	if (!j)
		return -ENOMEM;
	*j = (Job) { .m = m, .fn = fn, .done = done, .data = data };
	r = start_thread(j);
	if (r < 0) {
		free(j);
		return r;
	}
	m->config_jobs++;
	return r;
}

static void free_retired(Manager *m)
{
	for (size_t i = 0; i < m->n_retired; i++)
		ks_config_free(m->retired[i]);
	free(m->retired);
	m->retired = NULL;
	m->n_retired = 0;
}

/* ---- runs --------------------------------------------------------------------------------- */

static Run *find_run(Manager *m, uint32_t id)
{
	for (size_t i = 0; i < m->n_runs; i++)
		if (m->runs[i].id == id)
			return &m->runs[i];
	return NULL;
}

static void run_account_finished(Manager *m, uint32_t id, bool ok)
{
	Run *run = find_run(m, id);

	if (!run)
		return;
	run->ok = run->ok && ok;
	if (--run->remaining > 0)
		return;
	bool all_ok = run->ok;
	*run = m->runs[--m->n_runs];
	TELL(m, run_complete, id, all_ok);
}

static int schedule(Account *a, uint64_t delay_sec);
static int account_start(Account *a);
static int request_run(Account *a, bool force, bool mass, bool local_only, bool list,
		       const char *collection, uint32_t run_id);
static void watch_account(Manager *m, Account *a);
static void start_queued(Manager *m);

/* Failures that mean no network (or no server) rather than a server that said no. */
static bool is_offline(int r)
{
	return r == -EHOSTUNREACH || r == -ENETUNREACH || r == -ENETDOWN || r == -ECONNREFUSED;
}

void manager_network_up(Manager *m)
{
	for (size_t i = 0; i < m->n_accounts; i++) {
		Account *a = m->accounts[i];

		if (a->job || !a->retry_in || a->refused_credentials || m->stopping)
			continue;
		log_at(KS_LOG_INFO, "%s: the network is back; syncing now instead of in %llu s.",
		       a->cfg.name, (unsigned long long) a->retry_in);
		(void) request_run(a, false, false, false, false, NULL, 0);
	}
}

static void account_arm_after_run(Account *a)
{
	Manager *m = a->m;
	uint64_t delay = interval_of(m, a);

	if (a->refused_credentials) {
		/* Not retried: the next runs only look whether the credentials changed. */
		a->retry_in = 0;
		a->server_wait = 0;
		(void) schedule(a, delay);
		return;
	}
	if (a->last_result < 0 && a->last_result != -ECANCELED && a->last_result != -EDQUOT &&
	    ks_error_scope_of(a->last_result) == KS_SCOPE_ACCOUNT) {
		/* Network, server or credentials trouble: back off exponentially. */
		uint64_t b = BACKOFF_FIRST_SEC;
		for (unsigned i = 1; i < a->backoff && b < delay; i++)
			b *= 2;
		if (b < delay)
			delay = b;
		if (!m->network_watched && is_offline(a->last_result))
			delay = KS_MIN(delay, (uint64_t) OFFLINE_RETRY_SEC);
		a->retry_in = delay;
	} else
		a->retry_in = 0;
	/* Retry-After (429, 503, at most KS_RETRY_AFTER_MAX): the server said when it is
	 * ready, which replaces the first backoff step. Failures in a row still make the wait
	 * grow, so that a server answering "retry after 1 s" forever is not asked every
	 * second. */
	if (a->server_wait && a->last_result < 0) {
		uint64_t floor = 0;
		if (a->backoff > 1) {
			floor = BACKOFF_FIRST_SEC;
			for (unsigned i = 2; i < a->backoff && floor < interval_of(m, a); i++)
				floor *= 2;
			floor = KS_MIN(floor, (uint64_t) interval_of(m, a));
		}
		delay = KS_MAX((uint64_t) a->server_wait, floor);
		a->retry_in = delay;
	} else if (a->server_wait > delay)
		delay = a->server_wait;
	a->server_wait = 0;
	(void) schedule(a, delay);
}

/* What kind of failure a run met, for ksyncctl's exit status; NULL for none. */
static const char *failure_kind(const Account *a, int r)
{
	if (r == 0)
		return NULL;
	if (r == -EACCES || r == -EKEYREVOKED || a->password_failed)
		return "authentication";
	if (is_offline(r) || r == -ETIMEDOUT || r == -ECONNRESET || r == -EKEYREJECTED)
		return "network";
	return "other";
}

/* "key": [the strings of v] */
static void json_strings(ks_json_writer *w, const char *key, char *const *v, size_t n)
{
	(void) ks_json_write_key(w, key);
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; i < n; i++)
		(void) ks_json_write_string(w, v[i]);
	(void) ks_json_write_array_end(w);
}

/* The JSON of SyncFinished (lib/util/ipc.h): what this run (its result r) did to each
 * collection it was to sync, and nothing about the others. NULL when out of memory. */
static char *run_json(Account *a, int r)
{
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	char *json = NULL;

	if (ks_json_writer_new(false, &w) < 0)
		return NULL;
	(void) ks_json_write_object_begin(w);
	(void) ks_json_write_key(w, "collections");
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; i < a->n_run_results; i++) {
		const CollectionResult *c = &a->run_results[i];
		const struct {
			const char *key;
			unsigned n;
		} counts[] = {
			{ "added", c->added }, { "updated", c->updated }, { "deleted", c->deleted },
			{ "uploaded", c->uploaded }, { "removed", c->removed },
			{ "conflicts", c->conflicts }, { "skipped", c->skipped },
		};
		(void) ks_json_write_object_begin(w);
		(void) ks_json_write_key(w, "path");
		(void) ks_json_write_string(w, c->path);
		(void) ks_json_write_key(w, "ok");
		(void) ks_json_write_bool(w, c->ok);
		(void) ks_json_write_key(w, "synced");
		(void) ks_json_write_bool(w, !c->not_synced);
		(void) ks_json_write_key(w, "error");
		(void) ks_json_write_string(w, c->error);
		for (size_t k = 0; k < ELEMENTSOF(counts); k++) {
			(void) ks_json_write_key(w, counts[k].key);
			(void) ks_json_write_uint(w, counts[k].n);
		}
		(void) ks_json_write_object_end(w);
	}
	(void) ks_json_write_array_end(w);
	json_strings(w, "errors", a->errors, a->n_errors);
	json_strings(w, "notices", a->notices, a->n_notices);
	(void) ks_json_write_key(w, "failure");
	(void) ks_json_write_string(w, failure_kind(a, r));
	(void) ks_json_write_object_end(w);
	if (ks_json_writer_steal(w, &json) < 0)
		return NULL;
	return json;
}

/* Credentials the server refused are not tried again: each try is a failed login, and
 * enough of them lock some accounts (Infomaniak). The account waits for them to change. */
static const char refused_note[] = " — ksync stopped trying: repeated failed logins can lock "
	"an account. It tries again when ksync.conf or the password changes, or on 'ksyncctl "
	"sync'.";

static void run_done(Manager *m, Job *j, int r)
{
	Account *a = j->account;

	(void) pthread_join(j->thread, NULL);
	m->running_jobs--;
	a->job = NULL;
	if (r == -EKEYREVOKED) {
		/* The credentials are still the refused ones: nothing was sent; the collections
		 * say why they were not synced. */
		_cleanup_free_ char *json = run_json(a, r);
		TELL(m, run_ended, a, false);
		for (size_t i = 0; i < a->n_running; i++) {
			TELL(m, run_reported, a, a->running_runs[i], false, json ? json : "{}");
			run_account_finished(m, a->running_runs[i], false);
		}
		free(a->running_runs);
		a->running_runs = NULL;
		a->n_running = 0;
		ks_account_config_done(&j->cfg);
		free(j->enable_href);
		free(j->delete_href);
		free(j->only_collection);
		free(j->refused_credentials);
		free(j);
		if (a->removed) {
			account_free(a);
			return;
		}
		if (!m->stopping) {
			(void) schedule(a, interval_of(m, a));
			start_queued(m);
		}
		return;
	}
	a->last_sync = now_sec();
	a->last_result = r < 0 ? r : r > 0 ? -EIO : 0;
	free(a->last_error);
	a->last_error = NULL;
	const char *first_failed = NULL;
	for (size_t i = 0; i < a->n_run_results && !first_failed; i++)
		if (!a->run_results[i].ok && !a->run_results[i].not_synced)
			first_failed = a->run_results[i].error;
	if (r < 0 && a->n_errors)
		a->last_error = strdup(a->errors[a->n_errors - 1]);
	else if (r != 0 && first_failed)
		(void) asprintf(&a->last_error, "%s", first_failed);
	else if (r > 0)
		(void) asprintf(&a->last_error, "%d collection(s) failed", r);
	else if (r < 0)
		(void) asprintf(&a->last_error, "%s", strerror(-r));
	if (r == -EACCES && a->refused_in_run) {
		free(a->refused_credentials);
		a->refused_credentials = TAKE_PTR(a->refused_in_run);
		free(a->last_error);
		a->last_error = NULL;
		(void) asprintf(&a->last_error, "%s%s", ks_credentials_refused_message(), refused_note);
		log_at(KS_LOG_WARNING, "%s: the server refused the credentials; not trying again "
		       "until ksync.conf or the password changes, or 'ksyncctl sync %s'.",
		       a->cfg.name, a->cfg.name);
	}
	a->refused_in_run = mfree(a->refused_in_run);
	a->backoff = a->last_result < 0 ? a->backoff + 1 : 0;
	TELL(m, run_ended, a, !j->only_collection);

	/* The JSON of SyncFinished for every run this one reports to. */
	_cleanup_free_ char *json = run_json(a, r);
	bool ok = a->last_result == 0;
	for (size_t i = 0; i < a->n_running; i++) {
		TELL(m, run_reported, a, a->running_runs[i], ok, json ? json : "{}");
		run_account_finished(m, a->running_runs[i], ok);
	}
	free(a->running_runs);
	a->running_runs = NULL;
	a->n_running = 0;
	ks_account_config_done(&j->cfg);
	free(j->enable_href);
	free(j->delete_href);
	free(j->only_collection);
	free(j->refused_credentials);
	free(j);
	(void) sd_notifyf(false, "STATUS=%s: %s", a->cfg.name,
			  ok ? "synced" : a->last_error ? a->last_error : "failed");

	if (a->removed) {
		account_free(a);
		return;
	}
	if (m->stopping)
		return;
	/* Collections the run made (a first sync, a new collection) get watched too. */
	watch_account(m, a);
	account_arm_after_run(a);
	/* This account's queued run, and any other account's that waited for a free slot. */
	start_queued(m);
}

static CollectionResult *result_in(CollectionResult **v, size_t *n, const char *path)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i].path, path) == 0)
			return &(*v)[i];
	CollectionResult *nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return NULL;
	*v = nv;
	CollectionResult *c = &nv[*n];
	*c = (CollectionResult) { .path = strdup(path) };
	if (!c->path)
		return NULL;
	(*n)++;
	return c;
}

/* Records what the run did to a collection, in the run's results and in the last result
 * Status shows. */
static void record_result(Account *a, const ks_sync_event *ev, bool ok, bool not_synced)
{
	CollectionResult *both[2] = {
		ev->collection ? result_in(&a->run_results, &a->n_run_results, ev->collection)
			       : NULL,
		ev->collection ? result_in(&a->results, &a->n_results, ev->collection) : NULL,
	};
	uint64_t now = now_sec();

	for (size_t i = 0; i < ELEMENTSOF(both); i++) {
		CollectionResult *c = both[i];
		if (!c)
			continue;
		c->ok = ok;
		c->not_synced = not_synced;
		free(c->error);
		c->error = ok ? NULL : dup_or_null(ev->message);
		c->added = ev->added;
		c->updated = ev->updated;
		c->deleted = ev->deleted;
		c->uploaded = ev->uploaded;
		c->removed = ev->removed;
		c->conflicts = ev->conflicts;
		c->skipped = ev->skipped;
		c->time = now;
		if (ok)
			c->synced = now;
	}
}

static void handle_event(Manager *m, Account *a, const ks_sync_event *ev)
{
	switch (ev->type) {
	case KS_SYNC_PROGRESS:
		break;
	case KS_SYNC_COLLECTION_DONE:
		record_result(a, ev, true, false);
		if (ev->added || ev->updated || ev->deleted || ev->uploaded || ev->removed)
			log_at(KS_LOG_INFO, "%s/%s: %u added, %u updated, %u deleted; sent %u, "
			       "deleted %u on the server", a->cfg.name, ev->collection, ev->added,
			       ev->updated, ev->deleted, ev->uploaded, ev->removed);
		break;
	case KS_SYNC_COLLECTION_FAILED:
		record_result(a, ev, false, false);
		log_at(KS_LOG_ERR, "%s/%s: %s", a->cfg.name, ev->collection, ev->message);
		break;
	case KS_SYNC_COLLECTION_SKIPPED:
		record_result(a, ev, false, true);
		log_at(KS_LOG_INFO, "%s/%s: %s", a->cfg.name, ev->collection, ev->message);
		break;
	case KS_SYNC_ACCOUNT_FAILED:
		if (ev->no_password)
			a->password_failed = true;
		(void) strv_add(&a->errors, &a->n_errors, ev->message);
		log_at(KS_LOG_ERR, "%s: %s", a->cfg.name, ev->message);
		break;
	case KS_SYNC_CREDENTIALS_REFUSED:
		free(a->refused_in_run);
		a->refused_in_run = dup_or_null(ev->credentials);
		if (ev->message) {
			(void) strv_add(&a->errors, &a->n_errors, ev->message);
			log_at(KS_LOG_ERR, "%s: %s", a->cfg.name, ev->message);
		}
		break;
	case KS_SYNC_ITEM_SKIPPED:
		(void) strv_add(&a->notices, &a->n_notices, ev->message);
		log_at(KS_LOG_WARNING, "%s/%s: %s", a->cfg.name, ev->collection, ev->message);
		break;
	case KS_SYNC_CONFLICT:
	case KS_SYNC_NOTICE:
		if (ev->retry_after > a->server_wait)
			a->server_wait = ev->retry_after;
		(void) strv_add(&a->notices, &a->n_notices, ev->message);
		log_at(KS_LOG_NOTICE, "%s/%s: %s", a->cfg.name, ev->collection, ev->message);
		break;
	}
	TELL(m, run_event, a, ev);
}

static int on_queue(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Manager *m = userdata;
	uint64_t v;

	(void) !read(m->efd, &v, sizeof(v));
	for (;;) {
		pthread_mutex_lock(&m->lock);
		Msg *msg = m->queue_head;
		if (msg) {
			m->queue_head = msg->next;
			if (!m->queue_head)
				m->queue_tail = NULL;
		}
		pthread_mutex_unlock(&m->lock);
		if (!msg)
			break;
		switch (msg->type) {
		case MSG_EVENT: {
			Account *a = msg->job->account;
			msg->ev.account = a->cfg.name;
			handle_event(m, a, &msg->ev);
			break;
		}
		case MSG_RUN_DONE:
			run_done(m, msg->job, msg->result);
			break;
		case MSG_JOB_DONE: {
			Job *j = msg->job;
			(void) pthread_join(j->thread, NULL);
			m->running_jobs--;
			j->done(m, j->data, msg->result);
			free(j);
			if (--m->config_jobs == 0)
				free_retired(m);
			break;
		}
		}
		free(msg->collection);
		free(msg->message);
		free(msg->credentials);
		free(msg->file);
		free(msg);
	}
	if (m->stopping && m->running_jobs == 0)
		(void) sd_event_exit(m->event, 0);
	return 0;
}

static unsigned runs_in_flight(Manager *m)
{
	unsigned n = 0;
	for (size_t i = 0; i < m->n_accounts; i++)
		n += m->accounts[i]->job != NULL;
	return n;
}

/* Starts the account's pending run now if it may. */
static int account_start(Account *a)
{
	Manager *m = a->m;
	Job *j;
	int r;

	if (a->job || !a->pending || m->stopping)
		return 0;
	if (runs_in_flight(m) >= MAX_PARALLEL_RUNS)
		return 0;	/* start_queued() picks it up when a run ends */
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	r = ks_account_config_copy(&a->cfg, &j->cfg);
	if (r < 0) {
		free(j);
		return r;
	}
	j->m = m;
	j->account = a;
	j->opts = (ks_sync_opts) {
		.force = a->pending_force,
		.allow_mass_delete = a->pending_mass,
		.only_if_local_changes = a->pending_local_only,
		.list_collections = a->pending_list,
		.wait_lock = true,
		.on_event = on_sync_event,
		.userdata = j,
		.cancel = &m->cancel,
	};
	j->enable_href = TAKE_PTR(a->pending_enable);
	j->opts.enable_href = j->enable_href;
	j->delete_href = TAKE_PTR(a->pending_delete);
	j->opts.delete_href = j->delete_href;
	j->only_collection = TAKE_PTR(a->pending_collection);
	j->opts.only_collection = j->only_collection;
	if (a->refused_credentials && !(j->refused_credentials = strdup(a->refused_credentials))) {
		ks_account_config_done(&j->cfg);
		free(j->enable_href);
		free(j->delete_href);
		free(j->only_collection);
		free(j);
		return -ENOMEM;
	}
	j->opts.refused_credentials = j->refused_credentials;
	a->pending = a->pending_force = a->pending_mass = a->pending_local_only = false;
	a->pending_list = false;
	free(a->running_runs);
	a->running_runs = a->waiting_runs;
	a->n_running = a->n_waiting;
	a->waiting_runs = NULL;
	a->n_waiting = 0;
	a->server_wait = 0;
	strv_free(a->errors, a->n_errors);
	a->errors = NULL;
	a->n_errors = 0;
	strv_free(a->notices, a->n_notices);
	a->notices = NULL;
	a->n_notices = 0;
	results_free(&a->run_results, &a->n_run_results);
	a->password_failed = false;
	a->job = j;
	r = start_thread(j);
	if (r < 0) {
		a->job = NULL;
		ks_account_config_done(&j->cfg);
		free(j->enable_href);
		free(j->delete_href);
		free(j->only_collection);
		free(j->refused_credentials);
		free(j);
		return r;
	}
	TELL(m, run_started, a);
	(void) sd_notifyf(false, "STATUS=syncing %s", a->cfg.name);
	return 0;
}

static void start_queued(Manager *m)
{
	for (size_t i = 0; i < m->n_accounts; i++)
		(void) account_start(m->accounts[i]);
}

static int request_run(Account *a, bool force, bool mass, bool local_only, bool list,
		       const char *collection, uint32_t run_id)
{
	/* One collection stays one only while every asker wants that same one. */
	if (!a->pending && collection)
		a->pending_collection = strdup(collection);
	else if (a->pending_collection &&
		 (!collection || strcmp(collection, a->pending_collection) != 0)) {
		free(a->pending_collection);
		a->pending_collection = NULL;
	}
	/* A run asked for while nothing is pending is local-only only if every asker was. */
	if (!a->pending)
		a->pending_local_only = local_only;
	else
		a->pending_local_only = a->pending_local_only && local_only;
	a->pending = true;
	a->pending_force |= force;
	a->pending_mass |= mass;
	a->pending_list |= list;
	if (run_id) {
		uint32_t *n = realloc(a->waiting_runs, (a->n_waiting + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		a->waiting_runs = n;
		n[a->n_waiting++] = run_id;
	}
	return account_start(a);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	Account *a = userdata;
	return request_run(a, false, false, false, false, NULL, 0);
}

static int schedule(Account *a, uint64_t delay_sec)
{
	Manager *m = a->m;
	uint64_t now;
	int r;

	a->next_sync = now_sec() + delay_sec;
	r = sd_event_now(m->event, CLOCK_BOOTTIME, &now);
	if (r < 0)
		return r;
	uint64_t when = now + delay_sec * 1000000ULL;
	if (a->timer) {
		r = sd_event_source_set_time(a->timer, when);
		if (r >= 0)
			r = sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
		return r;
	}
	/* A second of accuracy lets the kernel batch wakeups. */
	return sd_event_add_time(m->event, &a->timer, CLOCK_BOOTTIME, when, 1000000ULL, on_timer,
				 a);
}

static bool collection_known(Manager *m, const char *account, const char *collection)
{
	ks_engine *e = NULL;
	_cleanup_free_ char *json = NULL;
	_cleanup_(ks_json_freep) ks_json *list = NULL;
	bool known = false;

	if (ks_engine_new(m->data_dir, &e) < 0)
		return true;	/* let the run say what is wrong */
	/* Setting it enabled to what it is would change nothing; ask by listing instead. */
	if (ks_engine_collections_json(e, account, NULL, NULL, NULL, &json) >= 0 &&
	    ks_json_parse(json, strlen(json), &list, NULL) >= 0) {
		const char *name = strncmp(collection, "contacts/", 9) == 0 ? collection + 9
				   : strncmp(collection, "calendars/", 10) == 0 ? collection + 10
				   : collection;
		for (size_t i = 0; i < ks_json_count(list) && !known; i++)
			known = str_same(ks_json_get_string(ks_json_at(list, i), "name"), name);
	}
	ks_engine_free(e);
	return known;
}

int manager_sync(Manager *m, const char *target, bool force, bool mass, bool local_only,
		 bool list, uint32_t *ret_run_id)
{
	_cleanup_free_ char *name = NULL;
	size_t n = 0;
	int r;

	const char *collection = NULL;
	if (target && *target) {
		name = strndup(target, strcspn(target, "/"));
		if (!name)
			return -ENOMEM;
		if (!manager_find_account(m, name))
			return -ENOENT;
		if (target[strlen(name)] == '/' && target[strlen(name) + 1]) {
			collection = target + strlen(name) + 1;
			if (!collection_known(m, name, collection))
				return -ENXIO;
		}
	}
	uint32_t id = ++m->next_run_id;
	if (id == 0)
		id = ++m->next_run_id;
	for (size_t i = 0; i < m->n_accounts; i++)
		n += !name || strcmp(m->accounts[i]->cfg.name, name) == 0;
	Run *nr = realloc(m->runs, (m->n_runs + 1) * sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	m->runs = nr;
	m->runs[m->n_runs++] = (Run) { .id = id, .remaining = (unsigned) n + 1, .ok = true };
	for (size_t i = 0; i < m->n_accounts; i++) {
		Account *a = m->accounts[i];
		if (name && strcmp(a->cfg.name, name) != 0)
			continue;
		/* Asked for by the user: credentials refused before are tried once more. */
		a->refused_credentials = mfree(a->refused_credentials);
		r = request_run(a, force, mass, local_only, list, collection, id);
		if (r < 0)
			log_error_errno(r, "%s: Failed to start a sync run: %m", a->cfg.name);
	}
	if (ret_run_id)
		*ret_run_id = id;
	/* The extra count is released now that every account has been asked, so a run over
	 * no account still completes. */
	run_account_finished(m, id, true);
	return (int) (id & INT_MAX);
}

int manager_sync_created(Manager *m, const char *account, const char *href, uint32_t *ret_run_id)
{
	Account *a = manager_find_account(m, account);

	if (!a)
		return -ENOENT;
	char *h = strdup(href);
	if (!h)
		return -ENOMEM;
	free(a->pending_enable);
	a->pending_enable = h;
	return manager_sync(m, account, false, false, false, true, ret_run_id);
}

int manager_sync_deleted(Manager *m, const char *account, const char *href, uint32_t *ret_run_id)
{
	Account *a = manager_find_account(m, account);

	if (!a)
		return -ENOENT;
	char *h = strdup(href);
	if (!h)
		return -ENOMEM;
	free(a->pending_delete);
	a->pending_delete = h;
	return manager_sync(m, account, false, false, false, true, ret_run_id);
}

Account *manager_find_account(Manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_accounts; i++)
		if (strcmp(m->accounts[i]->cfg.name, name) == 0)
			return m->accounts[i];
	return NULL;
}

/* ---- file notifications ------------------------------------------------------------------- */

static int on_debounce(sd_event_source *s, uint64_t usec, void *userdata)
{
	Account *a = userdata;
	return request_run(a, false, false, true, false, NULL, 0);
}

static void watch_account(Manager *m, Account *a)
{
	ks_engine *e = NULL;
	char **dirs = NULL;

	if (ks_engine_new(m->data_dir, &e) < 0)
		return;
	if (ks_engine_collection_dirs(e, a->cfg.name, &dirs) < 0)
		dirs = NULL;
	ks_engine_free(e);
	for (size_t k = 0; dirs && dirs[k]; k++) {
		int wd = inotify_add_watch(m->inotify_fd, dirs[k],
					   IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
						   IN_CREATE | IN_ONLYDIR | IN_DONT_FOLLOW);
		if (wd < 0)
			continue;
		bool known = false;
		for (size_t i = 0; i < m->n_watches && !known; i++)
			known = m->watches[i].wd == wd;
		if (known)
			continue;
		Watch *nw = realloc(m->watches, (m->n_watches + 1) * sizeof(*nw));
		if (!nw)
			break;
		m->watches = nw;
		nw[m->n_watches++] = (Watch) { .wd = wd, .account = strdup(a->cfg.name) };
	}
	ks_engine_dirs_free(dirs);
}

static int on_config_debounce(sd_event_source *s, uint64_t usec, void *userdata)
{
	Manager *m = userdata;

	log_at(KS_LOG_INFO, "'%s' changed; reading it again.", m->config_path);
	(void) manager_reload(m, NULL);
	return 0;
}

static void config_changed(Manager *m, const struct inotify_event *ev)
{
	const char *slash = strrchr(m->config_path, '/');
	const char *base = slash ? slash + 1 : m->config_path;
	uint64_t now;

	if (ev->len == 0 || strcmp(ev->name, base) != 0 || m->stopping)
		return;
	(void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
	if (m->config_debounce) {
		(void) sd_event_source_set_time(m->config_debounce, now + CONFIG_DEBOUNCE_USEC);
		(void) sd_event_source_set_enabled(m->config_debounce, SD_EVENT_ONESHOT);
	} else
		(void) sd_event_add_time(m->event, &m->config_debounce, CLOCK_MONOTONIC,
					 now + CONFIG_DEBOUNCE_USEC, 0, on_config_debounce, m);
}

/* Watches the directory of the config file (the file itself is replaced by editors and by
 * ksyncctl, which a watch on it would not survive). */
static void watch_config(Manager *m)
{
	_cleanup_free_ char *dir = NULL;
	const char *slash = strrchr(m->config_path, '/');

	if (m->inotify_fd < 0)
		return;
	dir = slash ? strndup(m->config_path, slash == m->config_path ? 1 :
			      (size_t) (slash - m->config_path)) : strdup(".");
	if (!dir)
		return;
	int wd = inotify_add_watch(m->inotify_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE |
				   IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR);
	if (wd >= 0)
		m->config_wd = wd;
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Manager *m = userdata;
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *) (void *) p;
			p += sizeof(*ev) + ev->len;
			if (m->config_wd >= 0 && ev->wd == m->config_wd) {
				config_changed(m, ev);
				continue;
			}
			/* Only item files matter; temp files and editors' droppings do not. */
			if (ev->len == 0 || ev->name[0] == '.')
				continue;
			size_t l = strlen(ev->name);
			if (l < 5 || (strcmp(ev->name + l - 4, ".vcf") && strcmp(ev->name + l - 4, ".ics")))
				continue;
			for (size_t i = 0; i < m->n_watches; i++) {
				if (m->watches[i].wd != ev->wd)
					continue;
				Account *a = manager_find_account(m, m->watches[i].account);
				if (!a)
					break;
				uint64_t now;
				(void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
				if (a->debounce) {
					(void) sd_event_source_set_time(a->debounce, now + DEBOUNCE_USEC);
					(void) sd_event_source_set_enabled(a->debounce, SD_EVENT_ONESHOT);
				} else
					(void) sd_event_add_time(m->event, &a->debounce, CLOCK_MONOTONIC,
								 now + DEBOUNCE_USEC, 0, on_debounce, a);
				break;
			}
		}
	}
	return 0;
}

/* ---- accounts from the config ------------------------------------------------------------- */

static bool account_config_same(const ks_account_config *x, const ks_account_config *y)
{
	return str_same(x->url, y->url) && str_same(x->username, y->username) &&
	       str_same(x->password_command, y->password_command) &&
	       str_same(x->password_file, y->password_file) &&
	       str_same(x->password_secret, y->password_secret) &&
	       str_same(x->ca_file, y->ca_file) && x->allow_insecure_http == y->allow_insecure_http;
}

static int apply_config(Manager *m, ks_config *c)
{
	log_use_config_level(c->log_level, true);
	/* Accounts gone from the config stop (after their run); new ones start. */
	for (size_t i = 0; i < m->n_accounts;) {
		Account *a = m->accounts[i];
		if (ks_config_find_account(c, a->cfg.name)) {
			i++;
			continue;
		}
		m->accounts[i] = m->accounts[--m->n_accounts];
		if (a->job)
			a->removed = true;
		else
			account_free(a);
	}
	for (size_t i = 0; i < c->n_accounts; i++) {
		const ks_account_config *ac = &c->accounts[i];
		Account *a = manager_find_account(m, ac->name);
		ks_account_config copy;
		int r = ks_account_config_copy(ac, &copy);
		if (r < 0)
			return r;
		if (a) {
			/* Changed settings may be the fix for credentials the server refused. */
			bool changed = !account_config_same(&a->cfg, &copy);
			if (changed)
				a->refused_credentials = mfree(a->refused_credentials);
			ks_account_config_done(&a->cfg);
			a->cfg = copy;
			if (changed && m->event)
				(void) request_run(a, false, false, false, false, NULL, 0);
			continue;
		}
		a = calloc(1, sizeof(*a));
		Account **na = realloc(m->accounts, (m->n_accounts + 1) * sizeof(*na));
		if (!a || !na) {
			free(a);
			ks_account_config_done(&copy);
			return -ENOMEM;
		}
		m->accounts = na;
		a->m = m;
		a->cfg = copy;
		m->accounts[m->n_accounts++] = a;
		if (m->event) {
			watch_account(m, a);
			(void) request_run(a, false, false, false, false, NULL, 0);
		}
	}
	if (m->config_jobs > 0) {
		/* A job's thread may be reading the old one. */
		ks_config **na = realloc(m->retired, (m->n_retired + 1) * sizeof(*na));
		if (!na)
			return -ENOMEM;
		m->retired = na;
		m->retired[m->n_retired++] = m->config;
	} else
		ks_config_free(m->config);
	m->config = c;
	return 0;
}

static void log_lines(int level, const char *text)
{
	for (const char *p = text; p && *p;) {
		size_t n = strcspn(p, "\n");

		log_at(level, "%.*s", (int) n, p);
		p += n + (p[n] == '\n');
	}
}

int manager_reload(Manager *m, char **reterr_msg)
{
	_cleanup_free_ char *why = NULL;
	ks_config *c = NULL;
	int r = ks_config_load(m->config_path, &c, &why);

	if (r < 0) {
		log_lines(KS_LOG_ERR, why);
		free(m->config_errors);
		m->config_errors = why ? strdup(why) : NULL;
		if (reterr_msg)
			*reterr_msg = TAKE_PTR(why);
		return log_error_errno(r, "Failed to reload '%s', keeping the configuration in use: "
				       "%m", m->config_path);
	}
	log_lines(KS_LOG_WARNING, c->warnings);
	r = apply_config(m, c);
	if (r < 0) {
		ks_config_free(c);
		return log_error_errno(r, "Failed to apply the new configuration: %m");
	}
	m->config_errors = mfree(m->config_errors);
	watch_config(m);
	log_at(KS_LOG_INFO, "Reloaded '%s': %zu account(s).", m->config_path, m->n_accounts);
	TELL(m, reloaded, m->config);
	return 0;
}

char *manager_explain_unknown_account(Manager *m, const char *name)
{
	for (size_t i = 0; m->config->invalid_accounts && m->config->invalid_accounts[i]; i++)
		if (strcmp(m->config->invalid_accounts[i], name) == 0) {
			char *msg = NULL;
			if (asprintf(&msg, "Account '%s' in %s has errors, so ksyncd left it out:\n%s\n"
				     "Fix them ('ksyncctl config check' checks the file); ksyncd reads "
				     "the file again when it changes.", name, m->config_path,
				     m->config->errors ? m->config->errors : "") < 0)
				return NULL;
			return msg;
		}

	_cleanup_free_ char *why = NULL;
	ks_config *c = NULL;
	char *msg = NULL;
	int r = ks_config_load_partial(m->config_path, &c, &why);
	if (r < 0)
		return NULL;
	bool valid = ks_config_find_account(c, name) != NULL;
	bool invalid = false;
	for (size_t i = 0; c->invalid_accounts && c->invalid_accounts[i]; i++)
		invalid |= strcmp(c->invalid_accounts[i], name) == 0;
	if (valid)
		r = asprintf(&msg, "Account '%s' is in %s, but ksyncd has not read it yet: run "
			     "'ksyncctl reload'%s", name, m->config_path,
			     m->config_errors ? ", after fixing the errors it reports" : ".");
	else if (invalid)
		r = asprintf(&msg, "Account '%s' in %s has errors:\n%s\nFix them ('ksyncctl config "
			     "check' checks the file).", name, m->config_path,
			     c->errors ? c->errors : "");
	ks_config_free(c);
	return r < 0 ? NULL : msg;
}

int manager_new(const char *config_path, Manager **ret)
{
	_cleanup_free_ char *why = NULL;
	Manager *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->efd = m->inotify_fd = -1;
	m->config_path = strdup(config_path);
	if (!m->config_path) {
		manager_free(m);
		return -ENOMEM;
	}
	r = ks_data_dir_default(&m->data_dir);
	if (r < 0) {
		manager_free(m);
		return log_error_errno(r, "Failed to find the data directory (set HOME or "
				       "XDG_DATA_HOME): %m");
	}
	ks_config *c = NULL;
	m->config_wd = -1;
	r = ks_config_load_partial(config_path, &c, &why);
	if (r == -ENOENT && access(config_path, F_OK) < 0) {
		/* No configuration yet: the service runs without accounts until `ksyncctl
		 * account add` writes the first one. */
		c = calloc(1, sizeof(*c));
		if (!c || !(c->path = strdup(config_path))) {
			free(c);
			manager_free(m);
			return -ENOMEM;
		}
		c->interval = 900;
		c->notifications = true;
		c->conflict = KS_CONFLICT_MODE_SERVER_WINS;
		c->collections = KS_NEW_COLLECTIONS_ALL;
		log_at(KS_LOG_INFO, "No configuration file '%s' yet; no accounts to sync.",
		       config_path);
		r = 0;
	}
	if (r < 0) {
		if (why)
			log_lines(KS_LOG_ERR, why);
		else
			log_error_errno(r, "Failed to load configuration '%s': %m", config_path);
		manager_free(m);
		return r;
	}
	if (r > 0) {
		/* One bad line must not stop the accounts that are fine: they run, and the
		 * errors are shown in Status until the file is fixed. */
		log_lines(KS_LOG_ERR, c->errors);
		if (c->n_accounts == 0) {
			log_at(KS_LOG_ERR, "No account of '%s' is free of errors: nothing to run. Fix "
			       "the file ('ksyncctl config check' checks it).", config_path);
			ks_config_free(c);
			manager_free(m);
			return -EINVAL;
		}
		log_at(KS_LOG_WARNING, "'%s' has %d error(s): starting with the %zu account(s) "
		       "without errors.", config_path, r, c->n_accounts);
		m->config_errors = strdup(c->errors);
	}
	log_lines(KS_LOG_WARNING, c->warnings);
	r = apply_config(m, c);
	if (r < 0) {
		ks_config_free(c);
		manager_free(m);
		return r;
	}
	*ret = m;
	return 0;
}

int manager_start(Manager *m, sd_event *e)
{
	int r;

	if (!m->event)
		m->event = sd_event_ref(e);
	m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (m->efd < 0)
		return -errno;
	r = sd_event_add_io(e, &m->efd_source, m->efd, EPOLLIN, on_queue, m);
	if (r < 0)
		return r;
	m->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (m->inotify_fd >= 0)
		(void) sd_event_add_io(e, &m->inotify_source, m->inotify_fd, EPOLLIN, on_inotify, m);
	watch_config(m);
	/* The first run of every account starts now. */
	for (size_t i = 0; i < m->n_accounts; i++) {
		watch_account(m, m->accounts[i]);
		(void) request_run(m->accounts[i], false, false, false, false, NULL, 0);
	}
	return 0;
}

bool manager_busy(Manager *m)
{
	return m->running_jobs > 0;
}

void manager_stop(Manager *m)
{
	m->stopping = true;
	m->cancel = 1;
	if (m->running_jobs == 0)
		(void) sd_event_exit(m->event, 0);
}

Manager *manager_free(Manager *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n_accounts; i++)
		account_free(m->accounts[i]);
	free(m->accounts);
	for (size_t i = 0; i < m->n_watches; i++)
		free(m->watches[i].account);
	free(m->watches);
	free(m->runs);
	free(m->listeners);
	sd_event_source_disable_unref(m->efd_source);
	sd_event_source_disable_unref(m->config_debounce);
	free(m->config_errors);
	sd_event_source_disable_unref(m->inotify_source);
	if (m->efd >= 0)
		close(m->efd);
	if (m->inotify_fd >= 0)
		close(m->inotify_fd);
	for (Msg *msg = m->queue_head; msg;) {
		Msg *next = msg->next;
		free(msg->collection);
		free(msg->message);
		free(msg->credentials);
		free(msg->file);
		free(msg);
		msg = next;
	}
	ks_config_free(m->config);
	free_retired(m);
	sd_bus_flush_close_unref(m->bus);
	sd_bus_flush_close_unref(m->system_bus);
	sd_event_unref(m->event);
	free(m->config_path);
	free(m->data_dir);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}

/* ---- status ------------------------------------------------------------------------------- */

static void collection_state(const char *path, ks_collection_state *ret, void *userdata)
{
	Account *a = userdata;

	for (size_t i = 0; i < a->n_results; i++) {
		CollectionResult *c = &a->results[i];
		if (strcmp(c->path, path) != 0)
			continue;
		*ret = (ks_collection_state) {
			.last_sync = c->synced, .last_run = c->time, .error = c->error,
			.result = c->ok ? "ok" : c->not_synced ? "skipped" : "failed",
		};
		return;
	}
}

int manager_collection_json(Manager *m, const char *account, const char *href, char **ret)
{
	Account *a = manager_find_account(m, account);
	ks_engine *e = NULL;
	int r;

	if (!a)
		return -ENOENT;
	r = ks_engine_new(m->data_dir, &e);
	if (r < 0)
		return r;
	r = ks_engine_collections_json(e, account, href, collection_state, a, ret);
	ks_engine_free(e);
	return r;
}

/* Writes the elements of a JSON array text into the array w has open. */
static int write_elements(ks_json_writer *w, const char *array)
{
	_cleanup_(ks_json_freep) ks_json *j = NULL;
	int r = ks_json_parse(array, strlen(array), &j, NULL);

	for (size_t i = 0; r >= 0 && i < ks_json_count(j); i++)
		r = ks_json_write_value(w, ks_json_at(j, i));
	return r;
}

/* {"KEY": [...]}: the arrays list(account) gives, one after the other, for the accounts asked
 * for ("" or NULL: every account). */
static int accounts_json(Manager *m, const char *account, const char *key,
			 int (*list)(ks_engine *e, Account *a, char **ret), char **ret)
{
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	ks_engine *e = NULL;
	int r;

	r = ks_json_writer_new(false, &w);
	if (r < 0)
		return r;
	r = ks_engine_new(m->data_dir, &e);
	if (r < 0)
		return r;
	(void) ks_json_write_object_begin(w);
	(void) ks_json_write_key(w, key);
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; r >= 0 && i < m->n_accounts; i++) {
		Account *a = m->accounts[i];
		_cleanup_free_ char *arr = NULL;
		if (account && *account && strcmp(account, a->cfg.name) != 0)
			continue;
		r = list(e, a, &arr);
		if (r >= 0)
			r = write_elements(w, arr);
	}
	ks_engine_free(e);
	if (r < 0)
		return r;
	(void) ks_json_write_array_end(w);
	(void) ks_json_write_object_end(w);
	return ks_json_writer_steal(w, ret);
}

static int list_collections(ks_engine *e, Account *a, char **ret)
{
	return ks_engine_collections_json(e, a->cfg.name, NULL, collection_state, a, ret);
}

static int list_conflicts(ks_engine *e, Account *a, char **ret)
{
	return ks_engine_conflicts_json(e, a->cfg.name, ret);
}

int manager_collections_json(Manager *m, const char *account, char **ret)
{
	return accounts_json(m, account, "collections", list_collections, ret);
}

int manager_conflicts_json(Manager *m, const char *account, char **ret)
{
	return accounts_json(m, account, "conflicts", list_conflicts, ret);
}

/* "key": [one string per line of text] */
static void json_lines(ks_json_writer *w, const char *key, const char *text)
{
	(void) ks_json_write_key(w, key);
	(void) ks_json_write_array_begin(w);
	for (const char *p = text; p && *p;) {
		size_t n = strcspn(p, "\n");

		(void) ks_json_write_string_len(w, p, n);
		p += n + (p[n] == '\n');
	}
	(void) ks_json_write_array_end(w);
}

/* A number, or null when it is 0 (never, none). */
static void json_time(ks_json_writer *w, const char *key, uint64_t t)
{
	(void) ks_json_write_key(w, key);
	if (t)
		(void) ks_json_write_uint(w, t);
	else
		(void) ks_json_write_null(w);
}

int manager_account_details(Manager *m, Account *a, ks_json **ret_collections,
			    size_t *ret_conflicts)
{
	_cleanup_free_ char *cols = NULL, *conflicts = NULL;
	ks_json *c = NULL, *k = NULL;
	ks_engine *e = NULL;
	int r = ks_engine_new(m->data_dir, &e);

	if (r >= 0)
		r = list_collections(e, a, &cols);
	if (r >= 0)
		r = list_conflicts(e, a, &conflicts);
	ks_engine_free(e);
	if (r >= 0)
		r = ks_json_parse(cols, strlen(cols), &c, NULL);
	if (r >= 0)
		r = ks_json_parse(conflicts, strlen(conflicts), &k, NULL);
	if (r < 0) {
		ks_json_free(c);
		return r;
	}
	*ret_conflicts = ks_json_count(k);
	ks_json_free(k);
	*ret_collections = c;
	return 0;
}

int manager_status_json(Manager *m, char **ret)
{
	_cleanup_(ks_json_writer_freep) ks_json_writer *w = NULL;
	ks_engine *e = NULL;
	int r;

	r = ks_json_writer_new(false, &w);
	if (r < 0)
		return r;
	r = ks_engine_new(m->data_dir, &e);
	if (r < 0)
		return r;
	(void) ks_json_write_object_begin(w);
	(void) ks_json_write_key(w, "version");
	(void) ks_json_write_string(w, "0.1");
	(void) ks_json_write_key(w, "config");
	(void) ks_json_write_object_begin(w);
	(void) ks_json_write_key(w, "path");
	(void) ks_json_write_string(w, m->config_path);
	json_lines(w, "errors", m->config_errors);
	json_lines(w, "warnings", m->config->warnings);
	(void) ks_json_write_key(w, "invalid_accounts");
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; m->config->invalid_accounts && m->config->invalid_accounts[i]; i++)
		(void) ks_json_write_string(w, m->config->invalid_accounts[i]);
	(void) ks_json_write_array_end(w);
	(void) ks_json_write_object_end(w);
	(void) ks_json_write_key(w, "accounts");
	(void) ks_json_write_array_begin(w);
	for (size_t i = 0; r >= 0 && i < m->n_accounts; i++) {
		Account *a = m->accounts[i];
		_cleanup_free_ char *cols = NULL, *conflicts = NULL;
		r = list_collections(e, a, &cols);
		if (r >= 0)
			r = list_conflicts(e, a, &conflicts);
		if (r < 0)
			break;
		(void) ks_json_write_object_begin(w);
		(void) ks_json_write_key(w, "name");
		(void) ks_json_write_string(w, a->cfg.name);
		(void) ks_json_write_key(w, "url");
		(void) ks_json_write_string(w, a->cfg.url);
		(void) ks_json_write_key(w, "subscription");
		(void) ks_json_write_bool(w, a->cfg.feed != NULL);
		(void) ks_json_write_key(w, "state");
		(void) ks_json_write_string(w, a->job ? "syncing"
					    : a->refused_credentials ? "stopped"
					    : a->retry_in ? "backoff" : "idle");
		json_time(w, "last_sync", a->last_sync);
		(void) ks_json_write_key(w, "last_result");
		(void) ks_json_write_string(w, !a->last_sync ? NULL
					    : a->last_result ? "failed" : "ok");
		(void) ks_json_write_key(w, "last_error");
		(void) ks_json_write_string(w, a->last_error);
		json_time(w, "next_sync", a->job ? 0 : a->next_sync);
		json_time(w, "retry_in", a->retry_in);
		(void) ks_json_write_key(w, "collections");
		(void) ks_json_write_text(w, cols);
		(void) ks_json_write_key(w, "conflicts");
		r = ks_json_write_text(w, conflicts);
		(void) ks_json_write_object_end(w);
	}
	ks_engine_free(e);
	if (r < 0)
		return r;
	(void) ks_json_write_array_end(w);
	(void) ks_json_write_object_end(w);
	return ks_json_writer_steal(w, ret);
}

/* SPDX-License-Identifier: MIT */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "ksync.h"

/* The manager: accounts, their timers and file notifications, and sync runs in worker
 * threads. It calls nothing else of daemon/ but the log: what the outside must hear of a run
 * (bus.c's signals and answers, notify.c's alerts) it tells the listeners those files add
 * with manager_add_listener(). */

typedef struct Manager Manager;
typedef struct Account Account;
typedef struct Job Job;

/* What one collection did in a run of its account. */
typedef struct CollectionResult {
	char *path;		/* contacts/NAME */
	bool ok;
	bool not_synced;	/* the run did not reach it (the account failed first) */
	char *error;
	unsigned added, updated, deleted, uploaded, removed, conflicts, skipped;
	uint64_t time;		/* when that run ended for it */
	uint64_t synced;	/* when a sync of it last completed, 0: not since ksyncd started */
} CollectionResult;

struct Account {
	Manager *m;
	ks_account_config cfg;	/* a copy of the config's, owned */
	sd_event_source *timer;
	sd_event_source *debounce;
	/* The run under way (a worker thread) and what was asked while it ran. */
	Job *job;
	bool pending;
	bool pending_force, pending_mass, pending_local_only, pending_list;
	char *pending_enable;	/* href of a collection just created, to enable */
	char *pending_delete;	/* href of a collection just deleted on the server */
	char *pending_collection;	/* the one collection asked for, NULL: all */
	uint32_t *waiting_runs;	/* run ids to report in SyncFinished when the next run ends */
	size_t n_waiting;
	uint32_t *running_runs;	/* run ids the current run reports to */
	size_t n_running;
	/* Outcome of the last run. */
	uint64_t last_sync;	/* unix seconds, 0 = never */
	int last_result;	/* 0 ok, negative errno */
	char *last_error;
	/* The last result of each collection (Status), and what the run under way or last
	 * ended did (SyncFinished: only the collections that run was to sync). */
	CollectionResult *results;
	size_t n_results;
	CollectionResult *run_results;
	size_t n_run_results;
	char **errors;		/* account-level messages of the run under way */
	size_t n_errors;
	char **notices;
	size_t n_notices;
	unsigned backoff;	/* consecutive failed runs */
	uint64_t next_sync;	/* unix seconds */
	uint64_t retry_in;	/* seconds of backoff now, 0 = none */
	uint64_t server_wait;	/* Retry-After the server asked for in the last run */
	bool removed;		/* gone from the config: freed once its run ends */
	/* The server refused these credentials (their fingerprint): the account is stopped
	 * until they change or the user asks for a sync; timer runs only check locally. */
	char *refused_credentials;
	char *refused_in_run;	/* set by the run under way */
	bool password_failed;	/* the run under way could not get the password */
};

/* What the manager tells of its runs. Any callback may be NULL; all are called on the main
 * loop, for each event in the order the listeners were added. */
typedef struct ManagerListener {
	/* a's run started; a->running_runs are the run ids it reports to. */
	void (*run_started)(Manager *m, Account *a, void *userdata);
	/* An event of a's run under way (ev->account is a's name), once the manager has
	 * recorded what it keeps of it. */
	void (*run_event)(Manager *m, Account *a, const ks_sync_event *ev, void *userdata);
	/* a's run ended and its outcome is recorded (last_error and the results).
	 * whole_account: the run was to look at every collection of the account. */
	void (*run_ended)(Manager *m, Account *a, bool whole_account, void *userdata);
	/* After run_ended, for each run id the run reported to: its outcome, and the JSON of
	 * SyncFinished (lib/util/ipc.h). */
	void (*run_reported)(Manager *m, Account *a, uint32_t run_id, bool ok, const char *json,
			     void *userdata);
	/* Every account run id covered has ended (ok: all of them went well). */
	void (*run_complete)(Manager *m, uint32_t run_id, bool ok, void *userdata);
	/* a is about to be freed (gone from the config, or the manager ends). */
	void (*account_freed)(Manager *m, Account *a, void *userdata);
	/* The config file was read again and c is in use: accounts may have come or gone. */
	void (*reloaded)(Manager *m, const ks_config *c, void *userdata);
} ManagerListener;

struct Manager {
	sd_event *event;
	sd_bus *bus;
	/* NetworkManager on the system bus, when there is one: its StateChanged signal starts
	 * the runs waiting in backoff as soon as the network is back. */
	sd_bus *system_bus;
	bool network_watched;
	uint32_t network_state;
	char *config_path;
	char *data_dir;
	ks_config *config;
	/* The problems of the config file, as last read: at start, those of the accounts left
	 * out; after a reload refused for its errors, that reload's. NULL when none. */
	char *config_errors;
	/* The file is watched: a change is read again after CONFIG_DEBOUNCE_USEC. */
	int config_wd;
	sd_event_source *config_debounce;
	/* Configs replaced by a reload while jobs (collection creation, duplicates) read
	 * m->config from their threads: freed when the last such job has ended. */
	ks_config **retired;
	size_t n_retired;
	unsigned config_jobs;
	Account **accounts;
	size_t n_accounts;
	/* Worker threads post their events here; the main loop reads them. */
	pthread_mutex_t lock;
	struct Msg *queue_head, *queue_tail;
	int efd;
	sd_event_source *efd_source;
	int inotify_fd;
	sd_event_source *inotify_source;
	struct Watch *watches;
	size_t n_watches;
	volatile int cancel;
	uint32_t next_run_id;
	struct Run *runs;
	size_t n_runs;
	unsigned running_jobs;
	bool stopping;
	struct Listener *listeners;
	size_t n_listeners;
};

/* -EINVAL when the config file has errors and no account is left to run (the caller exits
 * with EX_CONFIG); the errors are logged. */
int manager_new(const char *config_path, Manager **ret);
Manager *manager_free(Manager *m);
/* Adds a listener: ops (borrowed, usually static) is called with userdata until the manager
 * is freed. */
int manager_add_listener(Manager *m, const ManagerListener *ops, void *userdata);
/* Attaches to the event loop: signals, timers, file notifications. */
int manager_start(Manager *m, sd_event *e);
/* Parses the config file again; on any error the old one stays. Returns 0 or -errno, with
 * the parse errors logged. */
int manager_reload(Manager *m, char **reterr_msg);
/* Why account name is not known, for a message: its errors when the file has it with
 * errors, a hint to reload when the file has it and ksyncd has not read it yet, NULL when
 * the file does not have it either. Owned by the caller. */
char *manager_explain_unknown_account(Manager *m, const char *name);
/* Starts (or queues) a sync run. target: NULL/"" for every account, "ACCOUNT" or
 * "ACCOUNT/COLLECTION". Returns the run id (> 0) or a negative errno (-ENOENT: no account). */
int manager_sync(Manager *m, const char *target, bool force, bool mass, bool local_only,
		 bool list, uint32_t *ret_run_id);
/* A run of account that lists its collections and enables the new one at href (created a
 * moment ago), whatever `collections =` says. */
int manager_sync_created(Manager *m, const char *account, const char *href, uint32_t *ret_run_id);
/* A run of account that lists its collections and removes the one at href, deleted on the
 * server a moment ago, whatever its size. */
int manager_sync_deleted(Manager *m, const char *account, const char *href, uint32_t *ret_run_id);
Account *manager_find_account(Manager *m, const char *name);
/* The JSON of Status() (lib/util/ipc.h). Owned by the caller. */
int manager_status_json(Manager *m, char **ret);
/* a's collections as Status lists them (a JSON array, *ret_collections, freed with
 * ks_json_free()) and its number of conflicts. */
int manager_account_details(Manager *m, Account *a, ks_json **ret_collections,
			    size_t *ret_conflicts);
int manager_collections_json(Manager *m, const char *account, char **ret);
/* {"conflicts": [...]} of account ("" or NULL: every account), lib/util/ipc.h Conflicts. */
int manager_conflicts_json(Manager *m, const char *account, char **ret);
/* The object of one collection, by href. -ENOENT when unknown. */
int manager_collection_json(Manager *m, const char *account, const char *href, char **ret);
/* Runs fn(data) in a worker thread; done(m, data, r) is called on the main loop after. */
int manager_run_job(Manager *m, int (*fn)(Manager *m, void *data),
		    void (*done)(Manager *m, void *data, int r), void *data);
/* Stops: cancels the runs under way at their next safe point and waits for them. */
void manager_stop(Manager *m);
/* Files the job threads are waiting on, for SIGTERM. */
bool manager_busy(Manager *m);

/* The network is back (NetworkManager says so): accounts waiting in backoff after a
 * network failure run now. */
void manager_network_up(Manager *m);

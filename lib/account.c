/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "discover_p.h"
#include "engine_p.h"
#include "macro.h"
#include "manage_p.h"
#include "secret_p.h"
#include "session_p.h"

static int sync_account_once(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o,
			     bool first_pass, bool *ret_damaged);
static int lock_account(run *R, int *ret_fd);
static int credentials_refused(run *R, bool auth_known, const char *fingerprint);
static int local_changes_pending(run *R);
static int discover_account(run *R, ks_cache_account *acc);
static bool list_every_run(run *R, const ks_cache_account *acc, const ks_collection *known,
			   size_t n_known);
static int list_homes(run *R, ks_cache_account *acc, unsigned tokens, ks_collection **ret,
		      size_t *ret_n);
static int list_and_reconcile(run *R, ks_cache_account *acc, bool fresh, bool each_run,
			      ks_collection **remote, size_t *n_remote, ks_collection **known,
			      size_t *n_known);
static const ks_collection *find_remote(const ks_collection *remote, size_t n, const char *href);
static bool collection_is(const ks_collection *col, const char *name);

/* Discovery of principal and home sets is repeated at most this often. */
#define REDISCOVER_SECS (24 * 3600)
/* The home sets are listed (new, removed and renamed collections) at least this often. */
#define LIST_SECS 3600
/* Runs list the home sets instead of asking each collection only where the collections
 * hold on average at most this many items (see list_every_run()). */
#define LIST_ITEMS_MAX 1000

int ks_sync_account_run(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o)
{
	run R = { .e = e, .acc = a, .o = o };
	bool damaged = false;
	int r = -EUCLEAN;

	if (e->cache)
		r = sync_account_once(e, a, o, true, &damaged);
	if (damaged) {
		int k = ks_engine_recover_cache(e);
		if (k > 0)
			r = sync_account_once(e, a, o, false, &damaged);
		else if (e->cache)
			ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, -EUCLEAN,
				    "the cache '%s/ksync.db' reported damage: %s", e->data_dir,
				    k < 0 ? strerror(-k) : "its check found none; run again");
	}
	if (!e->cache)
		ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
			    "the cache '%s/ksync.db' was set aside as damaged and a new one could "
			    "not be made", e->data_dir);
	return r;
}

static int sync_account_once(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o,
			     bool first_pass, bool *ret_damaged)
{
	run R = { .e = e, .acc = a, .o = o, .first_pass = first_pass };

	*ret_damaged = false;
	ks_cache_account acc = {};
	ks_collection *known = NULL, *remote = NULL;
	size_t n_known = 0, n_remote = 0;
	char *password = NULL, *why = NULL;
	int r, failed = 0;

	if (o->only_if_local_changes) {
		r = local_changes_pending(&R);
		if (r <= 0)
			return r;
	}
	/* The password comes first: a command that waits for a prompt or a locked keyring must
	 * not hold the account's lock (and every other run of it) while it waits. */
	r = ks_secret_get(a, o->cancel, &password, &why);
	if (r < 0 && r != -ENOKEY) {
		ks_run_report(&R, &(ks_sync_event) { .type = KS_SYNC_ACCOUNT_FAILED, .error = r,
						     .no_password = true },
			      "cannot get the password: %s", why ? why : strerror(-r));
		free(why);
		return r;
	}
	free(why);
	why = NULL;
	char fingerprint[65];
	ks_secret_fingerprint(a, password, fingerprint);
	if (o->refused_credentials && strcmp(o->refused_credentials, fingerprint) == 0) {
		password = ks_secret_free(password);
		return -EKEYREVOKED;
	}
	bool auth_known = false;
	int lock_fd = -1;
	r = lock_account(&R, &lock_fd);
	if (r < 0) {
		password = ks_secret_free(password);
		return r;
	}
	/* Another program in a write transaction on the cache (a sqlite3 shell) would fail
	 * every collection, each after the busy timeout: find out once, before any request. */
	r = ks_cache_begin(e->cache);
	if (r >= 0)
		ks_cache_rollback(e->cache);
	if (r < 0) {
		close(lock_fd);
		password = ks_secret_free(password);
		if (r == -EBUSY)
			ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
				    "the cache '%s/ksync.db' is locked by another program (waited "
				    "5 s); end its transaction or close it and run again",
				    e->data_dir);
		else
			ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r,
				    "cannot write the cache '%s/ksync.db': %s", e->data_dir,
				    strerror(-r));
		return r;
	}
	r = o->remote ? 0 : ks_remote_dav_new(a, password, &R.remote, &why);
	if (o->remote)
		R.remote = o->remote;
	password = ks_secret_free(password);
	if (r < 0) {
		close(lock_fd);
		ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s", why ? why : strerror(-r));
		free(why);
		return r;
	}

	int64_t now = (int64_t) time(NULL);
	r = ks_cache_get_account(e->cache, a->name, &acc);
	bool fresh = false;
	if (r == -ENOENT || (r >= 0 && (o->force || acc.discovered_at + REDISCOVER_SECS < now))) {
		r = discover_account(&R, &acc);
		auth_known = r == -EACCES;
		fresh = true;
	}
	if (r < 0)
		goto out;
	r = ks_cache_list_collections(e->cache, a->name, &known, &n_known);
	if (r >= 0)
		r = ks_collections_follow_config(&R, known, n_known);
	if (r < 0) {
		ks_run_fail(&R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "cannot read the cache: %s",
			    strerror(-r));
		goto out;
	}
	/* Listing the home sets finds new and removed collections and their new names and
	 * colours: it is done on the first run, with --force, and at least every LIST_SECS.
	 * Where the listings carry every collection's token, one per home set also replaces a
	 * request per collection on every run; otherwise each collection is asked directly. */
	bool listed = false;
	bool hourly = fresh || o->force || o->list_collections || n_known == 0 ||
		      acc.listed_at + LIST_SECS < now || acc.listed_at > now;
	if (hourly || list_every_run(&R, &acc, known, n_known)) {
		r = list_and_reconcile(&R, &acc, fresh, !hourly, &remote, &n_remote, &known,
				       &n_known);
		auth_known |= r == -EACCES;
		if (r < 0)
			goto out;
		failed += r;
		listed = true;
	}

	bool gone = false;
	int transport_error = 0;
	for (size_t i = 0; i < n_known; i++) {
		ks_collection *col = &known[i];
		if (!col->enabled)
			continue;
		if (o->only_collection && !collection_is(col, o->only_collection))
			continue;
		if (ks_run_cancelled(&R)) {
			r = -ECANCELED;
			goto out;
		}
		r = ks_sync_collection(&R, col, listed ? find_remote(remote, n_remote,
								     col->href) : NULL);
		if (r == -ENOENT && !listed) {
			gone = true;
			continue;
		}
		if (r < 0) {
			failed++;
			/* A connection cut or stalled on one collection, or an answer that makes
			 * no sense there (a redirect), may be that collection's trouble (a huge
			 * answer, a proxy's limit, a moved collection): the others are tried, each
			 * within its timeout, until a second one fails the same way. Other
			 * account-wide failures (credentials, refused connections, a server
			 * asking to wait) stop the account at once. */
			bool transport = r == -ECONNRESET || r == -ETIMEDOUT || r == -EPROTO;
			if (ks_error_scope_of(r) == KS_SCOPE_ACCOUNT &&
			    (!transport || transport_error))
				goto out;
			if (transport)
				transport_error = r;
		}
	}
	if (gone) {
		/* A collection vanished since the last listing: list now so that it goes away
		 * here too instead of failing every run until the next listing. */
		r = list_and_reconcile(&R, &acc, fresh, false, &remote, &n_remote, &known,
				       &n_known);
		if (r < 0)
			goto out;
	}
	/* The caller backs off after a failure of the connection, as it would had the run
	 * stopped there. */
	r = transport_error ? transport_error : failed;
out:
	if (r == -EACCES)
		r = credentials_refused(&R, auth_known, fingerprint);
	if (ks_remote_retry_after(R.remote)) {
		/* The server is overloaded or rate-limits: the caller waits as long as it asked. */
		char msg[128];
		snprintf(msg, sizeof(msg), "the server asked to wait %u s before trying again",
			 ks_remote_retry_after(R.remote));
		ks_sync_event ev = { .type = KS_SYNC_NOTICE, .account = a->name, .message = msg,
				     .retry_after = ks_remote_retry_after(R.remote) };
		ks_run_emit(&R, &ev);
	}
	ks_cache_account_done(&acc);
	ks_collection_free_array(known, n_known);
	ks_collection_free_array(remote, n_remote);
	if (!o->remote)
		ks_remote_free(R.remote);
	close(lock_fd);
	*ret_damaged = R.damaged;
	return r < 0 ? r : failed;
}

static int lock_account(run *R, int *ret_fd)
{
	_cleanup_free_ char *why = NULL;
	int r = ks_engine_lock_account(R->e, R->acc->name, R->o->wait_lock, ret_fd, &why);

	if (r < 0 && r != -ENOMEM)
		ks_run_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s",
			    why ? why : "cannot lock the account");
	return r;
}

/* A run that ended with -EACCES: whether the credentials were refused (a 401), confirmed
 * with one request unless discovery or a listing already saw the 401 (auth_known). */
static int credentials_refused(run *R, bool auth_known, const char *fingerprint)
{
	if (!auth_known && R->remote->ops->check_auth(R->remote) != -EACCES)
		return -EPERM;	/* a 403 on something: not the credentials */
	ks_sync_event ev = { .type = KS_SYNC_CREDENTIALS_REFUSED, .account = R->acc->name,
			     .error = -EACCES, .credentials = fingerprint,
			     .message = auth_known ? NULL : ks_manage_auth_message() };
	ks_run_emit(R, &ev);
	return -EACCES;
}

/* Whether any enabled collection of the account has a local change (1) or not (0): a scan of
 * the directories against the cache, without a request. */
static int local_changes_pending(run *R)
{
	ks_collection *known = NULL;
	size_t n_known = 0;
	int r = ks_cache_list_collections(R->e->cache, R->acc->name, &known, &n_known);

	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < n_known; i++) {
		ks_scan_result sr = {};
		ks_collection *col = &known[i];
		int fd;
		if (!col->enabled)
			continue;
		r = ks_engine_open_collection_dir(R->e, R->acc->name, col, false, &fd, NULL);
		if (r == -ENOMEM)
			break;
		if (r < 0) {
			r = 1;	/* a missing directory is a change the full run reports */
			break;
		}
		r = ks_scan_collection(R->e->cache, col->id, fd,
				       col->kind == KS_COLLECTION_ADDRESSBOOK ? ".vcf" : ".ics",
				       false,
				       &sr);
		close(fd);
		for (size_t k = 0; r == 0 && k < sr.n_changes; k++)
			r = sr.changes[k].kind != KS_LOCAL_IGNORED;
		ks_scan_result_done(&sr);
	}
	ks_collection_free_array(known, n_known);
	return r;
}

static int discover_account(run *R, ks_cache_account *acc)
{
	_cleanup_free_ char *why = NULL;
	int r;

	ks_cache_account_done(acc);
	r = R->remote->ops->discover(R->remote, acc, &why);
	if (r < 0) {
		ks_run_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "discovery at %s failed: %s",
			    R->acc->url, why ? why : strerror(-r));
		return r;
	}
	acc->discovered_at = (int64_t) time(NULL);
	return ks_cache_put_account(R->e->cache, R->acc->name, acc);
}

/* Whether a run lists the home sets to learn which collections changed, instead of asking
 * each one: one PROPFIND Depth 1 per home set against one request per collection. The bench
 * (bench/extra.py, 100 calendars of 10 events) measured the listing cheaper on Radicale,
 * Xandikos, DAViCal and SabreDAV, in wall time and in the server's CPU. But Radicale computes
 * a token from all the collection's items, for the listing and again for the sync-collection
 * of a collection that changed: with 10,000 contacts and 5,000 events a run after changes
 * took 2.0 s instead of 1.2 s. So the listing is used where the last one carried every
 * enabled collection's token, there are more such collections than home sets, and they hold
 * on average at most LIST_ITEMS_MAX items. A run of one collection asks it directly. */
static bool list_every_run(run *R, const ks_cache_account *acc, const ks_collection *known,
			   size_t n_known)
{
	const char *homes[2];
	size_t n_homes = ks_cache_account_homes(acc, homes), n_enabled = 0;
	uint64_t n_items = 0;
	bool tokens = false;

	if (acc->home_tokens < 0 || R->o->only_collection)
		return false;
	for (size_t i = 0; i < n_known; i++) {
		if (!known[i].enabled)
			continue;
		int n = ks_cache_count_items(R->e->cache, known[i].id);
		if (n < 0)
			return false;
		n_items += (uint64_t) n;
		n_enabled++;
		tokens |= known[i].sync_token || known[i].ctag;
	}
	return tokens && n_enabled > n_homes && n_items <= LIST_ITEMS_MAX * n_enabled;
}

/* The tokens a listing asks for: none when there is nothing stored to compare them with;
 * both on the hourly listing (a collection may have gained sync-collection); on the other
 * runs, only those the enabled collections are compared by (a server computes each from
 * all the collection's items). */
static unsigned tokens_to_ask(const ks_collection *known, size_t n_known, bool each_run)
{
	unsigned tokens = 0;
	bool stored = false;

	for (size_t i = 0; i < n_known; i++) {
		stored |= known[i].sync_token || known[i].ctag;
		if (known[i].enabled)
			tokens |= known[i].supports_sync ? KS_LIST_SYNC_TOKEN : KS_LIST_CTAG;
	}
	if (!stored)
		return 0;
	return each_run && tokens ? tokens : KS_LIST_TOKENS;
}

/* Whether the listing carried the token each enabled collection is compared by. */
static bool listing_has_tokens(const ks_collection *remote, size_t n_remote,
			       const ks_collection *known, size_t n_known)
{
	for (size_t i = 0; i < n_known; i++) {
		if (!known[i].enabled)
			continue;
		const ks_collection *rc = find_remote(remote, n_remote, known[i].href);
		if (!rc || !(known[i].supports_sync ? rc->sync_token : rc->ctag))
			return false;
	}
	return true;
}

static int list_homes(run *R, ks_cache_account *acc, unsigned tokens, ks_collection **ret,
		      size_t *ret_n)
{
	const char *homes[2];
	size_t n_homes = ks_cache_account_homes(acc, homes);
	ks_collection *all = NULL;
	size_t n_all = 0;
	int r = 0;

	for (size_t h = 0; h < n_homes; h++) {
		_cleanup_free_ char *why = NULL;
		ks_collection *part = NULL;
		size_t n_part = 0;
		r = R->remote->ops->list_home(R->remote, homes[h], tokens, &part, &n_part, &why);
		if (r < 0) {
			if (why && !strstr(why, homes[h])) {
				char *w2;
				if (asprintf(&w2, "listing %s: %s", homes[h], why) >= 0) {
					free(why);
					why = w2;
				}
			}
			ks_run_fail(R, KS_SYNC_ACCOUNT_FAILED, NULL, r, "%s",
				    why ? why : strerror(-r));
			break;
		}
		r = ks_collection_append_array(&all, &n_all, part, n_part);
		if (r < 0)
			break;
	}
	if (r < 0) {
		ks_collection_free_array(all, n_all);
		return r;
	}
	*ret = all;
	*ret_n = n_all;
	return 0;
}

/* Lists the home sets and reconciles the cached collections with them; on a failure the
 * principal and home sets are discovered again once, as they may have moved. each_run: a
 * listing in place of the collections' own requests, rather than the hourly one. */
static int list_and_reconcile(run *R, ks_cache_account *acc, bool fresh, bool each_run,
			      ks_collection **remote, size_t *n_remote, ks_collection **known,
			      size_t *n_known)
{
	unsigned tokens = tokens_to_ask(*known, *n_known, each_run);
	int r = list_homes(R, acc, tokens, remote, n_remote);

	if (r < 0 && !fresh && ks_error_scope_of(r) != KS_SCOPE_ACCOUNT) {
		r = discover_account(R, acc);
		if (r >= 0)
			r = list_homes(R, acc, tokens, remote, n_remote);
	}
	if (r < 0)
		return r;
	r = ks_collections_reconcile(R, *remote, *n_remote, known, n_known);
	if (r < 0)
		return r;
	int home_tokens = acc->home_tokens;
	if (tokens)
		home_tokens = listing_has_tokens(*remote, *n_remote, *known, *n_known) ? 1 : -1;
	/* A run that finds nothing changed writes nothing: unknown and yes both list every
	 * run, so only a listing without the tokens is worth recording then. */
	if (each_run && home_tokens != -1)
		return r;
	acc->home_tokens = home_tokens;
	if (!each_run)
		acc->listed_at = (int64_t) time(NULL);
	int k = ks_cache_put_account(R->e->cache, R->acc->name, acc);
	return k < 0 ? k : r;
}

static const ks_collection *find_remote(const ks_collection *remote, size_t n, const char *href)
{
	for (size_t i = 0; remote && i < n; i++)
		if (strcmp(remote[i].href, href) == 0)
			return &remote[i];
	return NULL;
}

/* Whether col is the collection named by name: its directory name, or "contacts/NAME" /
 * "calendars/NAME". */
static bool collection_is(const ks_collection *col, const char *name)
{
	const char *kind = col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts/" : "calendars/";
	size_t k = strlen(kind);

	if (strncmp(name, kind, k) == 0)
		name += k;
	return strcmp(name, col->name) == 0;
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_p.h"
#include "limits.h"
#include "macro.h"

/* What a run reported so far, to say afterwards which collections it never reached and why:
 * a report must not leave a collection out (it would read as unchanged) nor repeat an old
 * result for it. */
typedef struct report {
	const ks_sync_opts *o;
	char **reached;		/* labels of the collections the run said something about */
	size_t n_reached;
	bool incomplete;	/* out of memory while keeping track: say nothing more */
	char *account_error;	/* the last failure of the whole account */
	char *stopped_by;	/* "LABEL: message" of the last collection that failed */
} report;

static void keep(char **dst, const char *s, report *rp)
{
	char *n = strdup(s ? s : "");

	if (!n) {
		rp->incomplete = true;
		return;
	}
	free(*dst);
	*dst = n;
}

static void note_reached(report *rp, const char *label)
{
	if (!label)
		return;
	for (size_t i = 0; i < rp->n_reached; i++)
		if (strcmp(rp->reached[i], label) == 0)
			return;
	char **n = realloc(rp->reached, (rp->n_reached + 1) * sizeof(*n));
	if (!n || !(n[rp->n_reached] = strdup(label))) {
		if (n)
			rp->reached = n;
		rp->incomplete = true;
		return;
	}
	rp->reached = n;
	rp->n_reached++;
}

static void on_event(const ks_sync_event *ev, void *userdata)
{
	report *rp = userdata;

	switch (ev->type) {
	case KS_SYNC_COLLECTION_DONE:
		note_reached(rp, ev->collection);
		break;
	case KS_SYNC_COLLECTION_FAILED:
		note_reached(rp, ev->collection);
		if (ev->collection) {
			char *s = NULL;
			if (asprintf(&s, "%s: %s", ev->collection,
				     ev->message ? ev->message : strerror(-ev->error)) < 0)
				rp->incomplete = true;
			else {
				free(rp->stopped_by);
				rp->stopped_by = s;
			}
		}
		break;
	case KS_SYNC_ACCOUNT_FAILED:
		keep(&rp->account_error, ev->message, rp);
		break;
	case KS_SYNC_CREDENTIALS_REFUSED:
		if (ev->message)
			keep(&rp->account_error, ev->message, rp);
		break;
	default:
		break;
	}
	if (rp->o->on_event)
		rp->o->on_event(ev, rp->o->userdata);
}

static bool in_scope(const ks_collection *col, const char *only)
{
	const char *kind = col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts/" : "calendars/";
	size_t k = strlen(kind);

	if (!only)
		return true;
	if (strncmp(only, kind, k) == 0)
		only += k;
	return strcmp(only, col->name) == 0;
}

/* One KS_SYNC_COLLECTION_SKIPPED for each collection the run was to sync and said nothing
 * about. */
static void report_skipped(report *rp, ks_engine *e, const ks_account_config *a, int r)
{
	ks_collection *cols = NULL;
	size_t n = 0;
	char why[2048];

	if (rp->incomplete || !e->cache || ks_cache_list_collections(e->cache, a->name, &cols,
								      &n) < 0)
		return;
	if (r == -ECANCELED)
		snprintf(why, sizeof(why), "not synced: the run was stopped before it");
	else if (r == -EKEYREVOKED)
		snprintf(why, sizeof(why), "not synced: the server refused these credentials "
			 "before; ksync tries again when they change, or on 'ksyncctl sync'");
	else if (rp->account_error)
		snprintf(why, sizeof(why), "not synced: the account failed: %s", rp->account_error);
	else if (rp->stopped_by)
		snprintf(why, sizeof(why), "not synced: the run stopped after %s", rp->stopped_by);
	else
		snprintf(why, sizeof(why), "not synced: the account failed: %s", strerror(-r));
	for (size_t i = 0; i < n; i++) {
		const ks_collection *col = &cols[i];
		char label[KS_NAME_MAX + 16];
		bool reached = false;

		if (!col->enabled || !in_scope(col, rp->o->only_collection))
			continue;
		snprintf(label, sizeof(label), "%s/%s",
			 col->kind == KS_COLLECTION_ADDRESSBOOK ? "contacts" : "calendars",
			 col->name);
		for (size_t k = 0; k < rp->n_reached && !reached; k++)
			reached = strcmp(rp->reached[k], label) == 0;
		if (reached)
			continue;
		ks_sync_event ev = { .type = KS_SYNC_COLLECTION_SKIPPED, .account = a->name,
				     .collection = label, .error = r, .message = why };
		if (rp->o->on_event)
			rp->o->on_event(&ev, rp->o->userdata);
	}
	ks_collection_free_array(cols, n);
}

int ks_sync_account(ks_engine *e, const ks_account_config *a, const ks_sync_opts *o)
{
	report rp = { .o = o };
	ks_sync_opts wrapped = *o;
	int r;

	wrapped.on_event = on_event;
	wrapped.userdata = &rp;
	r = ks_sync_account_run(e, a, &wrapped);
	/* A run that failed as a whole (or stopped) left collections unsynced; one that
	 * returns 0 or a count of failed collections reached every one of them. */
	if (r < 0)
		report_skipped(&rp, e, a, r);
	for (size_t i = 0; i < rp.n_reached; i++)
		free(rp.reached[i]);
	free(rp.reached);
	free(rp.account_error);
	free(rp.stopped_by);
	return r;
}

int ks_report_collection_synced(ks_cache *c, ks_collection *col)
{
	int64_t now = (int64_t) time(NULL);
	int r;

	/* A run that changed nothing writes nothing: the time is stored again only once the
	 * stored one is KS_SYNCED_AT_STEP old (the daemon keeps the exact time while it
	 * runs). */
	if (col->synced_at > 0 && now >= col->synced_at && now - col->synced_at < KS_SYNCED_AT_STEP)
		return 0;
	r = ks_cache_set_collection_synced(c, col->id, now);
	if (r >= 0)
		col->synced_at = now;
	return r;
}

/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine_p.h"
#include "macro.h"

/* Deletions within this long of the first are counted together by the mass-deletion guard. */
#define GUARD_WINDOW_SECS 3600

/* The mass-deletion guard. Deletions on either side are counted in a window of
 * GUARD_WINDOW_SECS that starts with the first of them, against the items the collection had
 * then (its size at the last complete sync), so that deleting in small steps (runs, pages of
 * a truncated listing) goes no further than deleting at once. Going past half of those items
 * (in a collection of more than KS_MASS_DELETE_MIN), or deleting every one of them (two or
 * more), whatever the size, stops the collection with a message unless the user allowed it.
 * side names where the deletions would happen, why what points at them, remedy what else the
 * user may do. The deletions that pass are counted before they are made, so that a crash can
 * only make the guard stricter; runs that delete nothing write nothing. */
int ks_guard_deletions(coll_run *c, size_t n_delete, const char *side, const char *why,
		       const char *remedy)
{
	ks_collection *col = c->L.col;
	int64_t now = (int64_t) time(NULL);
	bool open = col->guard_base >= 0 && now >= col->guard_at &&
		    now - col->guard_at < GUARD_WINDOW_SECS;
	int64_t at = open ? col->guard_at : now;
	size_t base = open ? (size_t) col->guard_base : c->rows_at_start;
	size_t total = (open ? (size_t) col->guard_deleted : 0) + n_delete;
	bool all = base >= 2 && total >= base;
	bool most = base > KS_MASS_DELETE_MIN && total * 2 > base;
	int r;

	if (n_delete == 0)
		return 0;
	if ((all || most) && !c->R->o->allow_mass_delete) {
		char before[64] = "";

		if (total > n_delete)
			snprintf(before, sizeof(before), ", after %zu deleted within the hour",
				 total - n_delete);
		ks_run_fail(c->R, KS_SYNC_COLLECTION_FAILED, c->L.label, -EDQUOT,
			    "refusing to delete %zu of %zu items %s (%s)%s; nothing was deleted. "
			    "%sIf this is intended, run `ksyncctl sync --allow-mass-delete %s/%s` "
			    "(or ksyncd --once --allow-mass-delete)", n_delete, base, side, why,
			    before, remedy ? remedy : "", c->R->acc->name, c->L.label);
		return -EDQUOT;
	}
	r = ks_cache_set_collection_guard(c->R->e->cache, col->id, at, (int64_t) base,
					  (int64_t) total);
	if (r < 0)
		return r;
	col->guard_at = at;
	col->guard_base = (int64_t) base;
	col->guard_deleted = (int64_t) total;
	return 0;
}

bool ks_guard_counted_before(const coll_run *c, const char *href, const char *filename)
{
	const ks_intent *in = href ? ks_coll_find_intent(c, href) : NULL;

	if (in && in->op == KS_INTENT_DELETE)
		return true;
	for (size_t i = 0; filename && i < c->n_refusals; i++)
		if (c->refusals[i].op == KS_INTENT_DELETE &&
		    strcmp(c->refusals[i].filename, filename) == 0)
			return true;
	return false;
}

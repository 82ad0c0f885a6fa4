/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "engine_p.h"
#include "macro.h"

static void escape_controls(const char *in, char *out, size_t n);

void ks_run_emit(run *R, const ks_sync_event *ev)
{
	if (R->o->on_event)
		R->o->on_event(ev, R->o->userdata);
}
/* Messages quote file names and servers' words: a newline or an escape sequence in either
 * must not forge a line of the log or drive the terminal, so control characters are written
 * as C escapes; so are C1 controls (CSI, U+009B, acts like ESC [) and the bidi overrides,
 * which reorder what the reader sees. */
static void escape_controls(const char *in, char *out, size_t n)
{
	size_t k = 0;

	for (; *in && k + 7 < n; in++) {
		unsigned char ch = (unsigned char) *in;
		const unsigned char *u = (const unsigned char *) in;
		if (ch == '\n' || ch == '\t' || ch == '\r') {
			out[k++] = '\\';
			out[k++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
		} else if (ch < 0x20 || ch == 0x7f)
			k += (size_t) snprintf(out + k, n - k, "\\x%02x", ch);
		else if (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f) {
			k += (size_t) snprintf(out + k, n - k, "\\u%04x", u[1]);
			in++;
		} else if (u[0] == 0xe2 && ((u[1] == 0x80 && u[2] >= 0xaa && u[2] <= 0xae) ||
					    (u[1] == 0x81 && u[2] >= 0xa6 && u[2] <= 0xa9))) {
			/* U+202A..U+202E and U+2066..U+2069 */
			k += (size_t) snprintf(out + k, n - k, "\\u%04x",
					       0x2000 | ((u[1] & 0x3f) << 6) | (u[2] & 0x3f));
			in += 2;
		} else
			out[k++] = (char) ch;
	}
	out[k] = 0;
}

static void __attribute__((format(printf, 3, 0)))
run_reportv(run *R, const ks_sync_event *base, const char *fmt, va_list ap)
{
	char raw[1024], msg[4096];

	vsnprintf(raw, sizeof(raw), fmt, ap);
	escape_controls(raw, msg, sizeof(msg));
	if (base->error == -EUCLEAN) {
		R->damaged = true;
		if (R->first_pass)
			return;
	}
	ks_sync_event ev = *base;
	ev.account = R->acc->name;
	ev.message = msg;
	ks_run_emit(R, &ev);
}

void ks_run_report(run *R, const ks_sync_event *ev, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	run_reportv(R, ev, fmt, ap);
	va_end(ap);
}

void ks_run_skip_file(run *R, const char *coll, const char *file, int err, const char *fmt, ...)
{
	ks_sync_event ev = {
		.type = KS_SYNC_ITEM_SKIPPED, .collection = coll, .error = err, .file = file,
	};
	va_list ap;

	va_start(ap, fmt);
	run_reportv(R, &ev, fmt, ap);
	va_end(ap);
}

void ks_run_fail(run *R, ks_sync_event_type t, const char *coll, int err, const char *fmt, ...)
{
	ks_sync_event ev = { .type = t, .collection = coll, .error = err };
	va_list ap;

	va_start(ap, fmt);
	run_reportv(R, &ev, fmt, ap);
	va_end(ap);
}

int ks_strv_push(char ***v, size_t *n, size_t *cap, const char *s)
{
	if (*n >= KS_COLLECTION_MAX_ITEMS)
		return -E2BIG;
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		char **nv = realloc(*v, ncap * sizeof(char *));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	char *d = strdup(s);
	if (!d)
		return -ENOMEM;
	(*v)[(*n)++] = d;
	return 0;
}

void ks_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int ks_strv_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

bool ks_run_cancelled(const run *R)
{
	return R->o->cancel && *R->o->cancel;
}

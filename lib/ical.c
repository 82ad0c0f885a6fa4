/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libical/ical.h>

#include "ical_p.h"
#include "limits.h"
#include "macro.h"
#include "text_p.h"

/* libical frees components recursively and runs out of stack a few hundred thousand levels
 * down; real objects nest three deep (VCALENDAR, VEVENT, VALARM). */
#define ICAL_MAX_DEPTH 16

/* libical scans the rest of a content line once per parameter, so a line costs about
 * (parameters x length). This caps the sum over all lines at roughly a quarter of a second of
 * parsing, far above what real objects need (an 8 MiB attachment line with a few parameters). A
 * line's parameters all come before its last ':', and libical does not split at a ';' right
 * after a backslash, so only the other ';' before the last ':' count. */
#define ICAL_MAX_PARAM_WORK ((uint64_t) 1 << 28)

/* libical expands a VTIMEZONE's rules from their DTSTART up to the year it converts, and a rule
 * like FREQ=SECONDLY keeps it busy for hours; a yearly rule that never matches costs about 0.1 s.
 * A VTIMEZONE is used only when it has at most this many rules, each yearly in one month. */
#define ICAL_TZ_MAX_RULES 8

/* libical drops a property whose value it cannot parse (empty, a date that is none...), and
 * that removal walks the component's whole property list: 25,000 such lines in one component
 * took five seconds, 100,000 two minutes. Past this many property lines in one component, only
 * the properties the reader fields come from reach libical, at most ICAL_MAX_EXTRA_LINES of
 * them; the file keeps every line. */
#define ICAL_MAX_COMPONENT_LINES 1000
#define ICAL_MAX_EXTRA_LINES 100

KS_DEFINE_CLEANUP(icalcomponent, icalcomponent_free);

/* Copies s[0..n) without the blanks around it, or NULL when nothing is left (*ret_oom tells
 * that apart from an allocation failure). */
static char *strndup_trim(const char *s, size_t n, bool *ret_oom)
{
	char *t;

	while (n > 0 && ks_is_space(*s)) {
		s++;
		n--;
	}
	while (n > 0 && ks_is_space(s[n - 1]))
		n--;
	*ret_oom = false;
	if (n == 0)
		return NULL;
	t = strndup(s, n);
	if (!t)
		*ret_oom = true;
	return t;
}

/* Whether libical would print a warning on stderr for the content line l[0..ll): it does for the
 * properties whose value type it cannot read ("icalvalue_new_from_string got an unknown value
 * type"). ksync reads neither of them. libical takes the name up to the first ';' or ':', with
 * blanks after it dropped, and compares it ignoring case. */
static bool libical_warns_about(const char *l, size_t ll)
{
	static const char *const names[] = { "TASK-MODE", "X-LIC-CLASS" };
	size_t k = 0;

	while (k < ll && l[k] != ';' && l[k] != ':')
		k++;
	if (k == ll)
		return false;
	while (k > 0 && (ks_is_space(l[k - 1]) || l[k - 1] == '\v' || l[k - 1] == '\f'))
		k--;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (k == strlen(names[i]) && ks_has_prefix_nocase(l, k, names[i]))
			return true;
	return false;
}

/* The properties the reader fields and time zones are computed from. */
static bool info_property(const char *l, size_t ll)
{
	static const char *const names[] = {
		"UID", "SUMMARY", "DTSTART", "DTEND", "DUE", "DURATION", "RRULE", "RDATE", "STATUS",
		"PRIORITY", "RECURRENCE-ID", "TZID", "TZOFFSETFROM", "TZOFFSETTO", "TZNAME",
	};
	size_t k = strcspn(l, ";:\n");

	if (k > ll)
		k = ll;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (k == strlen(names[i]) && ks_has_prefix_nocase(l, k, names[i]))
			return true;
	return false;
}

/* Makes the text that libical parses: unfolded, so that every content line is one line and
 * libical never sees a continuation, and ending in a line break. While at it, rejects what would
 * make libical crash or take quadratic time, and leaves out the lines it would print about. */
static int ical_prepare(const char *data, size_t len, char **ret, size_t *ret_len,
			char **reterr_msg)
{
	_cleanup_free_ char *t = NULL;
	size_t i = 0, n = 0;
	/* libical's component level lies between these two: upper counts every line that might
	 * be a BEGIN and only certain ENDs, lower the other way round. */
	long upper = 0, lower = 0;
	uint64_t work = 0;
	size_t lines = 0;
	/* property lines of the open components, by depth */
	unsigned depth = 0, props[ICAL_MAX_DEPTH + 2] = { 0 }, extra[ICAL_MAX_DEPTH + 2] = { 0 };

	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	while (i < len && ks_is_space(data[i]))
		i++;

	t = malloc(len - i + 2);
	if (!t)
		return -ENOMEM;
	for (; i < len; i++) {
		if (data[i] == '\r' && i + 2 < len && data[i + 1] == '\n' &&
		    ks_is_blank(data[i + 2])) {
			i += 2;
			continue;
		}
		if (data[i] == '\n' && i + 1 < len && ks_is_blank(data[i + 1])) {
			i += 1;
			continue;
		}
		t[n++] = data[i];
	}
	if (n == 0 || t[n - 1] != '\n')
		t[n++] = '\n';
	t[n] = 0;

	size_t w = 0;
	for (size_t at = 0; at < n;) {
		char *l = t + at;
		const char *eol = memchr(l, '\n', n - at);
		size_t ll = (size_t) (eol - l), semis = 0;
		const char *colon = memrchr(l, ':', ll);

		for (size_t k = 0; colon && l + k < colon; k++)
			if (l[k] == ';' && (k == 0 || l[k - 1] != '\\'))
				semis++;
		work += (uint64_t) semis * ll;
		if (work > ICAL_MAX_PARAM_WORK)
			return ks_set_error(reterr_msg, -EBADMSG,
					     "too many parameters in long iCalendar lines");

		if (++lines > KS_CARD_MAX_LINES)
			return ks_set_error(reterr_msg, -EFBIG,
					     "iCalendar object has more than %d lines",
					     KS_CARD_MAX_LINES);
		if (ks_has_prefix_nocase(l, ll, "BEGIN") && ++upper > ICAL_MAX_DEPTH)
			return ks_set_error(reterr_msg, -EBADMSG,
					     "iCalendar components nested more than %d deep",
					     ICAL_MAX_DEPTH);
		if (ks_has_prefix_nocase(l, ll, "BEGIN:") || ks_has_prefix_nocase(l, ll, "BEGIN;"))
			lower++;
		if (ks_has_prefix_nocase(l, ll, "END:") || ks_has_prefix_nocase(l, ll, "END;"))
			upper--;
		/* libical prints a warning on stderr for an END without its BEGIN. */
		if (ks_has_prefix_nocase(l, ll, "END") && --lower < 0)
			return ks_set_error(reterr_msg, -EBADMSG,
					     "END without BEGIN in iCalendar data");

		at += ll + 1;
		if (libical_warns_about(l, ll))
			continue;
		if (ks_has_prefix_nocase(l, ll, "BEGIN:")) {
			if (depth <= ICAL_MAX_DEPTH) {
				depth++;
				props[depth] = extra[depth] = 0;
			}
		} else if (ks_has_prefix_nocase(l, ll, "END:")) {
			if (depth > 0)
				depth--;
		} else if (++props[depth] > ICAL_MAX_COMPONENT_LINES) {
			if (!info_property(l, ll))
				continue;
			if (++extra[depth] > ICAL_MAX_EXTRA_LINES)
				return ks_set_error(reterr_msg, -EBADMSG,
						     "more than %d properties in one iCalendar "
						     "component", ICAL_MAX_COMPONENT_LINES);
		}
		memmove(t + w, l, ll + 1);
		w += ll + 1;
	}
	t[w] = 0;

	*ret_len = w;
	*ret = TAKE_PTR(t);
	return 0;
}

/* Hands libical one line at a time. icalparser_parse_string() looks for the next line break
 * again for every 80-byte piece of a line, which is quadratic in the length of a line. */
typedef struct line_source {
	const char *pos;
	const char *end;
	const char *eol;	/* the '\n' ending the line pos is in */
} line_source;

static char *line_source_next(char *out, size_t size, void *userdata)
{
	line_source *s = userdata;

	if (s->pos >= s->end || size < 2) {
		if (size > 0)
			out[0] = 0;
		return NULL;
	}
	if (!s->eol || s->eol < s->pos) {
		s->eol = memchr(s->pos, '\n', (size_t) (s->end - s->pos));
		if (!s->eol)
			s->eol = s->end - 1;
	}
	/* libical takes a full buffer not ending in '\n' as "more of this line follows". */
	size_t n = KS_MIN((size_t) (s->eol + 1 - s->pos), size - 1);
	memcpy(out, s->pos, n);
	out[n] = 0;
	s->pos += n;
	return out;
}

static icalcomponent *ical_parse(const char *text, size_t len)
{
	line_source src = { .pos = text, .end = text + len };
	icalerrorstate es = icalerror_get_error_state(ICAL_MALFORMEDDATA_ERROR);
	icalcomponent *root;
	icalparser *parser;

	parser = icalparser_new();
	if (!parser)
		return NULL;
	icalparser_set_gen_data(parser, &src);
	/* As icalparser_parse_string() does: malformed data is never fatal. */
	icalerror_set_error_state(ICAL_MALFORMEDDATA_ERROR, ICAL_ERROR_NONFATAL);
	root = icalparser_parse(parser, line_source_next);
	icalerror_set_error_state(ICAL_MALFORMEDDATA_ERROR, es);
	icalparser_free(parser);
	return root;
}

static bool is_item_kind(icalcomponent_kind k)
{
	return k == ICAL_VEVENT_COMPONENT || k == ICAL_VTODO_COMPONENT ||
	       k == ICAL_VJOURNAL_COMPONENT;
}

static bool vtimezone_usable(icalcomponent *vtz)
{
	unsigned observances = 0, rules = 0;
	icalcompiter it = icalcomponent_begin_component(vtz, ICAL_ANY_COMPONENT);

	for (icalcomponent *o = icalcompiter_deref(&it); o; o = icalcompiter_next(&it)) {
		icalcomponent_kind k = icalcomponent_isa(o);

		if (k != ICAL_XSTANDARD_COMPONENT && k != ICAL_XDAYLIGHT_COMPONENT)
			continue;
		observances++;
		for (icalproperty *p = icalcomponent_get_first_property(o, ICAL_RRULE_PROPERTY); p;
		     p = icalcomponent_get_next_property(o, ICAL_RRULE_PROPERTY)) {
			struct icalrecurrencetype rr = icalproperty_get_rrule(p);

			if (++rules > ICAL_TZ_MAX_RULES)
				return false;
			if (rr.freq != ICAL_YEARLY_RECURRENCE)
				return false;
			if (rr.by_second[0] != ICAL_RECURRENCE_ARRAY_MAX ||
			    rr.by_minute[0] != ICAL_RECURRENCE_ARRAY_MAX ||
			    rr.by_hour[0] != ICAL_RECURRENCE_ARRAY_MAX ||
			    rr.by_year_day[0] != ICAL_RECURRENCE_ARRAY_MAX ||
			    rr.by_week_no[0] != ICAL_RECURRENCE_ARRAY_MAX)
				return false;
			if (rr.by_month[0] != ICAL_RECURRENCE_ARRAY_MAX &&
			    rr.by_month[1] != ICAL_RECURRENCE_ARRAY_MAX)
				return false;
		}
	}
	return observances > 0;
}

/* The zone a TZID used in c stands for: a VTIMEZONE next to c, else the same name in libical's
 * time zone database; NULL when neither knows it. */
static icaltimezone *zone_for(icalcomponent *c, const char *tzid)
{
	icalcomponent *vcal = icalcomponent_get_parent(c);
	icaltimezone *z;

	/* An Olson name is looked up in the builtin database first: libical keeps those zones
	 * and their expanded transitions for the whole process, where a VTIMEZONE of the object
	 * would be expanded again for every item (most of the CPU of a large first sync). The
	 * fields computed here only serve to list items; the file keeps the object's own zone. */
	z = icaltimezone_get_builtin_timezone(tzid);
	if (z)
		return z;
	if (vcal) {
		icalcompiter it = icalcomponent_begin_component(vcal, ICAL_VTIMEZONE_COMPONENT);
		bool found = false, usable = true;

		/* All of them: libical picks any one among VTIMEZONEs with the same TZID. */
		for (icalcomponent *vtz = icalcompiter_deref(&it); vtz;
		     vtz = icalcompiter_next(&it)) {
			icalproperty *p = icalcomponent_get_first_property(vtz, ICAL_TZID_PROPERTY);
			const char *id = p ? icalproperty_get_tzid(p) : NULL;

			if (!id || strcmp(id, tzid) != 0)
				continue;
			found = true;
			if (!vtimezone_usable(vtz))
				usable = false;
		}
		if (found && usable) {
			z = icalcomponent_get_timezone(vcal, tzid);
			if (z)
				return z;
		}
	}
	return icaltimezone_get_builtin_timezone_from_tzid(tzid);
}

/* libical takes "T089999" or month 00 as they are; such a time is no time. */
static bool fields_in_range(const struct icaltimetype *t)
{
	if (t->year < 1 || t->year > 9999 || t->month < 1 || t->month > 12 || t->day < 1 ||
	    t->day > icaltime_days_in_month(t->month, t->year))
		return false;
	return t->is_date || (t->hour >= 0 && t->hour <= 23 && t->minute >= 0 &&
			      t->minute <= 59 && t->second >= 0 && t->second <= 60);
}

/* Reads the DATE or DATE-TIME of p. *ret_zone is the zone it is in: UTC, a resolved TZID, or
 * NULL for floating time and dates. Returns false when p holds no usable time. */
static bool prop_time(icalcomponent *c, icalproperty *p, struct icaltimetype *ret,
		      icaltimezone **ret_zone)
{
	icalvalue *v;
	struct icaltimetype t;
	icaltimezone *zone = NULL;

	if (!p)
		return false;
	v = icalproperty_get_value(p);
	if (!v)
		return false;
	switch (icalvalue_isa(v)) {
	case ICAL_DATE_VALUE:
		t = icalvalue_get_date(v);
		break;
	case ICAL_DATETIME_VALUE:
		t = icalvalue_get_datetime(v);
		break;
	default:
		return false;
	}
	if (icaltime_is_null_time(t) || !icaltime_is_valid_time(t) || !fields_in_range(&t))
		return false;

	if (t.is_date)
		zone = NULL;
	else if (icaltime_is_utc(t))
		zone = icaltimezone_get_utc_timezone();
	else {
		icalparameter *tp = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
		const char *tzid = tp ? icalparameter_get_tzid(tp) : NULL;

		/* A TZID nobody knows leaves the time floating. */
		if (tzid)
			zone = zone_for(c, tzid);
	}
	t.zone = NULL;
	*ret = t;
	*ret_zone = zone;
	return true;
}

static struct icaltimetype to_utc(struct icaltimetype t, icaltimezone *zone)
{
	icaltimezone *utc = icaltimezone_get_utc_timezone();

	if (t.is_date || !zone)
		return t;
	if (zone != utc)
		icaltimezone_convert_time(&t, zone, utc);
	t.zone = utc;
	return t;
}

/* Formats t as item_p.h describes; *ret is NULL for a time out of the 4-digit year range. */
static int time_string(struct icaltimetype t, char **ret)
{
	int r;

	if (!fields_in_range(&t)) {
		*ret = NULL;
		return 0;
	}
	if (t.is_date)
		r = asprintf(ret, "%04d-%02d-%02d", t.year, t.month, t.day);
	else
		r = asprintf(ret, "%04d-%02d-%02dT%02d:%02d:%02d%s", t.year, t.month, t.day, t.hour,
			     t.minute, t.second, icaltime_is_utc(t) ? "Z" : "");
	return r < 0 ? -ENOMEM : 0;
}

static int prop_time_string(icalcomponent *c, icalproperty_kind kind, char **ret)
{
	struct icaltimetype t;
	icaltimezone *zone;

	*ret = NULL;
	if (!prop_time(c, icalcomponent_get_first_property(c, kind), &t, &zone))
		return 0;
	return time_string(to_utc(t, zone), ret);
}

/* DTSTART + DURATION. A duration of days and weeks is nominal (RFC 5545 3.3.6): it is added
 * on the wall clock, so that a day is a day across a DST change; hours and smaller units are
 * exact and are added in UTC. */
static int end_from_duration(icalcomponent *c, char **ret)
{
	icalproperty *dp = icalcomponent_get_first_property(c, ICAL_DURATION_PROPERTY);
	struct icaldurationtype d;
	struct icaltimetype t;
	icaltimezone *zone;

	*ret = NULL;
	if (!dp || !prop_time(c, icalcomponent_get_first_property(c, ICAL_DTSTART_PROPERTY), &t,
			      &zone))
		return 0;
	d = icalproperty_get_duration(dp);
	if (icaldurationtype_is_bad_duration(d))
		return 0;
	/* libical walks month by month through what it adds; a century is more than enough. */
	uint64_t secs = ((uint64_t) d.weeks * 7 + d.days) * 86400 + (uint64_t) d.hours * 3600 +
			(uint64_t) d.minutes * 60 + d.seconds;
	if (secs > (uint64_t) 100 * 366 * 86400)
		return 0;

	if (d.hours == 0 && d.minutes == 0 && d.seconds == 0)
		t = to_utc(icaltime_add(t, d), zone);
	else
		t = icaltime_add(to_utc(t, zone), d);
	return time_string(t, ret);
}

/* SUMMARY as libical unescaped it, trimmed; NULL when absent or empty. */
static int summary_string(icalcomponent *c, char **ret)
{
	icalproperty *p = icalcomponent_get_first_property(c, ICAL_SUMMARY_PROPERTY);
	const char *s = p ? icalproperty_get_summary(p) : NULL;
	bool oom;

	*ret = s ? strndup_trim(s, strlen(s), &oom) : NULL;
	return s && oom ? -ENOMEM : 0;
}

/* STATUS as written ("NEEDS-ACTION", or an X- value), trimmed; NULL when absent or empty. Not
 * for text values: libical escapes those again when it prints them. */
static int status_string(icalcomponent *c, char **ret)
{
	icalproperty *p = icalcomponent_get_first_property(c, ICAL_STATUS_PROPERTY);
	_cleanup_free_ char *s = NULL;
	bool oom;

	*ret = NULL;
	if (!p)
		return 0;
	s = icalproperty_get_value_as_string_r(p);
	if (!s)
		return 0;
	*ret = strndup_trim(s, strlen(s), &oom);
	return oom ? -ENOMEM : 0;
}

typedef struct ical_scan {
	icalcomponent *first;
	icalcomponent *master;
	char *uid;
	size_t n;
	size_t no_uid;
	bool uid_conflict;
} ical_scan;

static int scan_calendar(icalcomponent *vcal, ical_scan *s)
{
	icalcompiter it = icalcomponent_begin_component(vcal, ICAL_ANY_COMPONENT);

	for (icalcomponent *c = icalcompiter_deref(&it); c; c = icalcompiter_next(&it)) {
		const char *u;
		char *uid;
		bool oom;

		if (!is_item_kind(icalcomponent_isa(c)))
			continue;
		s->n++;
		if (!s->first)
			s->first = c;
		if (!s->master && !icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY))
			s->master = c;

		u = icalcomponent_get_uid(c);
		uid = u ? strndup_trim(u, strlen(u), &oom) : NULL;
		if (u && oom)
			return -ENOMEM;
		if (!uid)
			s->no_uid++;
		else if (!s->uid)
			s->uid = uid;
		else {
			if (strcmp(s->uid, uid) != 0)
				s->uid_conflict = true;
			free(uid);
		}
	}
	return 0;
}

int ks_ical_parse_info(const char *data, size_t len, ks_item_info *ret, char **reterr_msg)
{
	_cleanup_(icalcomponent_freep) icalcomponent *root = NULL;
	_cleanup_(ks_item_info_done) ks_item_info info = {};
	_cleanup_free_ char *text = NULL;
	ical_scan s = {};
	size_t bad, text_len = 0;
	int r;

	assert(data || len == 0);
	assert(ret);

	if (len > KS_CARD_MAX)
		return ks_set_error(reterr_msg, -EFBIG,
				     "iCalendar object is %zu bytes, more than the limit of %d",
				     len, KS_CARD_MAX);
	/* libical copies bytes through as they are; the cache and D-Bus need valid UTF-8. */
	if (!ks_item_utf8_valid(data, len, true, &bad))
		return ks_set_error(reterr_msg, -EBADMSG, "invalid UTF-8 at byte %zu", bad);

	r = ical_prepare(data, len, &text, &text_len, reterr_msg);
	if (r < 0)
		return r;

	/* libical keeps its last error in a global; start and leave it clean. */
	icalerror_clear_errno();
	root = ical_parse(text, text_len);
	icalerror_clear_errno();
	if (!root)
		return ks_set_error(reterr_msg, -EBADMSG, "cannot parse iCalendar data");

	if (icalcomponent_isa(root) == ICAL_VCALENDAR_COMPONENT)
		r = scan_calendar(root, &s);
	else if (icalcomponent_isa(root) == ICAL_XROOT_COMPONENT) {
		/* Several VCALENDARs in a row: libical puts them under an XROOT. */
		icalcompiter it = icalcomponent_begin_component(root, ICAL_VCALENDAR_COMPONENT);

		r = 0;
		for (icalcomponent *v = icalcompiter_deref(&it); v && r >= 0;
		     v = icalcompiter_next(&it))
			r = scan_calendar(v, &s);
	} else {
		return ks_set_error(reterr_msg, -EBADMSG, "no VCALENDAR in iCalendar data");
	}
	info.uid = s.uid;
	if (r < 0)
		return r;

	if (!s.first)
		return ks_set_error(reterr_msg, -EBADMSG,
				     "no VEVENT, VTODO or VJOURNAL in VCALENDAR");
	if (s.uid_conflict)
		return ks_set_error(reterr_msg, -ENOTUNIQ, "components with different UIDs");
	if (!info.uid)
		return ks_set_error(reterr_msg, -ENODATA, "iCalendar object has no UID");
	if (s.no_uid > 0)
		return ks_set_error(reterr_msg, -ENOTUNIQ, "%zu of %zu components have no UID",
				     s.no_uid, s.n);

	switch (icalcomponent_isa(s.first)) {
	case ICAL_VEVENT_COMPONENT:
		info.kind = KS_ITEM_VEVENT;
		break;
	case ICAL_VTODO_COMPONENT:
		info.kind = KS_ITEM_VTODO;
		break;
	default:
		info.kind = KS_ITEM_VJOURNAL;
		break;
	}

	icalcomponent *c = s.master ? s.master : s.first;

	r = summary_string(c, &info.summary);
	if (r < 0)
		return r;
	r = prop_time_string(c, ICAL_DTSTART_PROPERTY, &info.dtstart);
	if (r < 0)
		return r;
	if (icalcomponent_get_first_property(c, ICAL_DTEND_PROPERTY))
		r = prop_time_string(c, ICAL_DTEND_PROPERTY, &info.dtend);
	else
		r = end_from_duration(c, &info.dtend);
	if (r < 0)
		return r;
	r = prop_time_string(c, ICAL_DUE_PROPERTY, &info.due);
	if (r < 0)
		return r;
	r = status_string(c, &info.status);
	if (r < 0)
		return r;

	icalproperty *pp = icalcomponent_get_first_property(c, ICAL_PRIORITY_PROPERTY);
	if (pp) {
		int prio = icalproperty_get_priority(pp);
		/* RFC 5545 3.8.1.9: 0 (undefined) to 9. */
		info.priority = prio >= 0 && prio <= 9 ? prio : 0;
	}
	info.has_rrule = icalcomponent_get_first_property(c, ICAL_RRULE_PROPERTY) != NULL;

	icalerror_clear_errno();
	*ret = info;
	info = (ks_item_info) {};
	return 0;
}

/* The times of one event or task: DTEND (DUE) with DURATION, or an end before the start, or
 * a start and an end of different value types, make a component no server should take
 * (RFC 5545 3.6.1, 3.6.2). */
static const char *times_problem(icalcomponent *c)
{
	bool todo = icalcomponent_isa(c) == ICAL_VTODO_COMPONENT;
	icalproperty_kind end_kind = todo ? ICAL_DUE_PROPERTY : ICAL_DTEND_PROPERTY;
	icalproperty *end = icalcomponent_get_first_property(c, end_kind);
	icalproperty *start = icalcomponent_get_first_property(c, ICAL_DTSTART_PROPERTY);
	struct icaltimetype ts, te;
	icaltimezone *zs, *ze;

	if (end && icalcomponent_get_first_property(c, ICAL_DURATION_PROPERTY))
		return todo ? "DUE and DURATION together" : "DTEND and DURATION together";
	if (!end || !start || !prop_time(c, start, &ts, &zs) || !prop_time(c, end, &te, &ze))
		return NULL;
	if (ts.is_date != te.is_date)
		return todo ? "DTSTART and DUE of different value types"
			    : "DTSTART and DTEND of different value types";
	/* Floating times and dates compare as they are written. */
	if (icaltime_compare(to_utc(te, ze), to_utc(ts, zs)) < 0)
		return todo ? "it is due before it starts" : "it ends before it starts";
	return NULL;
}

int ks_ical_check_times(const char *data, size_t len, char **reterr_msg)
{
	_cleanup_(icalcomponent_freep) icalcomponent *root = NULL;
	_cleanup_free_ char *text = NULL;
	size_t text_len = 0;
	int r;

	assert(data || len == 0);
	if (len > KS_CARD_MAX)
		return -EFBIG;
	r = ical_prepare(data, len, &text, &text_len, reterr_msg);
	if (r < 0)
		return r;
	icalerror_clear_errno();
	root = ical_parse(text, text_len);
	icalerror_clear_errno();
	if (!root)
		return ks_set_error(reterr_msg, -EBADMSG, "cannot parse iCalendar data");

	icalcomponent *cals[1] = { root };
	icalcompiter ci = icalcomponent_begin_component(root, ICAL_VCALENDAR_COMPONENT);
	bool xroot = icalcomponent_isa(root) == ICAL_XROOT_COMPONENT;
	for (icalcomponent *vcal = xroot ? icalcompiter_deref(&ci) : cals[0]; vcal;
	     vcal = xroot ? icalcompiter_next(&ci) : NULL) {
		for (icalcomponent *c = icalcomponent_get_first_component(vcal, ICAL_ANY_COMPONENT);
		     c; c = icalcomponent_get_next_component(vcal, ICAL_ANY_COMPONENT)) {
			const char *why;
			if (icalcomponent_isa(c) != ICAL_VEVENT_COMPONENT &&
			    icalcomponent_isa(c) != ICAL_VTODO_COMPONENT)
				continue;
			why = times_problem(c);
			if (why) {
				icalerror_clear_errno();
				return ks_set_error(reterr_msg, -EDOM, "%s", why);
			}
		}
	}
	icalerror_clear_errno();
	return 0;
}

/* ---- time windows ------------------------------------------------------------------------ */

/* A date or a floating time is in whichever zone the reader is in: UTC-12 to UTC+14, plus
 * the day a date lasts when the event says nothing of its end. */
#define WINDOW_SLACK ((int64_t) 26 * 3600)
/* Instances of a rule looked at before the event counts as in the window all the same. */
#define WINDOW_MAX_INSTANCES 20000
/* An event longer than this is taken to last this long (a bad DTEND keeps it in). */
#define WINDOW_MAX_LENGTH ((int64_t) 100 * 366 * 86400)

typedef struct window {
	int64_t start, end;	/* INT64_MIN and INT64_MAX when open */
	int64_t next;		/* earliest instance start past end, 0 when none was seen */
	bool in;
} window;

static int64_t utc_secs(struct icaltimetype t, icaltimezone *zone)
{
	return (int64_t) icaltime_as_timet(to_utc(t, zone));
}

/* One instance starting at s (UTC, or the wall clock with slack), lasting len. */
static void window_instance(window *w, int64_t s, int64_t len, int64_t slack)
{
	if (s - slack > w->end) {
		if (!w->next || s - slack < w->next)
			w->next = s - slack;
		return;
	}
	if (s + len + slack >= w->start)
		w->in = true;
}

static void window_rrule(window *w, icalproperty *p, struct icaltimetype ts, icaltimezone *zone,
			 int64_t len, int64_t slack)
{
	struct icalrecurrencetype rr = icalproperty_get_rrule(p);
	icalrecur_iterator *it;

	if (rr.freq == ICAL_NO_RECURRENCE) {
		w->in = true;
		return;
	}
	/* A rule that ended before the window started has no instance in it. */
	if (!icaltime_is_null_time(rr.until) && fields_in_range(&rr.until)) {
		int64_t until = icaltime_is_utc(rr.until) ? (int64_t) icaltime_as_timet(rr.until)
							  : utc_secs(rr.until, zone);
		if (until + len + WINDOW_SLACK < w->start)
			return;
	}
	it = icalrecur_iterator_new(rr, ts);
	if (!it) {
		w->in = true;
		return;
	}
	for (unsigned i = 0;; i++) {
		struct icaltimetype o = icalrecur_iterator_next(it);

		if (icaltime_is_null_time(o))
			break;
		if (i >= WINDOW_MAX_INSTANCES) {
			w->in = true;
			break;
		}
		int64_t s = utc_secs(o, zone);
		if (s - slack > w->end) {
			window_instance(w, s, len, slack);
			break;
		}
		window_instance(w, s, len, slack);
		if (w->in)
			break;
	}
	icalrecur_iterator_free(it);
}

static void window_rdate(window *w, icalcomponent *c, icalproperty *p, int64_t len)
{
	struct icaldatetimeperiodtype v = icalproperty_get_rdate(p);
	struct icaltimetype t = icaltime_is_null_time(v.time) ? v.period.start : v.time;
	icalparameter *tp = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
	const char *tzid = tp ? icalparameter_get_tzid(tp) : NULL;
	icaltimezone *zone = NULL;

	if (icaltime_is_null_time(t) || !fields_in_range(&t)) {
		w->in = true;
		return;
	}
	if (icaltime_is_utc(t))
		zone = icaltimezone_get_utc_timezone();
	else if (tzid && !t.is_date)
		zone = zone_for(c, tzid);
	t.zone = NULL;
	if (!icaltime_is_null_time(v.period.end) && fields_in_range(&v.period.end)) {
		int64_t e = utc_secs(v.period.end, zone);
		if (e - utc_secs(t, zone) > len)
			len = e - utc_secs(t, zone);
	}
	window_instance(w, utc_secs(t, zone), KS_MIN(len, WINDOW_MAX_LENGTH),
			t.is_date || !zone ? WINDOW_SLACK : 0);
}

/* One VEVENT: its own instance, or each of its rules' and dates'. Overridden instances are
 * components of their own, looked at on their own; one moved out of the window while its
 * rule's instance is in keeps the event in, which errs on the side of keeping it. */
static void window_event(window *w, icalcomponent *c)
{
	struct icaltimetype ts, te;
	icaltimezone *zs, *ze;
	int64_t len = 0;

	/* libical drops a property it cannot parse and says so in X-LIC-ERROR: a DTEND or an
	 * RRULE may be missing from what it gives. */
	if (icalcomponent_get_first_property(c, ICAL_XLICERROR_PROPERTY) ||
	    !prop_time(c, icalcomponent_get_first_property(c, ICAL_DTSTART_PROPERTY), &ts, &zs)) {
		w->in = true;
		return;
	}
	icalproperty *end = icalcomponent_get_first_property(c, ICAL_DTEND_PROPERTY);
	icalproperty *dur = icalcomponent_get_first_property(c, ICAL_DURATION_PROPERTY);
	if (end) {
		if (!prop_time(c, end, &te, &ze)) {
			w->in = true;
			return;
		}
		len = utc_secs(te, ze) - utc_secs(ts, zs);
	} else if (dur) {
		struct icaldurationtype d = icalproperty_get_duration(dur);
		if (icaldurationtype_is_bad_duration(d)) {
			w->in = true;
			return;
		}
		len = ((int64_t) d.weeks * 7 + d.days) * 86400 + (int64_t) d.hours * 3600 +
		      (int64_t) d.minutes * 60 + d.seconds;
	} else if (ts.is_date)
		len = 86400;	/* RFC 5545 3.6.1: a date alone lasts the day */
	len = len < 0 ? 0 : KS_MIN(len, WINDOW_MAX_LENGTH);
	int64_t slack = ts.is_date || !zs ? WINDOW_SLACK : 0;

	icalproperty *rrule = icalcomponent_get_first_property(c, ICAL_RRULE_PROPERTY);
	icalproperty *rdate = icalcomponent_get_first_property(c, ICAL_RDATE_PROPERTY);
	/* DTSTART is always the first instance (RFC 5545 3.8.5.3). */
	window_instance(w, utc_secs(ts, zs), len, slack);
	for (icalproperty *p = rrule; p && !w->in;
	     p = icalcomponent_get_next_property(c, ICAL_RRULE_PROPERTY))
		window_rrule(w, p, ts, zs, len, slack);
	for (icalproperty *p = rdate; p && !w->in;
	     p = icalcomponent_get_next_property(c, ICAL_RDATE_PROPERTY))
		window_rdate(w, c, p, len);
}

int ks_ical_in_window(const char *data, size_t len, int64_t start, int64_t end,
		      int64_t *ret_next)
{
	_cleanup_(icalcomponent_freep) icalcomponent *root = NULL;
	_cleanup_free_ char *text = NULL;
	window w = {
		.start = start ? start : INT64_MIN, .end = end ? end : INT64_MAX,
	};
	size_t text_len = 0, events = 0;
	int r;

	assert(data || len == 0);
	if (ret_next)
		*ret_next = 0;
	if (len > KS_CARD_MAX || !ks_item_utf8_valid(data, len, true, NULL))
		return 1;
	r = ical_prepare(data, len, &text, &text_len, NULL);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return 1;
	icalerror_clear_errno();
	root = ical_parse(text, text_len);
	if (!root) {
		icalerror_clear_errno();
		return 1;
	}
	icalcomponent *cals[1] = { root };
	icalcompiter ci = icalcomponent_begin_component(root, ICAL_VCALENDAR_COMPONENT);
	bool xroot = icalcomponent_isa(root) == ICAL_XROOT_COMPONENT;
	if (!xroot && icalcomponent_isa(root) != ICAL_VCALENDAR_COMPONENT)
		w.in = true;
	for (icalcomponent *vcal = xroot ? icalcompiter_deref(&ci) : cals[0]; vcal && !w.in;
	     vcal = xroot ? icalcompiter_next(&ci) : NULL) {
		for (icalcomponent *c = icalcomponent_get_first_component(vcal, ICAL_ANY_COMPONENT);
		     c && !w.in; c = icalcomponent_get_next_component(vcal, ICAL_ANY_COMPONENT)) {
			icalcomponent_kind k = icalcomponent_isa(c);
			/* Tasks and journal entries are never left out. */
			if (k == ICAL_VTODO_COMPONENT || k == ICAL_VJOURNAL_COMPONENT)
				w.in = true;
			else if (k == ICAL_VEVENT_COMPONENT) {
				events++;
				window_event(&w, c);
			}
		}
	}
	icalerror_clear_errno();
	if (w.in || events == 0)
		return 1;
	if (ret_next)
		*ret_next = w.next;
	return 0;
}

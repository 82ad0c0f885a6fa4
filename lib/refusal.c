/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "dav_p.h"
#include "ical_p.h"
#include "macro.h"
#include "refusal_p.h"
#include "text_p.h"
#include "vcard_p.h"
#include "xml_p.h"

bool ks_refusal_is_item_status(long status)
{
	return status >= 400 && status < 500 && status != 401 && status != 407 &&
	       status != 404 && status != 412 && status != 408 && status != 429;
}

/* RFC 4791 5.3.2.1, 6352 6.3.2.1, 4918 16, 3744 7.1.1: the conditions a server names when it
 * refuses an object, in words. */
static const struct {
	const char *condition;
	const char *words;
} conditions[] = {
	{ "CARDDAV:valid-address-data", "the server does not take this vCard as valid" },
	{ "CARDDAV:supported-address-data", "the server does not take this vCard version or "
					    "format" },
	{ "CARDDAV:no-uid-conflict", "another card on the server has this UID" },
	{ "CARDDAV:max-resource-size", "the card is larger than the server allows" },
	{ "CALDAV:valid-calendar-data", "the server does not take this iCalendar object as "
					"valid" },
	{ "CALDAV:valid-calendar-object-resource", "the server takes one item (one UID, with "
						   "its exceptions) per object" },
	{ "CALDAV:supported-calendar-component", "this calendar does not take this kind of item "
						 "(a task in a calendar of events, or the other "
						 "way round)" },
	{ "CALDAV:supported-calendar-data", "the server does not take this calendar format" },
	{ "CALDAV:no-uid-conflict", "another item on the server has this UID" },
	{ "CALDAV:max-resource-size", "the item is larger than the server allows" },
	{ "CALDAV:min-date-time", "the item is dated earlier than the server allows" },
	{ "CALDAV:max-date-time", "the item is dated later than the server allows" },
	{ "CALDAV:max-instances", "the event repeats more often than the server allows" },
	{ "CALDAV:max-attendees-per-instance", "the event has more attendees than the server "
					       "allows" },
	{ "DAV:need-privileges", "no permission to write here" },
};

/* The first line of a vCard or iCalendar object whose name is name, unfolded (a prefix test
 * on each physical line is enough for the names looked for here). */
static bool has_line(const char *data, size_t len, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < len;) {
		const char *e = memchr(data + i, '\n', len - i);
		size_t end = e ? (size_t) (e - data) : len;
		if (end - i > n && ks_has_prefix_nocase(data + i, end - i, name) &&
		    (data[i + n] == ':' || data[i + n] == ';'))
			return true;
		i = end + 1;
	}
	return false;
}

/* What a vCard lacks that RFC 2426 or 6350 wants, or NULL. */
static const char *vcard_problem(const char *data, size_t len)
{
	bool v3 = memmem(data, len, "VERSION:3.0", 11) || memmem(data, len, "VERSION:2.1", 11);

	if (!has_line(data, len, "FN"))
		return "a vCard needs an FN property";
	if (v3 && !has_line(data, len, "N"))
		return "a vCard 3.0 needs an N property";
	return NULL;
}

/* What in an iCalendar object strict servers refuse, or NULL. */
static const char *ical_problem(const char *data, size_t len, char **why)
{
	int r = ks_ical_check_times(data, len, why);

	if (r == -EDOM && *why)
		return *why;
	bool event = memmem(data, len, "BEGIN:VEVENT", 12) != NULL;
	bool todo = memmem(data, len, "BEGIN:VTODO", 11) != NULL;
	if (event && todo)
		return "it holds an event and a task: one object holds one kind of item";
	return NULL;
}

int ks_refusal_reason(long status, const char *body, size_t body_len, const char *data,
		      size_t len, char **ret)
{
	_cleanup_(ks_xml_error_done) ks_xml_error e = {};
	_cleanup_free_ char *ical_why = NULL;
	const char *words = NULL, *local = NULL;
	ks_buf b = {};
	int r;

	assert(ret);
	r = body ? ks_xml_error_body(body, body_len, &e) : -EBADMSG;
	if (r == -ENOMEM)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(conditions) && e.precondition[0]; i++)
		if (strcmp(conditions[i].condition, e.precondition) == 0)
			words = conditions[i].words;
	bool card = data && len > 0 && memmem(data, len, "BEGIN:VCARD", 11);
	if (data && len > 0 && (!e.precondition[0] || strstr(e.precondition, "valid-")))
		local = card ? vcard_problem(data, len) : ical_problem(data, len, &ical_why);

	if (local)
		r = ks_buf_puts(&b, local);
	else if (words)
		r = ks_buf_puts(&b, words);
	else if (status == 207 && e.status)
		r = ks_buf_printf(&b, "HTTP %d%s%s in a multistatus", e.status, REASON(e.status));
	else
		r = ks_buf_printf(&b, "HTTP %ld%s%s", status, REASON(status));
	if (r >= 0 && e.precondition[0])
		r = ks_buf_printf(&b, " (%s)", e.precondition);
	if (r >= 0 && e.text)
		r = ks_buf_printf(&b, ": %s", e.text);
	else if (r >= 0 && !e.precondition[0] && local)
		r = ks_buf_printf(&b, " (HTTP %ld)", status);
	if (r < 0) {
		ks_buf_done(&b);
		return r;
	}
	*ret = ks_buf_steal(&b);
	return *ret ? 0 : -ENOMEM;
}

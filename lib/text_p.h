/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Character tests for the ASCII-only names of vCard, iCalendar and HTTP. The C library's
 * toupper() and strcasecmp() follow the locale (Turkish dotless i), so they are not used. */

static inline char ks_ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char) (c - 'a' + 'A') : c;
}

static inline char ks_ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

/* Space or tab: what may stand around a value on its line. */
static inline bool ks_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* A blank or a line end; a lone CR is left over from "\r\r\n" endings. */
static inline bool ks_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* What surrounds a value that is not part of it. */
static inline bool ks_is_trim(char c)
{
	return ks_is_space(c);
}

static inline bool ks_streq_nocase(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (ks_ascii_upper(*a) != ks_ascii_upper(*b))
			return false;
	return *a == *b;
}

/* Whether the first n bytes of s start with the upper-case ASCII word w, in any case. */
static inline bool ks_has_prefix_nocase(const char *s, size_t n, const char *w)
{
	size_t wl = strlen(w);

	if (n < wl)
		return false;
	for (size_t i = 0; i < wl; i++)
		if (ks_ascii_upper(s[i]) != w[i])
			return false;
	return true;
}

/* Makes room for element n of an array with *cap slots of size bytes. Returns the array, which
 * may have moved, or NULL on OOM with the old array left as it was. */
static inline void *ks_array_grow(void *a, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return a;
	size_t ncap = *cap ? *cap * 2 : 4;
	if (ncap > SIZE_MAX / size)
		return NULL;
	void *na = realloc(a, ncap * size);
	if (!na)
		return NULL;
	*cap = ncap;
	return na;
}

/* Replaces *reterr_msg (if reterr_msg is not NULL) with the formatted message; returns r, so
 * that a failure is reported and returned in one statement. */
int ks_set_error(char **reterr_msg, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dav_p.h"
#include "hash_p.h"
#include "limits.h"
#include "macro.h"
#include "vdir_p.h"

static bool safe_char(char c)
{
	return isalnum((unsigned char) c) || strchr("@._+-", c);
}

bool ks_vdir_name_is_safe(const char *s)
{
	size_t n = 0;

	if (!s || !*s || *s == '.')
		return false;
	for (; s[n]; n++)
		if (!safe_char(s[n]) || (unsigned char) s[n] >= 0x80)
			return false;
	return n <= KS_NAME_MAX;
}

static bool has_ext(const char *s, size_t n, const char *ext)
{
	size_t e = strlen(ext);
	return n > e && strncasecmp(s + n - e, ext, e) == 0;
}

int ks_vdir_item_name(const char *uid, const char *href, char **ret)
{
	char *out;

	if (uid && ks_vdir_name_is_safe(uid)) {
		out = strdup(uid);
		goto done;
	}
	if (href) {
		_cleanup_free_ char *base = NULL;
		if (ks_href_basename(href, &base) >= 0) {
			size_t n = strlen(base);
			if (has_ext(base, n, ".vcf") || has_ext(base, n, ".ics"))
				base[n - 4] = 0;
			if (ks_vdir_name_is_safe(base)) {
				out = TAKE_PTR(base);
				goto done;
			}
		}
	}
	const char *key = uid ? uid : href ? href : "";
	char hex[65];
	ks_sha256_hex(key, strlen(key), hex);
	out = malloc(34);
	if (out)
		snprintf(out, 34, "h%.32s", hex);
done:
	if (!out)
		return -ENOMEM;
	*ret = out;
	return 0;
}

int ks_vdir_collection_name(const char *href, char **ret)
{
	_cleanup_free_ char *base = NULL;
	int r = ks_href_basename(href, &base);

	if (r == -EINVAL) {
		*ret = strdup("collection");
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return r;
	size_t n = strlen(base);
	if (n > KS_NAME_MAX)
		base[n = KS_NAME_MAX] = 0;
	for (size_t i = 0; i < n; i++)
		if (!safe_char(base[i]) || (unsigned char) base[i] >= 0x80)
			base[i] = '_';
	if (base[0] == '.')
		base[0] = '_';
	*ret = TAKE_PTR(base);
	return 0;
}

char *ks_vdir_color(const char *s)
{
	char out[8];
	size_t n;

	if (!s)
		return NULL;
	while (isspace((unsigned char) *s))
		s++;
	n = strcspn(s, " \t\r\n");
	if (n < 4 || s[0] != '#')
		return NULL;
	for (size_t i = 1; i < n; i++)
		if (!isxdigit((unsigned char) s[i]))
			return NULL;
	if (n == 4 || n == 5)
		snprintf(out, sizeof(out), "#%c%c%c%c%c%c", s[1], s[1], s[2], s[2], s[3], s[3]);
	else if (n == 7 || n == 9)
		snprintf(out, sizeof(out), "#%.6s", s + 1);
	else
		return NULL;
	for (char *p = out; *p; p++)
		*p = (char) toupper((unsigned char) *p);
	return strdup(out);
}

char *ks_vdir_displayname(const char *s)
{
	if (!s)
		return NULL;
	while (*s && (isspace((unsigned char) *s) || (unsigned char) *s < 0x20))
		s++;
	char *out = strndup(s, KS_XML_MAX_TEXT);
	if (!out)
		return NULL;
	/* The name is shown by readers and in terminals: C0, DEL and C1 controls (CSI is
	 * U+009B) and bidi overrides, which reorder what is displayed, become spaces. */
	unsigned char *w = (unsigned char *) out;
	for (unsigned char *p = w; *p;) {
		size_t skip = 0;
		if (*p < 0x20 || *p == 0x7f)
			skip = 1;
		else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			skip = 2;
		else if (p[0] == 0xe2 && ((p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) ||
					  (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)))
			skip = 3;
		if (skip) {
			*w++ = ' ';
			p += skip;
		} else
			*w++ = *p++;
	}
	*w = 0;
	size_t lead = strspn(out, " ");
	memmove(out, out + lead, strlen(out + lead) + 1);
	size_t n = strlen(out);
	while (n > 0 && out[n - 1] == ' ')
		out[--n] = 0;
	return out;
}

/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf_p.h"
#include "text_p.h"

static int buf_reserve(ks_buf *b, size_t extra)
{
	if (extra > SIZE_MAX / 2 - b->len)
		return -EFBIG;
	size_t need = b->len + extra + 1;
	if (b->max && need - 1 > b->max)
		return -EFBIG;
	if (need <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < need)
		ncap *= 2;
	char *n = realloc(b->data, ncap);
	if (!n)
		return -ENOMEM;
	b->data = n;
	b->cap = ncap;
	return 0;
}

int ks_buf_append(ks_buf *b, const void *p, size_t n)
{
	int r = buf_reserve(b, n);
	if (r < 0)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
	return 0;
}

int ks_buf_puts(ks_buf *b, const char *s)
{
	return ks_buf_append(b, s, strlen(s));
}

int ks_buf_printf(ks_buf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	r = buf_reserve(b, (size_t) n);
	if (r < 0)
		return r;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
	return 0;
}

void ks_buf_reset(ks_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = 0;
}

void ks_buf_done(ks_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *ks_buf_steal(ks_buf *b)
{
	char *s = b->data ? b->data : strdup("");
	b->data = NULL;
	b->len = b->cap = 0;
	return s;
}

int ks_set_error(char **reterr_msg, int r, const char *fmt, ...)
{
	va_list ap;

	if (!reterr_msg)
		return r;
	free(*reterr_msg);
	va_start(ap, fmt);
	if (vasprintf(reterr_msg, fmt, ap) < 0)
		*reterr_msg = NULL;
	va_end(ap);
	return r;
}

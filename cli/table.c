/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "table.h"
#include "util/macro.h"

struct table {
	size_t n_cols;
	char **cells;
	size_t n_cells, cap;
	bool header;
	bool right[16];
};

#define TABLE_MAX_COLS ELEMENTSOF(((table *) NULL)->right)

static int table_take(table *t, char *cell)
{
	if (!cell)
		return -ENOMEM;
	if (t->n_cells == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 32;
		char **n = reallocarray(t->cells, ncap, sizeof(*n));
		if (!n) {
			free(cell);
			return -ENOMEM;
		}
		t->cells = n;
		t->cap = ncap;
	}
	t->cells[t->n_cells++] = cell;
	return 0;
}

int table_new(size_t n_cols, table **ret, ...)
{
	va_list ap;
	int r = 0;

	if (n_cols == 0 || n_cols > TABLE_MAX_COLS)
		return -EINVAL;
	table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->n_cols = n_cols;
	va_start(ap, ret);
	const char *h = va_arg(ap, const char *);
	t->header = h != NULL;
	for (size_t i = 0; h && r >= 0 && i < n_cols; i++) {
		r = table_add(t, h);
		h = i + 1 < n_cols ? va_arg(ap, const char *) : NULL;
	}
	va_end(ap);
	if (r < 0) {
		table_free(t);
		return r;
	}
	*ret = t;
	return 0;
}

table *table_free(table *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->n_cells; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
	return NULL;
}

void table_align_right(table *t, size_t col)
{
	if (col < t->n_cols)
		t->right[col] = true;
}

int table_add(table *t, const char *cell)
{
	return table_take(t, ctl_sanitize(cell && *cell ? cell : "-", false));
}

int table_addf(table *t, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	r = table_add(t, s);
	free(s);
	return r;
}

size_t table_rows(const table *t)
{
	return t->n_cells / t->n_cols - t->header;
}

int table_print(const table *t, FILE *f, const char *indent)
{
	size_t width[TABLE_MAX_COLS] = {};

	for (size_t i = 0; i < t->n_cells; i++) {
		size_t w = ctl_width(t->cells[i]);
		if (w > width[i % t->n_cols])
			width[i % t->n_cols] = w;
	}
	for (size_t i = 0; i < t->n_cells; i++) {
		size_t col = i % t->n_cols;
		bool last = col == t->n_cols - 1 || i == t->n_cells - 1;
		size_t pad = width[col] - ctl_width(t->cells[i]);

		if (col == 0)
			fputs(indent, f);
		if (t->right[col])
			fprintf(f, "%*s", (int) pad, "");
		fputs(t->cells[i], f);
		if (last) {
			fputc('\n', f);
			continue;
		}
		fprintf(f, "%*s", (int) (t->right[col] ? 2 : pad + 2), "");
	}
	return 0;
}

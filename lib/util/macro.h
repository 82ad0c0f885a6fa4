/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdlib.h>

/* Scope-bound cleanup: the variable's cleanup function runs when it leaves scope. */
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

static inline void ks_freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(ks_freep)

/* Defines NAME##p(T **p) calling func(*p) when *p is not NULL. */
#define KS_DEFINE_CLEANUP(T, func)                      \
	static inline void func##p(T **p)               \
	{                                               \
		if (*p)                                 \
			func(*p);                       \
	}

/* Hands ownership on: yields the pointer and leaves NULL behind. */
#define TAKE_PTR(p)                                     \
	({                                              \
		__typeof__(p) *_pp = &(p);              \
		__typeof__(p) _v = *_pp;                \
		*_pp = NULL;                            \
		_v;                                     \
	})

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* The text of a macro's value: STRINGIFY(4) is "4". */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* Turns a libc "-1 and errno" result into a negative errno, leaving other values alone. */
static inline int ks_neg_errno(int r)
{
	if (r < 0)
		return errno > 0 ? -errno : -EIO;
	return r;
}

#define KS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KS_MAX(a, b) ((a) > (b) ? (a) : (b))

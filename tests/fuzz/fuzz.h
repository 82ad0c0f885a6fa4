/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The libFuzzer entry point. Each fuzz_<parser>.c defines it; libFuzzer (make fuzz) or
 * standalone.c (make check-fuzz) calls it once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test. Unlike assert(), it is never compiled out: a broken
 * invariant must stop the fuzzer and the replay alike. */
#define fuzz_check(cond)                                                                \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__,      \
				__LINE__, #cond);                                       \
			abort();                                                        \
		}                                                                       \
	} while (0)

/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* SHA-256 (FIPS 180-4), for content hashes and names derived from UIDs. */
typedef struct ks_sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t n;
} ks_sha256;

void ks_sha256_init(ks_sha256 *c);
void ks_sha256_update(ks_sha256 *c, const void *data, size_t len);
void ks_sha256_final(ks_sha256 *c, uint8_t out[32]);
/* Writes the 64 lowercase hex digits and a NUL into out. */
void ks_sha256_hex(const void *data, size_t len, char out[65]);

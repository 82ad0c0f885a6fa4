/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <nettle/sha2.h>

/* SHA-256 (FIPS 180-4) from nettle, for content hashes and names derived from UIDs. A context is
 * a plain value: it lives on the caller's stack, none of these calls allocates or fails, and a
 * copy (ks_sha256 b = a;) goes on from the same point as the original. */
typedef struct ks_sha256 {
	struct sha256_ctx ctx;
} ks_sha256;

/* Starts a new digest in c. */
void ks_sha256_init(ks_sha256 *c);
/* Feeds len bytes of data into c; data may be NULL when len is 0. */
void ks_sha256_update(ks_sha256 *c, const void *data, size_t len);
/* Writes the 32-byte digest into out and wipes c; c must be initialised again before reuse. */
void ks_sha256_final(ks_sha256 *c, uint8_t out[32]);
/* Writes the 64 lowercase hex digits of the digest of data and a NUL into out. */
void ks_sha256_hex(const void *data, size_t len, char out[65]);

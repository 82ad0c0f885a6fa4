/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <string.h>

#include "hash_p.h"

void ks_sha256_init(ks_sha256 *c)
{
	assert(c);
	sha256_init(&c->ctx);
}

void ks_sha256_update(ks_sha256 *c, const void *data, size_t len)
{
	assert(c);
	assert(data || len == 0);
	/* nettle copies into its block buffer with memcpy(), undefined from NULL even for 0 bytes. */
	if (len == 0)
		return;
	sha256_update(&c->ctx, len, data);
}

void ks_sha256_final(ks_sha256 *c, uint8_t out[32])
{
	assert(c && out);
	sha256_digest(&c->ctx, SHA256_DIGEST_SIZE, out);
	/* The context may have seen secret-derived data; don't leave it on the caller's stack. */
	explicit_bzero(c, sizeof(*c));
}

void ks_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	ks_sha256 c;
	uint8_t md[32];

	assert(out);
	ks_sha256_init(&c);
	ks_sha256_update(&c, data, len);
	ks_sha256_final(&c, md);
	for (unsigned i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[64] = 0;
}

/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <string.h>

#include "hash_p.h"
#include "macro.h"

/* FIPS 180-4, 4.2.2: the first 32 bits of the fractional parts of the cube roots of the first
 * 64 primes. */
static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

static void sha256_block(uint32_t h[8], const uint8_t block[64])
{
	uint32_t w[64];

	for (unsigned t = 0; t < 16; t++)
		w[t] = load_be32(block + 4 * t);
	for (unsigned t = 16; t < 64; t++) {
		uint32_t s0 = rotr32(w[t - 15], 7) ^ rotr32(w[t - 15], 18) ^ (w[t - 15] >> 3);
		uint32_t s1 = rotr32(w[t - 2], 17) ^ rotr32(w[t - 2], 19) ^ (w[t - 2] >> 10);
		w[t] = w[t - 16] + s0 + w[t - 7] + s1;
	}

	uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
	uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];

	for (unsigned t = 0; t < 64; t++) {
		uint32_t S1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + S1 + ch + sha256_k[t] + w[t];
		uint32_t S0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = S0 + maj;

		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}

	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
}

void ks_sha256_init(ks_sha256 *c)
{
	/* FIPS 180-4, 5.3.3 */
	static const uint32_t h0[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	assert(c);
	memcpy(c->h, h0, sizeof(h0));
	c->len = 0;
	c->n = 0;
}

void ks_sha256_update(ks_sha256 *c, const void *data, size_t len)
{
	const uint8_t *p = data;

	assert(c);
	assert(data || len == 0);
	/* memcpy() from NULL is undefined even for 0 bytes. */
	if (len == 0)
		return;
	c->len += len;

	if (c->n > 0) {
		size_t k = KS_MIN(64 - c->n, len);
		memcpy(c->buf + c->n, p, k);
		c->n += k;
		p += k;
		len -= k;
		if (c->n < 64)
			return;
		sha256_block(c->h, c->buf);
		c->n = 0;
	}

	/* Whole blocks straight from the caller's memory, without a copy. */
	for (; len >= 64; p += 64, len -= 64)
		sha256_block(c->h, p);

	if (len > 0) {
		memcpy(c->buf, p, len);
		c->n = len;
	}
}

void ks_sha256_final(ks_sha256 *c, uint8_t out[32])
{
	/* The padded message ends with its length in bits, big-endian, in 64 bits. */
	uint64_t bits = c->len * 8;

	assert(c && out);
	c->buf[c->n++] = 0x80;
	if (c->n > 56) {
		memset(c->buf + c->n, 0, 64 - c->n);
		sha256_block(c->h, c->buf);
		c->n = 0;
	}
	memset(c->buf + c->n, 0, 56 - c->n);
	store_be32(c->buf + 56, (uint32_t) (bits >> 32));
	store_be32(c->buf + 60, (uint32_t) bits);
	sha256_block(c->h, c->buf);

	for (unsigned i = 0; i < 8; i++)
		store_be32(out + 4 * i, c->h[i]);

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

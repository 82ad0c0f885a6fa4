/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hash_p.h"
#include "macro.h"

static void to_hex(const uint8_t md[32], char out[65])
{
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf"). */
static const struct {
	const char *msg;
	const char *hex;
} fips_vectors[] = {
	{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
	{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
	  "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
	  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
};

static void test_fips_vectors(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(fips_vectors); i++) {
		char hex[65];

		ks_sha256_hex(fips_vectors[i].msg, strlen(fips_vectors[i].msg), hex);
		assert_string_equal(hex, fips_vectors[i].hex);
	}
}

static void test_fips_vectors_bytewise(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(fips_vectors); i++) {
		const char *m = fips_vectors[i].msg;
		ks_sha256 c;
		uint8_t md[32];
		char hex[65];

		ks_sha256_init(&c);
		for (size_t j = 0; m[j]; j++)
			ks_sha256_update(&c, m + j, 1);
		ks_sha256_final(&c, md);
		to_hex(md, hex);
		assert_string_equal(hex, fips_vectors[i].hex);
	}
}

/* One million 'a', fed in chunks whose sizes do not line up with the 64-byte block. */
static void test_million_a(void **state)
{
	static const size_t chunks[] = { 1, 7, 63, 64, 65, 127, 1000, 4093 };
	char *a = malloc(4096);
	ks_sha256 c;
	uint8_t md[32];
	char hex[65];
	size_t done = 0;

	assert_non_null(a);
	memset(a, 'a', 4096);
	ks_sha256_init(&c);
	for (unsigned i = 0; done < 1000000; i++) {
		size_t k = KS_MIN(chunks[i % ELEMENTSOF(chunks)], 1000000 - done);
		ks_sha256_update(&c, a, k);
		done += k;
	}
	ks_sha256_final(&c, md);
	to_hex(md, hex);
	assert_string_equal(hex,
			    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(a);
}

/* Lengths around the padding boundaries: 55 is the longest message whose padding fits in one
 * block, 56..63 need a second block. */
static void test_padding_boundaries(void **state)
{
	static const struct {
		size_t n;
		const char *hex;
	} v[] = {
		{ 1, "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb" },
		{ 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
		{ 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
		{ 57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6" },
		{ 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
		{ 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
		{ 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
		{ 111, "6374f73208854473827f6f6a3f43b1f53eaa3b82c21c1a6d69a2110b2a79baad" },
		{ 112, "f54353008a2553262ecdc4a34749563ba0950e8b0fc8652780b0a614b99683c1" },
		{ 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
		{ 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c" },
		{ 127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a" },
		{ 128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e" },
		{ 129, "c12cb024a2e5551cca0e08fce8f1c5e314555cc3fef6329ee994a3db752166ae" },
		{ 1000, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3" },
	};
	char a[1000];

	memset(a, 'a', sizeof(a));
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		char hex[65];

		ks_sha256_hex(a, v[i].n, hex);
		assert_string_equal(hex, v[i].hex);
	}
}

/* Every split of a message into two updates gives the same digest as one update. */
static void test_split_invariance(void **state)
{
	uint8_t msg[1024];
	char want[65];

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t) i;
	ks_sha256_hex(msg, sizeof(msg), want);
	assert_string_equal(want,
			    "785b0751fc2c53dc14a4ce3d800e69ef9ce1009eb327ccf458afe09c242c26c9");

	for (size_t cut = 0; cut <= 200; cut++) {
		ks_sha256 c;
		uint8_t md[32];
		char hex[65];

		ks_sha256_init(&c);
		ks_sha256_update(&c, msg, cut);
		ks_sha256_update(&c, NULL, 0);
		ks_sha256_update(&c, msg + cut, sizeof(msg) - cut);
		ks_sha256_final(&c, md);
		to_hex(md, hex);
		assert_string_equal(hex, want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fips_vectors),
		cmocka_unit_test(test_fips_vectors_bytewise),
		cmocka_unit_test(test_million_a),
		cmocka_unit_test(test_padding_boundaries),
		cmocka_unit_test(test_split_invariance),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

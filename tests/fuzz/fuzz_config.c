/* SPDX-License-Identifier: MIT */
/* ks_config_load() on a file holding the input. The file is created once per process with
 * mkstemp() under /tmp and rewritten for every input. */

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "ksync.h"

static char conf_path[] = "/tmp/ksync-fuzz-config-XXXXXX";
static int conf_fd = -1;

static void remove_conf(void)
{
	if (conf_fd >= 0)
		(void) unlink(conf_path);
}

static void write_conf(const uint8_t *data, size_t size)
{
	if (conf_fd < 0) {
		conf_fd = mkstemp(conf_path);
		fuzz_check(conf_fd >= 0);
		atexit(remove_conf);
	}
	fuzz_check(ftruncate(conf_fd, 0) == 0);
	size_t off = 0;
	while (off < size) {
		ssize_t n = pwrite(conf_fd, data + off, size - off, (off_t) off);
		fuzz_check(n > 0);
		off += (size_t) n;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ks_config *c = NULL;
	char *err = NULL;
	int r;

	write_conf(data, size);
	r = ks_config_load(conf_path, &c, &err);
	if (r >= 0) {
		fuzz_check(c);
		fuzz_check(c->accounts || c->n_accounts == 0);
		for (size_t i = 0; i < c->n_accounts; i++) {
			const ks_account_config *a = &c->accounts[i];

			fuzz_check(a->name && a->name[0] && !strchr(a->name, '/'));
			fuzz_check(ks_config_find_account(c, a->name) == a);
			fuzz_check(a->url);
		}
		ks_config_free(c);
	} else {
		fuzz_check(r == -EINVAL || r == -ENOMEM);
		if (r == -EINVAL) {
			/* Every problem is reported as "path:line: message". */
			fuzz_check(err);
			size_t pl = strlen(conf_path);
			for (const char *line = err; line; line = strchr(line, '\n')) {
				if (*line == '\n')
					line++;
				fuzz_check(strncmp(line, conf_path, pl) == 0 && line[pl] == ':');
			}
		}
	}
	free(err);
	return 0;
}

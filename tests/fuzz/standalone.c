/* SPDX-License-Identifier: MIT */
/* Replays corpora through LLVMFuzzerTestOneInput without libFuzzer, so that gcc builds (and
 * SANITIZE=1 builds) run every saved input in make check. Each argument is a directory, whose
 * regular files are run in name order, or a single file. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static int read_file(const char *path, uint8_t **ret, size_t *ret_size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	/* Exactly size bytes and no terminating NUL, as libFuzzer passes them, so that a read
	 * past the end is caught by ASan here too. */
	size_t size = (size_t) st.st_size;
	uint8_t *data = malloc(size ? size : 1);
	if (!data) {
		close(fd);
		return -ENOMEM;
	}
	size_t off = 0;
	while (off < size) {
		ssize_t n = read(fd, data + off, size - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int r = n < 0 ? -errno : -EIO;
			free(data);
			close(fd);
			return r;
		}
		off += (size_t) n;
	}
	close(fd);
	*ret = data;
	*ret_size = size;
	return 0;
}

static int run_file(const char *path)
{
	uint8_t *data = NULL;
	size_t size = 0;
	int r = read_file(path, &data, &size);

	if (r < 0) {
		fprintf(stderr, "Failed to read '%s': %s\n", path, strerror(-r));
		return r;
	}
	/* Named before the run, so that the input behind a crash is on stderr already. */
	if (getenv("KSYNC_FUZZ_VERBOSE"))
		fprintf(stderr, "running %s (%zu bytes)\n", path, size);
	(void) LLVMFuzzerTestOneInput(data, size);
	free(data);
	return 0;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int skip_dot(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
	const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	size_t n_inputs = 0;
	int failed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", prog);
		return EXIT_FAILURE;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: cannot access '%s': %s\n", prog, argv[i],
				strerror(errno));
			failed = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (run_file(argv[i]) < 0)
				failed = 1;
			else
				n_inputs++;
			continue;
		}

		struct dirent **ents = NULL;
		int n = scandir(argv[i], &ents, skip_dot, name_cmp);
		if (n < 0) {
			fprintf(stderr, "%s: cannot list '%s': %s\n", prog, argv[i],
				strerror(errno));
			failed = 1;
			continue;
		}
		for (int j = 0; j < n; j++) {
			char path[4096];
			struct stat fst;

			snprintf(path, sizeof(path), "%s/%s", argv[i], ents[j]->d_name);
			if (stat(path, &fst) == 0 && S_ISREG(fst.st_mode)) {
				if (run_file(path) < 0)
					failed = 1;
				else
					n_inputs++;
			}
			free(ents[j]);
		}
		free(ents);
	}
	if (n_inputs == 0 && !failed) {
		fprintf(stderr, "%s: no inputs found\n", prog);
		failed = 1;
	}
	printf("%s: %zu inputs replayed%s\n", prog, n_inputs, failed ? ", with errors" : "");
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

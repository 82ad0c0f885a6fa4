/*
 * rusage OUTFILE COMMAND [ARG]... — run COMMAND, then write one line to OUTFILE:
 *   <wall s> <user s> <sys s> <peak RSS kB> <wait status>
 * and exit with COMMAND's exit code (128 + signal when it was killed).
 *
 * bench.py measures clients through this helper because a child's ru_maxrss keeps the peak RSS
 * of the process it was forked from: spawned straight from the bench's Python process, every
 * client would report at least the bench's own size. Forked from here, the floor is this
 * helper's few hundred kB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double ts(const struct timespec *t)
{
	return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static double tv(const struct timeval *t)
{
	return (double)t->tv_sec + (double)t->tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	struct rusage ru;
	int status;
	pid_t pid;
	FILE *f;

	if (argc < 3) {
		fprintf(stderr, "usage: rusage OUTFILE COMMAND [ARG]...\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid < 0) {
		perror("rusage: fork");
		return 2;
	}
	if (pid == 0) {
		execv(argv[2], argv + 2);
		perror(argv[2]);
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR) {
			perror("rusage: wait4");
			return 2;
		}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	f = fopen(argv[1], "w");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	fprintf(f, "%.6f %.6f %.6f %ld %d\n", ts(&t1) - ts(&t0), tv(&ru.ru_utime),
		tv(&ru.ru_stime), ru.ru_maxrss, status);
	if (fclose(f) != 0) {
		perror(argv[1]);
		return 2;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

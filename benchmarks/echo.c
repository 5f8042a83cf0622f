/*
 * echo.c - the baseline peer for benchmarks/sync_cost.py.
 *
 * Usage: echo FD
 *
 * FD is an inherited, connected stream socket.  Reads one 4-byte message
 * and writes the same 4 bytes back, forever, until end-of-file (exit 0).
 * This is the cheapest possible "QEMU": the round trip through it is the
 * floor that the real synchronization cost is compared with.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Read exactly len bytes; return 1 on success, 0 on EOF, -1 on error. */
static int read_all(int fd, unsigned char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n == 0)
			return got == 0 ? 0 : -1;	/* EOF mid-message: error */
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)n;
	}
	return 1;
}

/* Write exactly len bytes; return 0 on success, -1 on error. */
static int write_all(int fd, const unsigned char *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		ssize_t n = write(fd, buf + put, len - put);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		put += (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned char msg[4];
	char *end;
	long fd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s FD\n", argv[0]);
		return 2;
	}
	errno = 0;
	fd = strtol(argv[1], &end, 10);
	if (errno || *end || end == argv[1] || fd < 0 || fd > 0x7fffffff) {
		fprintf(stderr, "echo: bad descriptor number '%s'\n", argv[1]);
		return 2;
	}
	for (;;) {
		int r = read_all((int)fd, msg, sizeof(msg));

		if (r == 0)
			return 0;
		if (r < 0 || write_all((int)fd, msg, sizeof(msg)) < 0) {
			perror("echo");
			return 1;
		}
	}
}

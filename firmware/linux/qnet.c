/*
 * qnet.c - the network roles of the example Linux guest that busybox
 * cannot do: read the guest's monotonic clock to the nanosecond (busybox
 * `date` has no %N, /proc/uptime has 10 ms) and time a bulk TCP transfer
 * in the guest's own clock (docs/linux-guests.md, "Networking").
 *
 *   qnet uptime                  print CLOCK_MONOTONIC, "S.NNNNNNNNN"
 *   qnet link IFACE SECONDS      wait until IFACE can send: carrier on and
 *                                its queue attached (not "noop")
 *   qnet send IP PORT BYTES      connect, send BYTES, shut down the
 *                                sending side, wait for the receiver's
 *                                count, print what was sent and when
 *   qnet recv PORT               accept one connection, read to its end,
 *                                answer with the count, print it
 *   qnet udp IP PORT COUNT PERIOD_MS [TEXT]
 *                                send COUNT datagrams, one every PERIOD_MS,
 *                                TEXT ("\n" a newline; default "seq=<n>"),
 *                                print each reply and its round trip
 *   qnet udp-echo PORT           send every datagram back, forever,
 *                                printing each with its time
 *
 * Under icount the guest's CLOCK_MONOTONIC is simulation time, so the
 * printed durations and rates are in virtual time and the same every run.
 * The sender's time runs from before connect() to the receiver's answer,
 * so it covers the handshake and every byte acknowledged; the receiver's
 * from accept() to the end of the stream.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IFF_LOWER_UP	/* linux/if.h has it, but clashes with net/if.h */
#define IFF_LOWER_UP 0x10000	/* the carrier */
#endif

#define CHUNK 65536

static char buf[CHUNK];

static void die(const char *what)
{
	fprintf(stderr, "qnet: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static unsigned long long number(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end) {
		fprintf(stderr, "qnet: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* "N bytes in S.NNNNNNNNN s, R kbit/s": integers only, so the line is
 * exact and cannot depend on how a libc rounds a double. */
static void report(const char *who, unsigned long long bytes, int64_t ns)
{
	unsigned long long kbit = ns > 0 ? bytes * 8 * 1000000ULL / (uint64_t)ns : 0;

	printf("%s: %llu bytes in %lld.%09lld s, %llu kbit/s\n", who, bytes,
	       (long long)(ns / 1000000000), (long long)(ns % 1000000000), kbit);
	fflush(stdout);
}

static int do_send(const char *ip, const char *port_s, const char *bytes_s)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	unsigned long long bytes = number(bytes_s, "byte count");
	unsigned long long left = bytes, echoed;
	char answer[32];
	ssize_t n, got = 0;
	int64_t t0;
	int fd;

	sa.sin_port = htons((uint16_t)number(port_s, "port"));
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "qnet: bad address '%s'\n", ip);
		return 2;
	}
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)i;
	/* The receiver may still be booting: try again every 100 ms, 10 s. */
	for (int tries = 1;; tries++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		t0 = now_ns();
		if (!connect(fd, (struct sockaddr *)&sa, sizeof sa))
			break;
		if (tries == 100 || (errno != ECONNREFUSED && errno != EHOSTUNREACH))
			die("connect");
		close(fd);
		nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
	}
	while (left) {
		n = write(fd, buf, left < sizeof buf ? left : sizeof buf);
		if (n < 0)
			die("write");
		left -= (unsigned long long)n;
	}
	if (shutdown(fd, SHUT_WR))
		die("shutdown");
	/* The receiver answers with its count once it has read everything. */
	while ((n = read(fd, answer + got, sizeof answer - 1 - got)) > 0)
		got += n;
	if (n < 0)
		die("read");
	report("tcp-send", bytes, now_ns() - t0);
	answer[got] = 0;
	echoed = strtoull(answer, NULL, 10);
	if (echoed != bytes) {
		fprintf(stderr, "qnet: the receiver counted %llu bytes\n", echoed);
		return 1;
	}
	close(fd);
	return 0;
}

static int do_recv(const char *port_s)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_ANY)};
	unsigned long long bytes = 0;
	char answer[32];
	int one = 1, lfd, fd, len;
	int64_t t0;
	ssize_t n;

	sa.sin_port = htons((uint16_t)number(port_s, "port"));
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1))
		die("listen");
	printf("tcp-recv: listening on port %s\n", port_s);
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		die("accept");
	t0 = now_ns();
	while ((n = read(fd, buf, sizeof buf)) > 0)
		bytes += (unsigned long long)n;
	if (n < 0)
		die("read");
	report("tcp-recv", bytes, now_ns() - t0);
	len = snprintf(answer, sizeof answer, "%llu\n", bytes);
	if (write(fd, answer, (size_t)len) != len)
		die("write");
	close(fd);
	close(lfd);
	return 0;
}

/*
 * Whether a RTM_NEWLINK message says the interface can send.  The carrier
 * alone is not enough: the kernel attaches the interface's queue a moment
 * later (linkwatch), and until then it drops every frame ("qdisc noop").
 */
static int link_ready(const struct nlmsghdr *h, int ifindex)
{
	const struct ifinfomsg *ifi = NLMSG_DATA(h);
	const struct rtattr *a = IFLA_RTA(ifi);
	int len = IFLA_PAYLOAD(h);

	if (h->nlmsg_type != RTM_NEWLINK || ifi->ifi_index != ifindex ||
	    !(ifi->ifi_flags & IFF_LOWER_UP))
		return 0;
	for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == IFLA_QDISC)
			return strcmp(RTA_DATA(a), "noop") != 0;
	return 0;
}

/*
 * Wait on netlink rather than poll: under icount a shell loop forking
 * `cat` every few ms costs real instructions, hence wall time, for as long
 * as the link takes (2 s with e1000).
 */
static int do_link(const char *ifname, const char *seconds_s)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK};
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {
		.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK,
		      .nlmsg_flags = NLM_F_REQUEST},
		.i = {.ifi_family = AF_UNSPEC},
	};
	int64_t deadline = now_ns() + (int64_t)number(seconds_s, "timeout") * 1000000000;
	int ifindex = (int)if_nametoindex(ifname);
	static char msg[16384];
	int fd;

	if (!ifindex) {
		fprintf(stderr, "qnet: no interface %s\n", ifname);
		return 1;
	}
	fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	/* Subscribe before asking, so no change falls between the two. */
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa))
		die("netlink");
	req.i.ifi_index = ifindex;
	if (send(fd, &req, sizeof req, 0) < 0)
		die("netlink send");
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - now_ns();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)(left / 1000000) + 1) == 0) {
			fprintf(stderr, "qnet: %s: no link after %s s\n", ifname, seconds_s);
			return 1;
		}
		n = recv(fd, msg, sizeof msg, 0);
		if (n < 0)
			die("netlink recv");
		for (struct nlmsghdr *h = (struct nlmsghdr *)msg; NLMSG_OK(h, n);
		     h = NLMSG_NEXT(h, n))
			if (link_ready(h, ifindex))
				return 0;
	}
}

static void sleep_until(int64_t t)
{
	struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* The console shows a datagram on one line: newlines as \n, other
 * unprintable bytes as \xHH. */
static void print_escaped(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\\')
			fputs("\\\\", stdout);
		else if (c < 0x20 || c > 0x7e)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static int do_udp(const char *ip, const char *port_s, const char *count_s,
		  const char *period_s, const char *text)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	unsigned long long count = number(count_s, "count");
	int64_t period = (int64_t)number(period_s, "period") * 1000000;
	static char out[1500], in[65536];
	size_t len = 0;
	int fd;

	sa.sin_port = htons((uint16_t)number(port_s, "port"));
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "qnet: bad address '%s'\n", ip);
		return 2;
	}
	/* The kernel command line has no newlines: TEXT spells them \n. */
	for (const char *p = text; p && *p && len < sizeof out; p++) {
		if (p[0] == '\\' && p[1] == 'n') {
			out[len++] = '\n';
			p++;
		} else {
			out[len++] = *p;
		}
	}
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
		die("udp socket");
	for (unsigned long long seq = 0; seq < count; seq++) {
		int64_t t0 = now_ns(), rtt;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (!text)
			len = (size_t)snprintf(out, sizeof out, "seq=%llu\n", seq);
		if (send(fd, out, len, 0) < 0)
			die("udp send");
		/* A reply counts if it comes within the period. */
		for (;;) {
			int64_t left = t0 + period - now_ns();

			if (left <= 0 || poll(&p, 1, (int)((left + 999999) / 1000000)) <= 0) {
				printf("udp: no reply from %s:%s to datagram %llu\n",
				       ip, port_s, seq);
				break;
			}
			n = recv(fd, in, sizeof in, 0);
			if (n < 0 && errno == ECONNREFUSED) {  /* ICMP port unreachable */
				printf("udp: %s:%s refused datagram %llu\n", ip, port_s, seq);
				break;
			}
			if (n < 0)
				die("udp recv");
			rtt = now_ns() - t0;
			printf("udp: %zd bytes from %s:%s, datagram %llu, time=%lld.%06lld ms: ",
			       n, ip, port_s, seq, (long long)(rtt / 1000000),
			       (long long)(rtt % 1000000));
			print_escaped(in, (size_t)n);
			putchar('\n');
			break;
		}
		fflush(stdout);
		sleep_until(t0 + period);
	}
	return 0;
}

static _Noreturn void do_udp_echo(const char *port_s)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_ANY)};
	struct sockaddr_in from;
	socklen_t fromlen;
	ssize_t n;
	int fd;

	sa.sin_port = htons((uint16_t)number(port_s, "port"));
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa))
		die("udp-echo");
	for (;;) {
		char peer[INET_ADDRSTRLEN];
		int64_t t;

		fromlen = sizeof from;
		n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
		if (n < 0)
			continue;
		t = now_ns();
		sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fromlen);
		/* Answer first, print after: the console costs time. */
		inet_ntop(AF_INET, &from.sin_addr, peer, sizeof peer);
		printf("udp-echo: %zd bytes from %s:%u at %lld.%09lld s: ", n, peer,
		       ntohs(from.sin_port), (long long)(t / 1000000000),
		       (long long)(t % 1000000000));
		print_escaped(buf, (size_t)n);
		putchar('\n');
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "uptime")) {
		int64_t t = now_ns();

		printf("%lld.%09lld\n", (long long)(t / 1000000000),
		       (long long)(t % 1000000000));
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "link"))
		return do_link(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "send"))
		return do_send(argv[2], argv[3], argv[4]);
	if (argc == 3 && !strcmp(argv[1], "recv"))
		return do_recv(argv[2]);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "udp"))
		return do_udp(argv[2], argv[3], argv[4], argv[5], argc == 7 ? argv[6] : NULL);
	if (argc == 3 && !strcmp(argv[1], "udp-echo"))
		do_udp_echo(argv[2]);
	fprintf(stderr, "usage: qnet uptime | link IFACE SECONDS | send IP PORT BYTES | "
		"recv PORT | udp IP PORT COUNT PERIOD_MS [TEXT] | udp-echo PORT\n");
	return 2;
}

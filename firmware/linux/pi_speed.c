/*
 * pi_speed.c - the PI speed controller of firmware/arm/pi.c as a Linux
 * user-space program: the example application of docs/linux-guests.md.
 *
 * Inputs "setpoint" and "speed" (rad/s) arrive as signal lines on a
 * serial port (default /dev/ttyS1, the FMU's signal channel); every 1 ms
 * of CLOCK_MONOTONIC it prints "voltage=<V>", clamped to +-V_MAX, with
 * anti-windup by conditional integration, followed by the guest's clocks
 * ("uptime", "wall_clock") so a master can check that they follow
 * simulation time.
 *
 * The port is used raw (no echo, no line editing): an echo would send the
 * master's own lines back.  Whatever the master sent while Linux was
 * booting was partly dropped by the UART, so once listening the program
 * asks for every input again with a "?" line (docs/signals.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "pi_law.h"
#include "qqq_signals.h"

/* Gains for a DC motor of ~10 rad/s/V and ~50 ms time constant. */
#define TS_NS 1000000	/* the sample period, 1 ms */
#define TS    (TS_NS * 1e-9)

static double setpoint, speed;
static const qqq_signal inputs[] = {
	{"setpoint", QQQ_REAL, &setpoint},
	{"speed", QQQ_REAL, &speed},
};

static int port = -1;
static char out_buf[4 * QQQ_SIGNAL_LINE_MAX];
static size_t out_len;

static void die(const char *what)
{
	fprintf(stderr, "pi_speed: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* One write per sample, not per byte: each write is a system call. */
void qqq_putc(char c)
{
	if (out_len < sizeof out_buf)
		out_buf[out_len++] = c;
}

static void flush_out(void)
{
	size_t done = 0;

	while (done < out_len) {
		ssize_t n = write(port, out_buf + done, out_len - done);

		if (n < 0 && errno != EINTR)
			die("write");
		if (n > 0)
			done += (size_t)n;
	}
	out_len = 0;
}

static double pi_step(double sp, double meas)
{
	static double integral;

	return pi_law(&integral, TS, sp, meas);
}

static double seconds(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void open_port(const char *path)
{
	struct termios t;

	port = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (port < 0)
		die(path);
	if (tcgetattr(port, &t) < 0)
		die("tcgetattr");
	cfmakeraw(&t);
	/* The fastest rate QEMU's 16550 has: its receive timeout, which
	 * delivers a line's last bytes, lasts four character times. */
	cfsetspeed(&t, B115200);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(port, TCSANOW, &t) < 0)
		die("tcsetattr");
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/ttyS1";
	struct itimerspec period = {
		.it_interval = {0, TS_NS}, .it_value = {0, TS_NS},
	};
	struct pollfd fds[2];
	int timer;

	qqq_signals_init(inputs, sizeof inputs / sizeof inputs[0]);
	open_port(path);
	timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (timer < 0 || timerfd_settime(timer, 0, &period, NULL) < 0)
		die("timerfd");
	qqq_signals_request_inputs();
	flush_out();
	printf("pi_speed: running on %s\n", path);
	fflush(stdout);

	fds[0] = (struct pollfd){.fd = port, .events = POLLIN};
	fds[1] = (struct pollfd){.fd = timer, .events = POLLIN};
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		/* Inputs first, so a sample sees everything received before it. */
		if (fds[0].revents & POLLIN) {
			char buf[256];
			ssize_t n = read(port, buf, sizeof buf);

			for (ssize_t i = 0; i < n; i++)
				qqq_signals_feed(buf[i]);
		}
		/* One sample per wake-up, as in pi.c: after an overrun,
		 * catching up with stale inputs would repeat the output. */
		if (fds[1].revents & POLLIN) {
			uint64_t expirations;

			if (read(timer, &expirations, sizeof expirations) < 0)
				die("timerfd read");
			qqq_signals_put_real("voltage", pi_step(setpoint, speed));
			qqq_signals_put_real("uptime", seconds(CLOCK_MONOTONIC));
			qqq_signals_put_real("wall_clock", seconds(CLOCK_REALTIME));
			flush_out();
		}
	}
}

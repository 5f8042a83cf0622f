/*
 * test_qqq_signals.c - host unit test of qqq_signals.c (make check).
 *
 * glibc's strtod and printf are correctly rounded, so they are the
 * reference: every string we parse must give strtod's double, every
 * double we format must read back bit for bit and be no longer than the
 * correctly rounded decimal with one digit fewer allows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qqq_signals.h"

static int failures;
static char out[4096];
static size_t out_len;

void qqq_putc(char c)
{
	if (out_len < sizeof out - 1)
		out[out_len++] = c;
}

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	if (failures < 30) { printf("FAIL %s:%d: ", __FILE__, __LINE__); \
	printf(__VA_ARGS__); printf("\n"); } } } while (0)

static int same(double a, double b)
{
	return isnan(a) ? isnan(b) : memcmp(&a, &b, sizeof a) == 0;
}

static unsigned long long rng = 0x9e3779b97f4a7c15ull;

static unsigned long long rnd(void)	/* xorshift64: fixed seed, repeatable */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double bits_to_double(unsigned long long u)
{
	double d;

	memcpy(&d, &u, sizeof d);
	return d;
}

static void check_parse(const char *s)
{
	double got = -12345.0, want = strtod(s, NULL);
	int ok = qqq_parse_real(s, &got);

	CHECK(ok && same(got, want), "parse \"%s\": ok=%d got %.17g want %.17g",
	      s, ok, got, want);
}

static void check_format(double x)
{
	char buf[QQQ_REAL_BUF], shorter[64], digs[QQQ_REAL_BUF];
	double back;
	int len = qqq_format_real(buf, x), digits = 0;
	const char *p;

	CHECK(len == (int)strlen(buf) && len < QQQ_REAL_BUF, "length of %s", buf);
	CHECK(same(strtod(buf, NULL), x), "format %.17g gave %s", x, buf);
	CHECK(qqq_parse_real(buf, &back) && same(back, x), "reparse %s", buf);
	if (!isfinite(x) || x == 0)
		return;
	/* Significant digits: the mantissa without sign, point and the
	 * zeros at either end. */
	for (p = buf; *p && *p != 'e'; p++)
		if (*p >= '0' && *p <= '9' && (digits || *p != '0'))
			digs[digits++] = *p;
	while (digs[digits - 1] == '0')
		digits--;
	if (digits > 1) {
		snprintf(shorter, sizeof shorter, "%.*e", digits - 2, x);
		CHECK(!same(strtod(shorter, NULL), x), "%s is not shortest (%s)",
		      buf, shorter);
	}
}

static void test_reals(void)
{
	static const char *ok[] = {
		"1.5", "-0.001", "1e-05", "2.5e+20", "100.0", "0.0", "-0.0", "0",
		"0.10000000000000001", "1.0000000000000001e-05", "12", "+7.",
		".5", "5e-324", "2.4703282292062327e-324", "2.4703282292062328e-324",
		"4.9406564584124654e-324", "2.2250738585072011e-308",
		"2.2250738585072014e-308", "1.7976931348623157e308",
		"1.7976931348623158e308", "1.7976931348623159e308", "1e309",
		"1e-400", "9007199254740993", "9007199254740992.5",
		"1E22", "1e23", "8.98846567431158e307", "0.000000000000000000001e20",
		"123456789012345678901234567890123456789012345678901234567890"
		"12345678901234567890123456789012345678901234567890e-300",
		"0.30000000000000004", "3.0000000000000004e-1", "1e+0",
	};
	static const char *bad[] = {
		"", "-", "+", ".", "e5", "1e", "1e+", "1.5x", " 1", "1 ", "0x10",
		"1..2", "--1", "1.2.3", "in", "infinit", "nana", "1e5.0",
	};
	static const struct { double x; const char *s; } repr[] = {
		{1.5, "1.5"}, {-0.001, "-0.001"}, {1e-05, "1e-05"},
		{2.5e20, "2.5e+20"}, {100.0, "100.0"}, {0.0, "0.0"}, {-0.0, "-0.0"},
		{0.1, "0.1"}, {0.0001, "0.0001"}, {1e16, "1e+16"}, {12.0, "12.0"},
		{9999999999999998.0, "9999999999999998.0"}, {5e-324, "5e-324"},
		{1.7976931348623157e308, "1.7976931348623157e+308"},
		{0.30000000000000004, "0.30000000000000004"}, {-12.0, "-12.0"},
		{123456789.125, "123456789.125"}, {1e100, "1e+100"},
		{2.5e-7, "2.5e-07"}, {INFINITY, "inf"}, {-INFINITY, "-inf"},
		{NAN, "nan"},
	};
	char s[200], buf[QQQ_REAL_BUF];
	double d;
	int i, k;

	for (i = 0; i < (int)(sizeof ok / sizeof *ok); i++)
		check_parse(ok[i]);
	for (i = 0; i < (int)(sizeof bad / sizeof *bad); i++)
		CHECK(!qqq_parse_real(bad[i], &d), "accepted \"%s\"", bad[i]);
	CHECK(qqq_parse_real("-inf", &d) && d == -INFINITY, "-inf");
	CHECK(qqq_parse_real("Infinity", &d) && d == INFINITY, "Infinity");
	CHECK(qqq_parse_real("nan", &d) && isnan(d), "nan");
	for (i = 0; i < (int)(sizeof repr / sizeof *repr); i++) {
		qqq_format_real(buf, repr[i].x);
		CHECK(!strcmp(buf, repr[i].s), "format gave %s, repr %s", buf,
		      repr[i].s);
	}

	for (i = 0; i < 50000; i++) {
		/* Any finite double: every exponent, subnormals included. */
		double x = bits_to_double(rnd());

		if (!isfinite(x))
			continue;
		check_format(x);
		snprintf(s, sizeof s, "%.17g", x);	/* what the FMU sends */
		check_parse(s);
		snprintf(s, sizeof s, "%.*e", (int)(rnd() % 20), x);
		check_parse(s);
	}
	for (i = 0; i < 50000; i++) {
		/* Controller-sized values, where the firmware spends its time. */
		double x = ldexp((double)(rnd() >> 11), -(int)(rnd() % 80));

		check_format(i & 1 ? -x : x);
	}
	for (i = 0; i < 20000; i++) {
		/* Exact midpoints between doubles, and just either side: the
		 * hard cases for rounding. long double holds them exactly. */
		double x = ldexp((double)((rnd() >> 11) | 1ull << 52),
				 (int)(rnd() % 380) - 138);
		long double mid = ((long double)x + nextafter(x, INFINITY)) / 2;
		long double eps = ldexpl(mid, -62);

		for (k = -1; k <= 1; k++) {
			snprintf(s, sizeof s, "%.110Lg", mid + k * eps);
			check_parse(s);
		}
	}
	for (i = 0; i < 20000; i++) {
		/* Random digit strings and exponents, often out of range. */
		int nd = 1 + (int)(rnd() % 40), p = 0;

		for (k = 0; k < nd; k++)
			s[p++] = (char)('0' + rnd() % 10);
		snprintf(s + p, sizeof s - p, "e%d", (int)(rnd() % 700) - 360);
		check_parse(s);
	}
}

static double setpoint, speed;
static int32_t count;
static bool enable;
static const qqq_signal inputs[] = {
	{"setpoint", QQQ_REAL, &setpoint},
	{"speed", QQQ_REAL, &speed},
	{"count", QQQ_INTEGER, &count},
	{"enable_2", QQQ_BOOLEAN, &enable},
};

static int feed_n(const char *s, size_t len)	/* inputs the bytes stored */
{
	int n = 0;

	while (len--)
		n += qqq_signals_feed(*s++);
	return n;
}

static int feed(const char *s)
{
	return feed_n(s, strlen(s));
}

static void test_lines(void)
{
	char s[200];

	qqq_signals_init(inputs, 4);
	CHECK(feed("setpoint=10\nspeed=-0.5\r\n") == 2 && setpoint == 10 &&
	      speed == -0.5, "two lines");
	CHECK(feed("count=-2147483648\nenable_2=1\n") == 2 &&
	      count == INT32_MIN && enable, "int and bool");
	CHECK(feed("count=2147483648\ncount=1.0\ncount=\nenable_2=2\n"
		   "enable_2=true\n") == 0 && count == INT32_MIN && enable,
	      "bad int/bool kept old values");
	CHECK(feed("unknown=3\njunk\n=5\nspeed=\nspeed=abc\nspeed =1\n"
		   "speedx=1\nspee=1\n9speed=1\nspeed=1 \nSPEED=1\n\n\r\n") == 0
	      && speed == -0.5, "non-signal lines ignored");
	CHECK(feed("boot\rspeed=2\n") == 0, "\\r mid-line is not an end");
	/* A NUL anywhere in a line spoils the whole line, not just its end. */
	CHECK(feed_n("spe\0ed=3\n", 9) == 0 && speed == -0.5, "NUL inside");
	CHECK(feed_n("speed=3\0\n", 9) == 0 && speed == -0.5, "NUL at the end");
	CHECK(feed_n("\0speed=3\n", 9) == 0 && speed == -0.5, "NUL first");
	CHECK(feed("speed=4\n") == 1 && speed == 4, "next line taken");
	CHECK(feed("count=2147483647\n") == 1 && count == INT32_MAX, "INT32_MAX");
	CHECK(feed("count=+0\n") == 1 && count == 0, "+0");
	CHECK(feed("count=-2147483649\n") == 0 && count == 0, "below INT32_MIN");

	/* 120 bytes with the '\n' is the limit; '\r's before it do not count. */
	snprintf(s, sizeof s, "speed=%0113d\n", 7);
	CHECK(strlen(s) == 120 && feed(s) == 1 && speed == 7, "120 bytes");
	snprintf(s, sizeof s, "speed=%0114d\n", 8);
	CHECK(feed(s) == 0 && speed == 7, "121 bytes dropped");
	CHECK(feed("speed=9\n") == 1 && speed == 9, "recovers after overlong");
	snprintf(s, sizeof s, "speed=%0113d\r\n", 5);
	CHECK(strlen(s) == 121 && feed(s) == 1 && speed == 5,
	      "121 bytes with CRLF: the \\r does not count");
	snprintf(s, sizeof s, "speed=%0114d\r\n", 6);
	CHECK(feed(s) == 0 && speed == 5, "122 bytes with CRLF dropped");
	snprintf(s, sizeof s, "speed=%0113d\r\r\r\n", 4);
	CHECK(feed(s) == 1 && speed == 4, "every \\r before the \\n dropped");
	CHECK(feed("speed=3\r\r1\n") == 0 && speed == 4, "\\r then content is content");
	memset(s, 'x', 150);
	strcpy(s + 150, "speed=1\n");	/* overlong, ends as a valid line */
	CHECK(feed(s) == 0 && speed == 4, "tail of overlong line dropped");

	out_len = 0;
	qqq_signals_put_real("voltage", -12.0);
	qqq_signals_put_real("v", 0.1);
	qqq_signals_put_int("n", INT32_MIN);
	qqq_signals_put_int("m", 42);
	qqq_signals_put_int("x", INT32_MAX);
	qqq_signals_put_int("z", 0);
	qqq_signals_put_bool("b", true);
	qqq_signals_put_bool("c", false);
	out[out_len] = '\0';
	CHECK(!strcmp(out, "voltage=-12.0\nv=0.1\nn=-2147483648\nm=42\n"
		      "x=2147483647\nz=0\nb=1\nc=0\n"), "output: %s", out);
}

/*
 * "--format": for each line of stdin, a double as 16 hex digits of its
 * bits, print qqq_format_real's text. The Python test compares that with
 * repr() over many values, which this C program cannot call.
 */
static int format_stdin(void)
{
	char buf[QQQ_REAL_BUF];
	unsigned long long bits;

	while (scanf("%llx", &bits) == 1) {
		qqq_format_real(buf, bits_to_double(bits));
		puts(buf);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--format"))
		return format_stdin();
	test_reals();
	test_lines();
	printf("test_qqq_signals: %s (%d failures)\n", failures ? "FAIL" : "ok",
	       failures);
	return failures != 0;
}

/*
 * qqq_signals.c - guest side of the qemu-fmu signal line protocol; see
 * qqq_signals.h for the API and docs/signals.md for the protocol.
 *
 * Reals must cross the link bit for bit, and there is no libc, so the
 * decimal <-> double conversions are done here: a cheap floating-point
 * estimate, then exact big-integer comparisons against the midpoints
 * between neighbouring doubles to settle the last bit (Clinger's
 * "AlgorithmR"). Formatting searches for the fewest digits that parse
 * back to the same double and lays them out like Python's repr().
 */
#include "qqq_signals.h"

/* Sized for the worst comparison: 10^449 times a 56-bit midpoint. */
#define BIG_WORDS 56
/* Significant digits a parsed real may have: a line cannot hold more. */
#define MAX_DIGITS QQQ_SIGNAL_LINE_MAX

#define FRAC_MASK ((1ull << 52) - 1)
#define HIDDEN    (1ull << 52)
#define INF_BITS  0x7ff0000000000000ull
#define NAN_BITS  0x7ff8000000000000ull
#define SIGN_BIT  (1ull << 63)

typedef union { double d; uint64_t u; } dbits;

/* Little-endian 32-bit words, no leading zero words (0 has n == 0). */
typedef struct { int n; uint32_t w[BIG_WORDS]; } big;

static void big_set(big *b, uint64_t v)
{
	for (b->n = 0; v; v >>= 32)
		b->w[b->n++] = (uint32_t)v;
}

/* b = b * mul + add */
static void big_muladd(big *b, uint32_t mul, uint32_t add)
{
	uint64_t carry = add;
	int i;

	for (i = 0; i < b->n; i++) {
		carry += (uint64_t)b->w[i] * mul;
		b->w[i] = (uint32_t)carry;
		carry >>= 32;
	}
	if (carry)
		b->w[b->n++] = (uint32_t)carry;
}

static void big_mul_pow10(big *b, int k)
{
	uint32_t p = 1;

	for (; k >= 9; k -= 9)
		big_muladd(b, 1000000000u, 0);
	while (k--)
		p *= 10;
	big_muladd(b, p, 0);
}

static void big_shl(big *b, int s)
{
	int ws = s / 32, bs = s % 32, n = b->n, i;

	if (!n)
		return;
	/* Downwards, so in place: each word only reads words below it. */
	for (i = n + ws; i >= ws; i--) {
		uint32_t hi = i - ws < n ? b->w[i - ws] : 0;
		uint32_t lo = i - ws - 1 >= 0 ? b->w[i - ws - 1] : 0;

		b->w[i] = bs ? hi << bs | lo >> (32 - bs) : hi;
	}
	for (i = 0; i < ws; i++)
		b->w[i] = 0;
	b->n = n + ws + 1;
	while (b->w[b->n - 1] == 0)
		b->n--;
}

/* Compares m * 10^e with g * 2^j exactly, scaling both to integers. */
static int cmp_mid(const big *m, int e, uint64_t g, int j)
{
	big l, r;
	int i;

	l.n = m->n;
	for (i = 0; i < m->n; i++)	/* not "l = *m": that may call memcpy */
		l.w[i] = m->w[i];
	big_mul_pow10(&l, e > 0 ? e : 0);
	big_shl(&l, j < 0 ? -j : 0);
	big_set(&r, g);
	big_mul_pow10(&r, e < 0 ? -e : 0);
	big_shl(&r, j > 0 ? j : 0);

	if (l.n != r.n)
		return l.n < r.n ? -1 : 1;
	for (i = l.n - 1; i >= 0; i--)
		if (l.w[i] != r.w[i])
			return l.w[i] < r.w[i] ? -1 : 1;
	return 0;
}

/* x * 10^k, within a few ulps; the exact powers 1e0..1e22 keep it so. */
static double scale10(double x, int k)
{
	static const double p10[23] = {
		1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
		1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
	};
	int neg = k < 0;

	if (neg)
		k = -k;
	/* Small factor first, so only the last step can overflow/go subnormal. */
	x = neg ? x / p10[k % 22] : x * p10[k % 22];
	for (k -= k % 22; k; k -= 22)
		x = neg ? x / 1e22 : x * 1e22;
	return x;
}

/*
 * The double nearest m * 10^e (ties to even), m > 0 with nd significant
 * digits; head * 10^head_e is an approximation of the same value.
 */
static double dec_to_double(const big *m, int nd, int e, uint64_t head,
			    int head_e)
{
	dbits z;
	int c;

	if (nd + e <= -324)	/* below half the smallest subnormal */
		return 0.0;
	if (nd + e >= 310) {	/* at least 1e309 */
		z.u = INF_BITS;
		return z.d;
	}
	z.d = scale10((double)head, head_e);
	for (;;) {
		int bexp = (int)(z.u >> 52);
		/* z = f * 2^k; infinity reads as 2^1024, which is what it rounds from */
		uint64_t f = (z.u & FRAC_MASK) | (bexp ? HIDDEN : 0);
		int k = (bexp ? bexp : 1) - 1075;

		if (bexp < 0x7ff) {
			c = cmp_mid(m, e, 2 * f + 1, k - 1);
			if (c > 0) {
				z.u++;
				continue;
			}
			if (c == 0) {
				z.u += f & 1;
				break;
			}
		}
		if (f == 0)
			break;
		/* Below a power of two the next double down is half as far. */
		if (f == HIDDEN && bexp > 1)
			c = cmp_mid(m, e, 4 * f - 1, k - 2);
		else
			c = cmp_mid(m, e, 2 * f - 1, k - 1);
		if (c < 0) {
			z.u--;
			continue;
		}
		if (c == 0)
			z.u -= f & 1;
		break;
	}
	return z.d;
}

static double u64_to_double(uint64_t n, int e)
{
	uint64_t t = 10;
	int nd = 1;
	big m;

	if (!n)
		return 0.0;
	while (nd < 20 && n >= t) {
		nd++;
		t *= 10;
	}
	big_set(&m, n);
	return dec_to_double(&m, nd, e, n, e);
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Case-insensitive whole-string match against a lower-case word. */
static int word_is(const char *s, const char *w)
{
	while (*w && (*s | 0x20) == *w)
		s++, w++;
	return !*s && !*w;
}

int qqq_parse_real(const char *s, double *out)
{
	int neg = 0, point = 0, any = 0, nd = 0, nhead = 0, e = 0;
	uint64_t head = 0;
	dbits v;
	big m;

	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (word_is(s, "inf") || word_is(s, "infinity") || word_is(s, "nan")) {
		v.u = (*s | 0x20) == 'n' ? NAN_BITS : INF_BITS;
		goto done;
	}
	m.n = 0;
	for (;; s++) {
		if (is_digit(*s)) {
			uint32_t d = (uint32_t)(*s - '0');

			any = 1;
			if (nd || d) {
				if (++nd > MAX_DIGITS)
					return 0;
				big_muladd(&m, 10, d);
				if (nhead < 19) {	/* fits a uint64_t */
					head = head * 10 + d;
					nhead++;
				}
			}
			e -= point;
		} else if (*s == '.' && !point) {
			point = 1;
		} else {
			break;
		}
	}
	if (!any)
		return 0;
	if (*s == 'e' || *s == 'E') {
		int eneg = 0, x = 0;

		s++;
		if (*s == '+' || *s == '-')
			eneg = *s++ == '-';
		if (!is_digit(*s))
			return 0;
		for (; is_digit(*s); s++)
			if (x < 100000)	/* saturate: far beyond any double */
				x = x * 10 + (*s - '0');
		e += eneg ? -x : x;
	}
	if (*s)
		return 0;
	v.d = nd ? dec_to_double(&m, nd, e, head, e + nd - nhead) : 0.0;
done:
	*out = neg ? -v.d : v.d;
	return 1;
}

int qqq_parse_int(const char *s, int32_t *out)
{
	int neg = 0;
	int64_t v = 0;

	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (!*s)
		return 0;
	for (; *s; s++) {
		if (!is_digit(*s))
			return 0;
		v = v * 10 + (*s - '0');
		if (v > 2147483648ll)
			return 0;
	}
	if (!neg && v > 2147483647ll)
		return 0;
	*out = (int32_t)(neg ? -v : v);
	return 1;
}

/* Moves n to the integer nearest x / 10^e (ties to even), exactly. */
static void nearest(uint64_t *n, int e, dbits x)
{
	int bexp = (int)(x.u >> 52);
	uint64_t f = (x.u & FRAC_MASK) | (bexp ? HIDDEN : 0);
	int j = (bexp ? bexp : 1) - 1075 + 1;	/* 2x = f * 2^j */
	big m;
	int c;

	for (;;) {	/* compare (n + 1/2) 10^e with x, doubled */
		big_set(&m, *n);
		big_muladd(&m, 2, 1);
		c = cmp_mid(&m, e, f, j);
		if (c > 0 || (c == 0 && !(*n & 1)))
			break;
		++*n;
	}
	while (*n) {	/* and (n - 1/2) 10^e */
		big_set(&m, *n - 1);
		big_muladd(&m, 2, 1);
		c = cmp_mid(&m, e, f, j);
		if (c < 0 || (c == 0 && !(*n & 1)))
			break;
		--*n;
	}
}

/* Moves n to the nearest value whose decimal n * 10^e reads back as x;
 * returns 0 if no n at this exponent does. */
static int settle(uint64_t *n, int e, double x)
{
	double r = u64_to_double(*n, e);

	if (r < x)
		do
			r = u64_to_double(++*n, e);
		while (r < x);
	else if (r > x)
		do
			r = u64_to_double(--*n, e);
		while (r > x);
	return r == x;
}

/* Whether some n * 10^e reads back as x. */
static int grid_has(double x, int e)
{
	uint64_t n = (uint64_t)(scale10(x, -e) + 0.5);

	return settle(&n, e, x);
}

static char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

int qqq_format_real(char *buf, double v)
{
	char dig[20];	/* the decimal digits of n, least significant first */
	char *p = buf;
	uint64_t n, f;
	int b, est, prec, lo, hi, e, nd = 0, z = 0, decpt, i;
	dbits x;

	x.d = v;
	if ((x.u & ~SIGN_BIT) > INF_BITS) {	/* Python prints no sign on NaN */
		p = put_str(p, "nan");
		goto end;
	}
	if (x.u & SIGN_BIT) {
		*p++ = '-';
		x.u &= ~SIGN_BIT;
	}
	if (x.u == INF_BITS || x.u == 0) {
		p = put_str(p, x.u ? "inf" : "0.0");
		goto end;
	}

	/* 2^b <= x < 2^(b+1); est is then log10(x) rounded down, give or
	 * take one, which only shifts which grids are searched below. */
	b = (int)(x.u >> 52) - 1023;
	if (b == -1023)
		for (b = -1022, f = x.u; f < HIDDEN; f <<= 1)
			b--;
	est = (b * 78913) >> 18;	/* 78913 / 2^18 ~ log10(2) */
	/*
	 * Find the coarsest grid of decimals n * 10^e holding one that reads
	 * back as x. Each grid contains the coarser ones, so bisect; the
	 * 18-digit grid always qualifies (17 digits always suffice, and
	 * est may be one too high).
	 */
	for (lo = 1, hi = 18; lo < hi;) {
		prec = (lo + hi) / 2;
		if (grid_has(x.d, est + 1 - prec))
			hi = prec;
		else
			lo = prec + 1;
	}
	e = est + 1 - lo;
	/* Several n may read back as x; like repr, take the one nearest x:
	 * start from the correctly rounded n and step towards x. */
	n = (uint64_t)(scale10(x.d, -e) + 0.5);
	nearest(&n, e, x);
	settle(&n, e, x.d);

	for (; n; n /= 10)
		dig[nd++] = (char)('0' + n % 10);
	decpt = nd + e;	/* x = 0.<digits> * 10^decpt */
	while (dig[z] == '0')
		z++;

	if (decpt > -4 && decpt <= 16) {	/* repr's switch to exponents */
		if (decpt <= 0) {
			p = put_str(p, "0.");
			for (i = decpt; i < 0; i++)
				*p++ = '0';
		}
		for (i = nd - 1; i >= z || nd - i <= decpt; i--) {
			if (nd - i == decpt + 1 && decpt > 0)
				*p++ = '.';
			*p++ = i >= z ? dig[i] : '0';
		}
		if (nd - z <= decpt)
			p = put_str(p, ".0");
	} else {
		*p++ = dig[nd - 1];
		if (z < nd - 1)
			*p++ = '.';
		for (i = nd - 2; i >= z; i--)
			*p++ = dig[i];
		*p++ = 'e';
		*p++ = decpt - 1 < 0 ? '-' : '+';
		decpt = decpt - 1 < 0 ? 1 - decpt : decpt - 1;
		if (decpt >= 100)
			*p++ = (char)('0' + decpt / 100);
		*p++ = (char)('0' + decpt / 10 % 10);
		*p++ = (char)('0' + decpt % 10);
	}
end:
	*p = '\0';
	return (int)(p - buf);
}

/* ---- Lines ---- */

static const qqq_signal *sig_in;
static int sig_n;
static char line[QQQ_SIGNAL_LINE_MAX];	/* content, then a NUL */
static int line_len;
static int line_bad;	/* too long, or holds a NUL */
/* '\r's seen last: dropped if the '\n' comes next, content otherwise. */
static int line_cr;

void qqq_signals_init(const qqq_signal *inputs, int n_inputs)
{
	sig_in = inputs;
	sig_n = n_inputs;
	line_len = 0;
	line_bad = 0;
}

static int is_name_char(char c, int first)
{
	char l = (char)(c | 0x20);	/* ASCII lower case */

	return (l >= 'a' && l <= 'z') || c == '_' || (!first && is_digit(c));
}

/* Stores the value of a "name=value" line into its input. */
static int handle_line(void)
{
	const char *v;
	int len, i;

	for (len = 0; is_name_char(line[len], len == 0); len++)
		;
	if (!len || line[len] != '=')
		return 0;
	v = line + len + 1;
	for (i = 0; i < sig_n; i++) {
		const char *a = sig_in[i].name;
		int k;

		for (k = 0; k < len && a[k] == line[k]; k++)
			;
		if (k < len || a[k])
			continue;
		switch (sig_in[i].type) {
		case QQQ_REAL: {
			double d;

			if (!qqq_parse_real(v, &d))
				return 0;
			*(double *)sig_in[i].value = d;
			return 1;
		}
		case QQQ_INTEGER: {
			int32_t n;

			if (!qqq_parse_int(v, &n))
				return 0;
			*(int32_t *)sig_in[i].value = n;
			return 1;
		}
		case QQQ_BOOLEAN:
			if ((v[0] != '0' && v[0] != '1') || v[1])
				return 0;
			*(bool *)sig_in[i].value = v[0] == '1';
			return 1;
		}
	}
	return 0;
}

static void line_store(char c)
{
	/* Leave room for the '\n' in the limit and for our NUL. */
	if (line_len < QQQ_SIGNAL_LINE_MAX - 1 && c != '\0')
		line[line_len++] = c;
	else
		line_bad = 1;
}

int qqq_signals_feed(char c)
{
	int stored = 0;

	if (c == '\r') {
		/* More than a line's worth cannot be content of a good line. */
		if (line_cr < QQQ_SIGNAL_LINE_MAX)
			line_cr++;
		return 0;
	}
	if (c != '\n') {
		for (; line_cr; line_cr--)
			line_store('\r');
		line_store(c);
		return 0;
	}
	if (!line_bad) {
		line[line_len] = '\0';
		stored = handle_line();
	}
	line_len = 0;
	line_bad = 0;
	line_cr = 0;
	return stored;
}

static void put_str_out(const char *s)
{
	while (*s)
		qqq_putc(*s++);
}

static void put_value(const char *name, const char *value)
{
	put_str_out(name);
	qqq_putc('=');
	put_str_out(value);
	qqq_putc('\n');
}

void qqq_signals_put_real(const char *name, double v)
{
	char buf[QQQ_REAL_BUF];

	qqq_format_real(buf, v);
	put_value(name, buf);
}

void qqq_signals_put_int(const char *name, int32_t v)
{
	char buf[12], *p = buf + sizeof buf;	/* "-2147483648" */
	uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;

	*--p = '\0';
	do
		*--p = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--p = '-';
	put_value(name, p);
}

void qqq_signals_put_bool(const char *name, bool v)
{
	put_value(name, v ? "1" : "0");
}

void qqq_signals_request_inputs(void)
{
	qqq_putc('?');
	qqq_putc('\n');
}

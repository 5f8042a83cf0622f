/*
 * qqq_signals.h - guest side of the qemu-fmu signal line protocol
 * (docs/signals.md): FMU inputs arrive as "name=value\n" lines, outputs
 * are printed the same way.
 *
 * Board-independent and libc-free: the firmware supplies qqq_putc() for
 * output and hands every received byte to qqq_signals_feed(). Reals are
 * converted exactly (correctly rounded parse, shortest round-trip
 * format), so a double crosses the link unchanged in either direction.
 *
 * Not reentrant: call feed() and read the input variables from one
 * context (e.g. the main loop draining an RX ring buffer), or mask
 * interrupts around the reads.
 */
#ifndef QQQ_SIGNALS_H
#define QQQ_SIGNALS_H

#include <stdbool.h>
#include <stdint.h>

/* Longest line including its '\n'; '\r's right before the '\n' are not
 * part of the line and do not count (docs/signals.md). */
#define QQQ_SIGNAL_LINE_MAX 120
/* Buffer size for qqq_format_real(), terminating NUL included. */
#define QQQ_REAL_BUF 32

typedef enum { QQQ_REAL, QQQ_INTEGER, QQQ_BOOLEAN } qqq_type;

/* value points at a double, int32_t or bool according to type. */
typedef struct {
	const char *name;
	qqq_type type;
	void *value;
} qqq_signal;

/* Provided by the firmware: write one byte of output (may block). */
void qqq_putc(char c);

/* The table is used in place, not copied; it must outlive its use. */
void qqq_signals_init(const qqq_signal *inputs, int n_inputs);

/*
 * Feed one received byte. Returns 1 when it completed a line that
 * stored a new value into an input, else 0. Console text, unknown
 * names, unparsable values and overlong lines are ignored.
 */
int qqq_signals_feed(char c);

void qqq_signals_put_real(const char *name, double v);
void qqq_signals_put_int(const char *name, int32_t v);
void qqq_signals_put_bool(const char *name, bool v);

/*
 * Ask the FMU for every input again (a "?" line): they arrive at the
 * start of the next step.  For a guest that starts listening late and
 * may have missed inputs sent before (a Linux program after boot).
 */
void qqq_signals_request_inputs(void);

/* The conversions, exposed for tests and console output. Parsers
 * require the whole string to be the number and return 1 on success. */
int qqq_format_real(char *buf, double v);	/* returns strlen(buf) */
int qqq_parse_real(const char *s, double *out);
int qqq_parse_int(const char *s, int32_t *out);

#endif

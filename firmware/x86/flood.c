/*
 * flood.c - x86 guest that writes FLOOD_LINES numbered lines to COM1 as
 * fast as it can, then "done", then idles.
 *
 * Its 18 MB of output in one long step is more than one protocol frame
 * may carry (16 MiB), which is what the tests of the reply split need.
 * Line k is k in eight hex digits and a newline, so a test can rebuild
 * the exact bytes.
 */
#include "x86.h"

#define FLOOD_LINES 2000000
#define LINE_LEN 9
#define LINES_PER_CHUNK 455	/* 4095 bytes per rep outsb */

static char chunk[LINES_PER_CHUNK * LINE_LEN];

static void put_line(char *p, uint32_t k)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 7; i >= 0; i--, k >>= 4)
		p[i] = hex[k & 15];
	p[8] = '\n';
}

int main(void)
{
	uint32_t k = 0;

	while (k < FLOOD_LINES) {
		uint32_t n = 0;

		for (; n < LINES_PER_CHUNK && k < FLOOD_LINES; n++, k++)
			put_line(chunk + n * LINE_LEN, k);
		/* QEMU's 16550 sends each byte at once: no LSR polling needed */
		const char *src = chunk;
		uint32_t count = n * LINE_LEN;
		__asm__ volatile("cld; rep outsb"
				 : "+S"(src), "+c"(count)
				 : "d"(COM1)
				 : "memory");
	}
	serial_puts("done\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

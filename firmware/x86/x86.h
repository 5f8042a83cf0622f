/*
 * x86.h - port I/O and COM1 output shared by the x86 test guests.
 *
 * Guests only print a short banner so tests can tell they booted;
 * the UART is not initialised because QEMU's 16550 transmits whatever
 * the divisor and line settings are.
 */
#ifndef X86_H
#define X86_H

#include <stdint.h>

#define COM1 0x3f8

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void serial_puts(const char *s)
{
	for (; *s; s++) {
		while (!(inb(COM1 + 5) & 0x20))	/* LSR.THRE: room in THR */
			;
		outb(COM1, *s);
	}
}

#endif

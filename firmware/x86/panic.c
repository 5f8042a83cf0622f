/*
 * panic.c - x86 guest that reports a panic to QEMU's pvpanic device.
 *
 * Run with "-device pvpanic": lets tests check that what the guest printed
 * in the step it panicked in still reaches the simulator, with the cause.
 */
#include "x86.h"

#define PVPANIC_PORT 0x505	/* the ISA pvpanic device's default port */
#define PVPANIC_PANICKED 1

int main(void)
{
	serial_puts("oops\n");
	outb(PVPANIC_PORT, PVPANIC_PANICKED);
	for (;;)	/* QEMU stops the machine; reached only without pvpanic */
		__asm__ volatile("cli; hlt");
}

/*
 * crash.c - x86 guest that reports a panic, then crashes for real.
 *
 * Prints "crash", tells a pvpanic device (ISA port 0x505, if one is
 * there) that it panicked, then jumps into the PCI hole, where there is
 * no memory: KVM cannot run code from there and stops the machine with
 * an internal error. Tests use it to see that either ends the qqq stream.
 */
#include "x86.h"

#define PVPANIC_PORT     0x505
#define PVPANIC_PANICKED 0x1
#define NO_MEMORY        0xd0000000u

int main(void)
{
	serial_puts("crash\n");
	outb(PVPANIC_PORT, PVPANIC_PANICKED);
	((void (*)(void))NO_MEMORY)();
	for (;;)
		__asm__ volatile("cli; hlt");
}

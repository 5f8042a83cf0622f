/*
 * idle.c - x86 guest that does nothing, as cheaply as possible.
 *
 * With interrupts off, hlt never wakes, so the vCPU stays halted:
 * the reference case for "guest time passes with no guest work".
 */
#include "x86.h"

int main(void)
{
	serial_puts("idle\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

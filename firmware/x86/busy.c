/*
 * busy.c - x86 guest that burns CPU forever.
 *
 * The opposite of idle.c: the vCPU never halts, so every slice of
 * host time goes to executing guest instructions.
 */
#include "x86.h"

int main(void)
{
	serial_puts("busy\n");
	__asm__ volatile("cli");
	for (;;)
		__asm__ volatile("");	/* keep the loop; no side effects */
}

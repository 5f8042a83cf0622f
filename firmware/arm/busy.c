/*
 * busy.c - MPS2-AN385 firmware that burns CPU forever: the ARM
 * counterpart of x86-busy, the core never sleeps.
 */
#include "mps2.h"

int main(void)
{
	uart_puts("busy\n");
	irq_disable();
	for (;;)
		__asm__ volatile("");	/* keep the loop; no side effects */
}

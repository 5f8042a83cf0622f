/*
 * idle.c - MPS2-AN385 firmware that sleeps forever.
 *
 * No interrupt source is enabled and PRIMASK is set, so after the
 * banner the core sits in wfi: the ARM counterpart of x86-idle.
 */
#include "mps2.h"

int main(void)
{
	uart_puts("idle\n");
	irq_disable();
	for (;;)
		wfi();
}

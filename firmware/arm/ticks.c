/*
 * ticks.c - MPS2-AN385 firmware that reports guest time over UART0.
 *
 * SysTick fires every 1 ms of guest time; every REPORT_EVERY ticks the
 * main loop prints "ticks=<n>". Printing happens outside the handler so
 * a slow UART never delays tick counting, and every multiple is printed
 * even if several elapse during one print, so a host reading the serial
 * stream sees a gap-free sequence it can check guest time against.
 *
 * Built with -DSPIN the main loop spins between ticks instead of sleeping
 * in wfi, as the idle task of most RTOS demos does: every virtual second
 * costs the instructions the board would execute in it (arm-spin.elf,
 * benchmarks/spin_speed.py).
 */
#include "mps2.h"

#ifndef REPORT_EVERY
#define REPORT_EVERY 1
#endif

static volatile uint32_t ticks;

void SysTick_Handler(void)
{
	ticks++;
}

/* Wrap-safe "ticks has reached target". */
static int reached(uint32_t target)
{
	return (int32_t)(ticks - target) >= 0;
}

int main(void)
{
	uint32_t next = REPORT_EVERY;

	uart_puts("boot\n");

	SYST_RVR = SYSTICK_1MS_RELOAD;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;

	for (;;) {
		/*
		 * Check-then-sleep with interrupts masked: wfi still wakes on
		 * a pending SysTick, so a tick landing between the check and
		 * the wfi cannot leave us asleep past a report.
		 */
#ifdef SPIN
		while (!reached(next)) {
			/* the tick interrupts this loop */
		}
#else
		irq_disable();
		while (!reached(next)) {
			wfi();
			irq_enable();	/* the pending tick is taken here */
			irq_disable();
		}
		irq_enable();
#endif

		uart_puts("ticks=");
		uart_putu(next);
		uart_putc('\n');
		next += REPORT_EVERY;
	}
}

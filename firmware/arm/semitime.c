/*
 * semitime.c - MPS2-AN385 firmware that reads Arm semihosting's clocks.
 *
 * Networked firmware seeds its stack from SYS_TIME, SYS_CLOCK and
 * SYS_ELAPSED; a paced QEMU answers them from simulation time (see
 * docs/protocol-v2.md).  This program prints all three at start and again
 * after every 250 ms of SysTick time, so a test can check they follow the
 * simulation and not the host.  Needs QEMU's -semihosting.
 */
#include "mps2.h"

#define SYS_CLOCK   0x10
#define SYS_TIME    0x11
#define SYS_ELAPSED 0x30

static volatile uint32_t ticks;

void SysTick_Handler(void)
{
	ticks++;
}

static uint32_t semihost(uint32_t op, void *arg)
{
	register uint32_t r0 __asm__("r0") = op;
	register void *r1 __asm__("r1") = arg;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return r0;
}

static void report(void)
{
	uint32_t elapsed[2] = { 0, 0 };	/* low word, high word */

	uart_puts("time=");
	uart_putu(semihost(SYS_TIME, 0));
	uart_puts(" clock=");
	uart_putu(semihost(SYS_CLOCK, 0));
	semihost(SYS_ELAPSED, elapsed);
	uart_puts(" elapsed_hi=");
	uart_putu(elapsed[1]);
	uart_puts(" elapsed_lo=");
	uart_putu(elapsed[0]);
	uart_putc('\n');
}

int main(void)
{
	uint32_t next = 250;

	report();
	SYST_RVR = SYSTICK_1MS_RELOAD;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
	for (;;) {
		irq_disable();
		while ((int32_t)(ticks - next) < 0) {
			wfi();
			irq_enable();
			irq_disable();
		}
		irq_enable();
		report();
		next += 250;
	}
}

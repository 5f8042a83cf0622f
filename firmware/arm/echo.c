/*
 * echo.c - MPS2-AN385 test guest for input timing: reports, for every
 * byte received on UART0, the guest time at which it was taken.
 *
 * Prints "echo", then one "rx <hex byte> <time_us>" line per byte, in
 * order. The time is read in the RX interrupt handler, from the 1 ms
 * SysTick count and the SysTick counter, so it is when the guest saw the
 * byte, not when the (slower) main loop got round to printing it. Bytes
 * that arrive back to back wait in a ring buffer. None is ever lost: QEMU
 * only delivers a byte once the last one is read from DATA, so with the
 * ring full the handler leaves it there and masks its IRQ until main has
 * made room, and the sender simply waits.
 */
#include "mps2.h"

#define RING 1024	/* power of two; indices run free and are masked */

static volatile uint32_t ticks;
static volatile uint8_t ring_byte[RING];
static volatile uint32_t ring_time[RING];
static volatile uint32_t head, tail;

void SysTick_Handler(void)
{
	ticks++;
}

/*
 * QEMU's counter reads 0 for one 25 MHz clock at each tick, while its
 * interrupt may be not yet raised, pending, or already counted: a 0
 * cannot be placed. Wait (bounded, ~10 reads) for the reload instead.
 */
static uint32_t read_cvr(void)
{
	uint32_t cvr, n = 0;

	do
		cvr = SYST_CVR;
	while (cvr == 0 && ++n < 100);
	return cvr;
}

/* Microseconds since SysTick started (wraps after ~71 min). */
static uint32_t now_us(void)
{
	uint32_t t = ticks, cvr = read_cvr();

	/*
	 * SysTick and this IRQ share a priority, so a tick while we run is
	 * left pending rather than counted: count it, and re-read the
	 * counter, as the first read may predate the tick.
	 */
	if (SCB_ICSR & SCB_ICSR_PENDSTSET) {
		t++;
		cvr = read_cvr();
	}
	return t * 1000 + (SYSTICK_1MS_RELOAD - cvr) / 25;
}

void UART0RX_Handler(void)
{
	while (UART0_STATE & UART_STATE_RXFULL) {
		uint32_t t = now_us();

		if (head - tail == RING) {	/* full: main re-enables us */
			NVIC_ICER0 = 1u << IRQ_UART0RX;
			return;
		}
		/* Clear before the read, which may deliver the next byte. */
		UART0_INTSTATUS = UART_INT_RX;
		ring_byte[head % RING] = (uint8_t)UART0_DATA;
		ring_time[head % RING] = t;
		head++;
	}
}

static void put_hex2(uint8_t b)
{
	static const char hex[] = "0123456789abcdef";

	uart_putc(hex[b >> 4]);
	uart_putc(hex[b & 15]);
}

int main(void)
{
	uart_puts("echo\n");

	SYST_RVR = SYSTICK_1MS_RELOAD;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
	UART0_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXINTEN;

	for (;;) {
		/* (Re-)enable RX: the line is level, so a byte left waiting
		 * in DATA while the ring was full interrupts at once. */
		NVIC_ISER0 = 1u << IRQ_UART0RX;

		irq_disable();	/* masked check-then-wfi, as in ticks.c */
		while (head == tail) {
			wfi();
			irq_enable();
			irq_disable();
		}
		irq_enable();

		while (tail != head) {
			uart_puts("rx ");
			put_hex2(ring_byte[tail % RING]);
			uart_putc(' ');
			uart_putu(ring_time[tail % RING]);
			uart_putc('\n');
			tail++;
		}
	}
}

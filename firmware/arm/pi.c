/*
 * pi.c - PI speed controller firmware for the MPS2-AN385, the example
 * guest of docs/signals.md.
 *
 * Inputs "setpoint" and "speed" (rad/s) arrive as signal lines on
 * UART0; every 1 ms SysTick the controller prints "voltage=<V>",
 * clamped to +-V_MAX, with anti-windup by conditional integration.
 * The RX interrupt only queues bytes: QEMU delivers the next byte when
 * DATA is read, so the handler must be quick, and keeping the parsing
 * and the control law in one context (the main loop) means the inputs
 * never change halfway through a computation. No byte is ever dropped:
 * with the queue full the handler stops reading and QEMU holds back.
 */
#include "mps2.h"
#include "pi_law.h"
#include "qqq_signals.h"

#define TS    0.001	/* s, the SysTick period */

static double setpoint, speed;
static const qqq_signal inputs[] = {
	{"setpoint", QQQ_REAL, &setpoint},
	{"speed", QQQ_REAL, &speed},
};

/* Filled by the handler, drained by main; 8-bit indices wrap with it. */
static volatile uint8_t rx_buf[256];
static volatile uint8_t rx_head, rx_tail;
static volatile uint32_t ticks;

void qqq_putc(char c)
{
	uart_putc(c);
}

void SysTick_Handler(void)
{
	ticks++;
}

void UART0RX_Handler(void)
{
	while (UART0_STATE & UART_STATE_RXFULL) {
		/* Full: leave the byte in DATA, where QEMU holds back the
		 * rest, and mask this IRQ until main has made room. */
		if ((uint8_t)(rx_head + 1) == rx_tail) {
			NVIC_ICER0 = 1u << IRQ_UART0RX;
			return;
		}
		/* Clear before the read, which may deliver the next byte. */
		UART0_INTSTATUS = UART_INT_RX;
		rx_buf[rx_head] = (uint8_t)UART0_DATA;
		rx_head = (uint8_t)(rx_head + 1);
	}
}

static double pi_step(double sp, double meas)
{
	static double integral;

	return pi_law(&integral, TS, sp, meas);
}

int main(void)
{
	uint32_t done = 0;

	qqq_signals_init(inputs, sizeof inputs / sizeof inputs[0]);
	uart_puts("pi controller\n");

	UART0_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXINTEN;
	SYST_RVR = SYSTICK_1MS_RELOAD;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;

	for (;;) {
		/* (Re-)enable RX; a byte left waiting in DATA interrupts. */
		NVIC_ISER0 = 1u << IRQ_UART0RX;

		/* Masked check-then-wfi, as in ticks.c: no wake-up is lost. */
		irq_disable();
		while (rx_head == rx_tail && ticks == done) {
			wfi();
			irq_enable();
			irq_disable();
		}
		irq_enable();

		/* Inputs first, so a sample sees everything received before it. */
		while (rx_tail != rx_head) {
			qqq_signals_feed((char)rx_buf[rx_tail]);
			rx_tail = (uint8_t)(rx_tail + 1);
		}
		/* One sample per wake-up: after an overrun, catching up
		 * with stale inputs would only repeat the same output. */
		if (ticks != done) {
			done = ticks;
			qqq_signals_put_real("voltage", pi_step(setpoint, speed));
		}
	}
}

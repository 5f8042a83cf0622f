/*
 * lineecho.c - MPS2-AN385 test guest: sends back every byte UART0 receives.
 *
 * Behind a qqq data channel this lets a test put any text in the guest's
 * mouth: what the simulator sends with an advance comes back, unchanged,
 * in the reply of the same step. No banner, so the echo is all there is.
 * The RX interrupt only wakes the core; the main loop moves the bytes.
 */
#include "mps2.h"

void UART0RX_Handler(void)
{
	/* The line stays high until DATA is read: mask it until main has. */
	NVIC_ICER0 = 1u << IRQ_UART0RX;
}

int main(void)
{
	UART0_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXINTEN;

	for (;;) {
		while (UART0_STATE & UART_STATE_RXFULL) {
			/* Clear first: reading DATA may deliver the next byte. */
			UART0_INTSTATUS = UART_INT_RX;
			uart_putc((char)UART0_DATA);
		}
		irq_disable();
		NVIC_ISER0 = 1u << IRQ_UART0RX;
		if (!(UART0_STATE & UART_STATE_RXFULL))
			wfi();	/* a pending IRQ wakes it even while masked */
		irq_enable();
	}
}

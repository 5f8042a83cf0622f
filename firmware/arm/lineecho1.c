/*
 * lineecho1.c - MPS2-AN385 test guest: sends back every byte UART1
 * receives, on UART1, and nothing else.
 *
 * UART0 stays silent, so a test can tell the two serial ports (two qqq
 * data channels) apart. The core polls: no interrupt set-up to go wrong.
 */
#include "mps2.h"

#define UART1_BASE  0x40005000u
#define UART1_DATA  REG32(UART1_BASE + 0x00)
#define UART1_STATE REG32(UART1_BASE + 0x04)
#define UART1_CTRL  REG32(UART1_BASE + 0x08)

int main(void)
{
	UART1_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN;

	for (;;) {
		if (UART1_STATE & UART_STATE_RXFULL) {
			char c = (char)UART1_DATA;

			while (UART1_STATE & UART_STATE_TXFULL)
				;
			UART1_DATA = (uint32_t)c;
		}
	}
}

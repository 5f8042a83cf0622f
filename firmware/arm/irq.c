/*
 * irq.c - the MPS2-AN385 external interrupt vectors (IRQ 0-31), for
 * programs that use NVIC interrupts. Kept out of startup.c so the other
 * images stay byte-identical; mps2.ld places this table straight after
 * the 16 core vectors, where the NVIC expects it.
 */
#include "mps2.h"

/* Like startup.c's Default_Handler; an alias target must be local. */
void Default_IRQ_Handler(void)
{
	for (;;)
		;
}

#define WEAK_DEFAULT __attribute__((weak, alias("Default_IRQ_Handler")))
void UART0RX_Handler(void) WEAK_DEFAULT;
void UART0TX_Handler(void) WEAK_DEFAULT;
/* Only where asked for (-DIRQ_ETHERNET_HANDLER), so the images of the
 * other programs stay byte-identical to what they were. */
#ifdef IRQ_ETHERNET_HANDLER
void ETHERNET_Handler(void) WEAK_DEFAULT;	/* the LAN9118, IRQ 13 */
#define ETH ETHERNET_Handler
#else
#define ETH Default_IRQ_Handler
#endif

#define D Default_IRQ_Handler
__attribute__((section(".vectors.irq"), used))
static void (*const irq_vectors[32])(void) = {
	UART0RX_Handler, UART0TX_Handler, D, D, D, D, D, D,	/* 0-7 */
	D, D, D, D, D, ETH, D, D,	/* 8-15 */
	D, D, D, D, D, D, D, D,		/* 16-23 */
	D, D, D, D, D, D, D, D,		/* 24-31 */
};

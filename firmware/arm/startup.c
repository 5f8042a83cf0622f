/*
 * startup.c - shared start-up for the MPS2-AN385 test firmware:
 * vector table, reset handler (C runtime init) and polled UART0 output.
 *
 * Each program only has to provide main() and, if it wants interrupts,
 * a handler overriding one of the weak defaults below.
 */
#include "mps2.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

void Reset_Handler(void);

/* A stray exception parks the core where a debugger can see it. */
void Default_Handler(void)
{
	for (;;)
		;
}

#define WEAK_DEFAULT __attribute__((weak, alias("Default_Handler")))
void NMI_Handler(void) WEAK_DEFAULT;
void HardFault_Handler(void) WEAK_DEFAULT;
void MemManage_Handler(void) WEAK_DEFAULT;
void BusFault_Handler(void) WEAK_DEFAULT;
void UsageFault_Handler(void) WEAK_DEFAULT;
void SVC_Handler(void) WEAK_DEFAULT;
void DebugMon_Handler(void) WEAK_DEFAULT;
void PendSV_Handler(void) WEAK_DEFAULT;
void SysTick_Handler(void) WEAK_DEFAULT;

/* Core exceptions; irq.c appends the external IRQs for programs using them. */
__attribute__((section(".vectors"), used))
static void (*const vectors[16])(void) = {
	(void (*)(void))_estack,
	Reset_Handler,
	NMI_Handler,
	HardFault_Handler,
	MemManage_Handler,
	BusFault_Handler,
	UsageFault_Handler,
	0, 0, 0, 0,
	SVC_Handler,
	DebugMon_Handler,
	0,
	PendSV_Handler,
	SysTick_Handler,
};

void Reset_Handler(void)
{
	uint32_t *src = _sidata, *dst;

	for (dst = _sdata; dst < _edata;)
		*dst++ = *src++;
	for (dst = _sbss; dst < _ebss;)
		*dst++ = 0;

	/*
	 * With TX disabled QEMU never drains DATA, so uart_putc would spin
	 * on TXFULL; BAUDDIV < 16 is flagged as a guest error.
	 */
	UART0_BAUDDIV = 16;
	UART0_CTRL = UART_CTRL_TXEN;

	main();
	for (;;)
		wfi();
}

void uart_putc(char c)
{
	while (UART0_STATE & UART_STATE_TXFULL)
		;
	UART0_DATA = (uint8_t)c;
}

void uart_puts(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

void uart_putu(uint32_t n)
{
	char buf[10];	/* UINT32_MAX has 10 digits */
	int i = 0;

	do {
		buf[i++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	while (i)
		uart_putc(buf[--i]);
}

/*
 * mps2.h - the few MPS2-AN385 (Cortex-M3) registers and helpers the
 * test firmware needs. Kept as bare register macros: pulling in CMSIS
 * would dwarf the programs themselves.
 */
#ifndef MPS2_H
#define MPS2_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* CMSDK APB UART0: QEMU wires it to the first -serial backend. */
#define UART0_BASE    0x40004000u
#define UART0_DATA    REG32(UART0_BASE + 0x00)
#define UART0_STATE   REG32(UART0_BASE + 0x04)
#define UART0_CTRL    REG32(UART0_BASE + 0x08)
#define UART0_INTSTATUS REG32(UART0_BASE + 0x0C)
#define UART0_BAUDDIV REG32(UART0_BASE + 0x10)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN    0x1u
#define UART_CTRL_RXEN    0x2u
#define UART_CTRL_RXINTEN 0x8u
#define UART_INT_RX       0x2u	/* INTSTATUS, write 1 to clear */

/* NVIC; external IRQ n is vector 16 + n (see irq.c). */
#define NVIC_ISER0 REG32(0xE000E100)
#define NVIC_ICER0 REG32(0xE000E180)
#define IRQ_UART0RX 0
/* SCB ICSR: a SysTick that fired but whose handler has not run yet. */
#define SCB_ICSR REG32(0xE000ED04)
#define SCB_ICSR_PENDSTSET (1u << 26)

/* SysTick; with CLKSOURCE=processor QEMU counts at 25 MHz. */
#define SYST_CSR REG32(0xE000E010)
#define SYST_RVR REG32(0xE000E014)
#define SYST_CVR REG32(0xE000E018)
#define SYST_CSR_ENABLE    0x1u
#define SYST_CSR_TICKINT   0x2u
#define SYST_CSR_CLKSOURCE 0x4u
#define SYSTICK_1MS_RELOAD (25000u - 1)

static inline void wfi(void) { __asm__ volatile("wfi" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }

/* startup.c: enables UART0 TX before calling main(). */
void uart_putc(char c);
void uart_puts(const char *s);
void uart_putu(uint32_t n);

int main(void);

#endif

/*
 * poweroff.c - x86 guest that shuts the machine down right away.
 *
 * Lets tests check that a guest-initiated power-off ends QEMU cleanly
 * (exit status 0), and that what the guest printed in the step it
 * powered off in still reaches the simulator (the last line is written
 * immediately before the power-off).
 */
#include "x86.h"

/* PIIX4 PM1a control as placed by SeaBIOS on QEMU's i440fx "pc". */
#define PM1A_CNT 0x604
#define SLP_EN   0x2000	/* SLP_TYP 0 is soft-off (S5) in QEMU's DSDT */

int main(void)
{
	serial_puts("bye\n");
	serial_puts("powering off\n");
	while (!(inb(COM1 + 5) & 0x40))	/* LSR.TEMT: banner fully sent */
		;
	outw(PM1A_CNT, SLP_EN);
	for (;;)	/* only reached if power-off is not supported */
		__asm__ volatile("cli; hlt");
}

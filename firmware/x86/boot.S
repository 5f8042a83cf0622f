/*
 * boot.S - shared start-up for the x86 multiboot test guests.
 *
 * QEMU's -kernel loader accepts a 32-bit ELF carrying a multiboot v1
 * header, which lets us skip a boot sector entirely: we arrive in flat
 * 32-bit protected mode with paging and interrupts off. All that is
 * missing for C is a stack.
 */
/* Otherwise the symbol table names gcc's random temporary object. */
	.file "boot.S"

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x0   /* ELF image: QEMU takes load addresses from it */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.align 16
stack:
	.skip 4096
stack_top:

	.section .text
	.globl _start
_start:
	mov $stack_top, %esp
	call main
	/* main should never return; if it does, park the CPU quietly. */
1:	cli
	hlt
	jmp 1b

	/* No executable stack wanted; silences ld's warning. */
	.section .note.GNU-stack, "", @progbits

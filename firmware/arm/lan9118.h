/*
 * lan9118.h - a small polled/interrupt-woken driver for the SMSC LAN9118
 * Ethernet controller built into the MPS2-AN385 (QEMU: hw/net/lan9118.c;
 * on the real board a LAN9220, software compatible).
 *
 * One frame at a time, whole frames only: enough for a bare-metal node
 * answering UDP. Frames are Ethernet frames from the destination MAC on,
 * without the FCS (the controller adds and strips it).
 */
#ifndef LAN9118_H
#define LAN9118_H

#include <stdint.h>

/* MPS2-AN385: the controller's registers and its NVIC line. */
#define LAN9118_BASE 0x40200000u
#define IRQ_ETHERNET 13

/* Largest frame we move: 1500 bytes of payload, header, one VLAN tag. */
#define LAN9118_MAX_FRAME 1518

/*
 * Reset the controller and start it: MAC address, RX and TX on, the RX
 * interrupt armed (the NVIC line is the caller's to enable).
 *
 * mac: the address to use, or NULL to keep the one the controller loaded
 * from its EEPROM at reset (QEMU's `-nic ...,macaddr=`), falling back
 * to `fallback` when there is none. The address in use is written to
 * `used`. Returns 0, or -1 when no LAN9118 answers.
 */
int lan9118_init(const uint8_t *mac, const uint8_t fallback[6],
		 uint8_t used[6]);

/*
 * Send one frame of `len` bytes (14..LAN9118_MAX_FRAME); frames shorter
 * than the Ethernet minimum of 60 bytes are padded with zeros here, so
 * the wire sees the same bytes as from real hardware. Returns 0, or -1
 * if the frame is refused (bad length, no room, error status).
 */
int lan9118_send(const void *frame, uint32_t len);

/*
 * Take the oldest received frame into `buf` (`size` bytes, a multiple
 * of 4). Returns its length without FCS, 0 when none is waiting, -1 for
 * a frame dropped (error status, or larger than `size`).
 */
int lan9118_recv(uint32_t *buf, uint32_t size);

/* Frames waiting in the RX FIFO (a cheap check for a main loop). */
int lan9118_rx_pending(void);

/* Acknowledge the RX interrupt; call from the IRQ handler. */
void lan9118_irq_ack(void);

#endif

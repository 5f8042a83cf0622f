/*
 * lan9118.c - SMSC LAN9118 driver for the MPS2-AN385 firmware, written
 * from the register description of the LAN9118 datasheet (SMSC, rev. 1.5)
 * and checked against QEMU's model (hw/net/lan9118.c).
 *
 * The controller is used in its simplest mode: 32-bit register access,
 * one buffer per frame (first and last segment at once), no RX offset or
 * end padding, the TX status read back after every frame so its FIFO
 * never fills. Data words carry frame bytes little-endian: byte 0 of the
 * frame is bits 7:0 of the first word, as the Cortex-M reads memory.
 *
 * Every wait on the hardware is bounded: a controller that never
 * answers gives an error, not a hung firmware.
 */
#include "lan9118.h"
#include "mps2.h"

#define ETH_REG(off) REG32(LAN9118_BASE + (off))
#define RX_DATA_FIFO   ETH_REG(0x00)
#define TX_DATA_FIFO   ETH_REG(0x20)
#define RX_STATUS_FIFO ETH_REG(0x40)
#define TX_STATUS_FIFO ETH_REG(0x48)
#define IRQ_CFG        ETH_REG(0x54)
#define INT_STS        ETH_REG(0x58)
#define INT_EN         ETH_REG(0x5c)
#define BYTE_TEST      ETH_REG(0x64)
#define FIFO_INT       ETH_REG(0x68)
#define RX_CFG         ETH_REG(0x6c)
#define TX_CFG         ETH_REG(0x70)
#define HW_CFG         ETH_REG(0x74)
#define RX_FIFO_INF    ETH_REG(0x7c)
#define TX_FIFO_INF    ETH_REG(0x80)
#define PMT_CTRL       ETH_REG(0x84)
#define MAC_CSR_CMD    ETH_REG(0xa4)
#define MAC_CSR_DATA   ETH_REG(0xa8)
#define E2P_CMD        ETH_REG(0xb0)

#define BYTE_TEST_VALUE      0x87654321u	/* fixed; wrong order = bus problem */
#define HW_CFG_SRST          (1u << 0)
#define PMT_CTRL_READY       (1u << 0)
#define IRQ_CFG_TYPE_PUSHPULL (1u << 0)
#define IRQ_CFG_POL_HIGH     (1u << 4)
#define IRQ_CFG_EN           (1u << 8)
#define INT_RSFL             (1u << 3)	/* RX status FIFO above its level */
#define TX_CFG_TX_ON         (1u << 1)
#define E2P_CMD_MAC_LOADED   (1u << 8)
#define FIFO_INF_SUSED(v)    (((v) >> 16) & 0xffu)	/* status entries */
#define TX_FIFO_INF_TDFREE(v) ((v) & 0xffffu)	/* data FIFO bytes free */
#define STATUS_ES            (1u << 15)	/* error summary, RX and TX */
#define RX_STATUS_LEN(s)     (((s) >> 16) & 0x3fffu)	/* with the FCS */

/* TX command words (datasheet "TX command 'A'" and "'B'"). */
#define TX_CMD_A_FIRST_SEG   (1u << 13)
#define TX_CMD_A_LAST_SEG    (1u << 12)
#define TX_CMD_B_TAG(t)      ((uint32_t)(t) << 16)

/* MAC control and status registers, reached through MAC_CSR_CMD/DATA. */
#define MAC_CSR_BUSY   (1u << 31)
#define MAC_CSR_READ   (1u << 30)
#define MAC_CR    1
#define MAC_ADDRH 2
#define MAC_ADDRL 3
#define MAC_CR_RXEN (1u << 2)
#define MAC_CR_TXEN (1u << 3)
#define MAC_CR_FDPX (1u << 20)	/* full duplex: no collisions to handle */

#define MIN_FRAME 60	/* without FCS */
#define SPIN_LIMIT 100000u

static uint16_t tx_tag;

/* Wait (bounded) until (reg & mask) == want; 0 on success. */
static int wait_reg(volatile uint32_t *reg, uint32_t mask, uint32_t want)
{
	uint32_t n;

	for (n = 0; n < SPIN_LIMIT; n++)
		if ((*reg & mask) == want)
			return 0;
	return -1;
}

static int mac_write(uint32_t csr, uint32_t val)
{
	if (wait_reg(&MAC_CSR_CMD, MAC_CSR_BUSY, 0))
		return -1;
	MAC_CSR_DATA = val;
	MAC_CSR_CMD = MAC_CSR_BUSY | csr;
	return wait_reg(&MAC_CSR_CMD, MAC_CSR_BUSY, 0);
}

static int mac_read(uint32_t csr, uint32_t *val)
{
	if (wait_reg(&MAC_CSR_CMD, MAC_CSR_BUSY, 0))
		return -1;
	MAC_CSR_CMD = MAC_CSR_BUSY | MAC_CSR_READ | csr;
	if (wait_reg(&MAC_CSR_CMD, MAC_CSR_BUSY, 0))
		return -1;
	*val = MAC_CSR_DATA;
	return 0;
}

/* The address in ADDRL/ADDRH, byte 0 in the low bits (datasheet order). */
static int mac_get(uint8_t mac[6])
{
	uint32_t lo, hi;
	int i;

	if (mac_read(MAC_ADDRL, &lo) || mac_read(MAC_ADDRH, &hi))
		return -1;
	for (i = 0; i < 4; i++)
		mac[i] = (uint8_t)(lo >> (8 * i));
	mac[4] = (uint8_t)hi;
	mac[5] = (uint8_t)(hi >> 8);
	return 0;
}

static int mac_set(const uint8_t mac[6])
{
	uint32_t lo = mac[0] | (uint32_t)mac[1] << 8 | (uint32_t)mac[2] << 16 |
		      (uint32_t)mac[3] << 24;

	return mac_write(MAC_ADDRL, lo) ||
	       mac_write(MAC_ADDRH, mac[4] | (uint32_t)mac[5] << 8);
}

int lan9118_init(const uint8_t *mac, const uint8_t fallback[6],
		 uint8_t used[6])
{
	int i;

	if (BYTE_TEST != BYTE_TEST_VALUE)
		return -1;

	/* Soft reset; the controller reloads its EEPROM (and MAC) too. */
	HW_CFG = HW_CFG_SRST;
	if (wait_reg(&HW_CFG, HW_CFG_SRST, 0) ||
	    wait_reg(&PMT_CTRL, PMT_CTRL_READY, PMT_CTRL_READY))
		return -1;
	if (!mac && !(E2P_CMD & E2P_CMD_MAC_LOADED))
		mac = fallback;
	if (mac && mac_set(mac))
		return -1;
	if (mac_get(used))
		return -1;
	for (i = 0; i < 6 && mac; i++)
		if (used[i] != mac[i])
			return -1;

	/*
	 * Perfect filtering on our address plus broadcast (promiscuous,
	 * the reset default, would hand us every frame on a switch that
	 * floods); full duplex; both directions on.
	 */
	if (mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN))
		return -1;
	TX_CFG = TX_CFG_TX_ON;
	RX_CFG = 0;			/* no offset, 4-byte end alignment */

	/*
	 * RX status level 0: RSFL is raised as soon as one frame is in.
	 * Active-high push-pull output: QEMU (like the board) treats any
	 * other setting as active low, a line stuck on while idle.
	 */
	FIFO_INT = 0;
	INT_STS = 0xffffffffu;
	INT_EN = INT_RSFL;
	IRQ_CFG = IRQ_CFG_EN | IRQ_CFG_POL_HIGH | IRQ_CFG_TYPE_PUSHPULL;
	return 0;
}

int lan9118_send(const void *frame, uint32_t len)
{
	const uint8_t *p = frame;
	uint32_t wire = len < MIN_FRAME ? MIN_FRAME : len;
	uint32_t i, status;

	if (len < 14 || len > LAN9118_MAX_FRAME)
		return -1;
	/* Two command words and the data, rounded up to words. */
	if (TX_FIFO_INF_TDFREE(TX_FIFO_INF) < 8 + ((wire + 3) & ~3u))
		return -1;

	tx_tag++;
	TX_DATA_FIFO = TX_CMD_A_FIRST_SEG | TX_CMD_A_LAST_SEG | wire;
	TX_DATA_FIFO = TX_CMD_B_TAG(tx_tag) | wire;
	for (i = 0; i < wire; i += 4) {
		uint32_t w = 0, b;

		for (b = 0; b < 4; b++)
			if (i + b < len)
				w |= (uint32_t)p[i + b] << (8 * b);
		TX_DATA_FIFO = w;
	}

	/* One status per frame; reading it keeps the status FIFO empty. */
	for (i = 0; i < SPIN_LIMIT; i++)
		if (FIFO_INF_SUSED(TX_FIFO_INF))
			break;
	if (i == SPIN_LIMIT)
		return -1;
	status = TX_STATUS_FIFO;
	return (status & STATUS_ES) || (status >> 16) != tx_tag ? -1 : 0;
}

int lan9118_rx_pending(void)
{
	return FIFO_INF_SUSED(RX_FIFO_INF) != 0;
}

int lan9118_recv(uint32_t *buf, uint32_t size)
{
	uint32_t status, len, words, i;

	if (!lan9118_rx_pending())
		return 0;
	status = RX_STATUS_FIFO;
	len = RX_STATUS_LEN(status);
	words = (len + 3) / 4;
	/* The data must leave the FIFO even when the frame is dropped. */
	if ((status & STATUS_ES) || len < 4 + 14 || len - 4 > size) {
		for (i = 0; i < words; i++)
			(void)RX_DATA_FIFO;
		return -1;
	}
	for (i = 0; i < words; i++) {
		uint32_t w = RX_DATA_FIFO;

		if (4 * i < size)	/* the last word may be only FCS */
			buf[i] = w;
	}
	return (int)(len - 4);
}

void lan9118_irq_ack(void)
{
	INT_STS = INT_RSFL;
}

/*
 * udp_node.c - an MPS2-AN385 network node: a UDP "ECU" on the board's
 * LAN9118 (lan9118.c) and a minimal IPv4 stack (netstack.c).
 *
 * Serves, at NODE_IP:
 *   - ICMP echo (ping);
 *   - UDP port 7, echo: every datagram comes back unchanged;
 *   - UDP port 5000, the PI speed controller of arm/pi.c as a service:
 *     a datagram of signal lines ("setpoint=<v>\nspeed=<v>\n", the
 *     format of docs/signals.md) sets the inputs and runs one sample of
 *     the law (lib/pi_law.h, TS = 1 ms: the requester sets the pace);
 *     the reply is "voltage=<v>\n". A datagram that sets no input gets
 *     no reply.
 * With PERIOD_MS > 0 it is also a client: every PERIOD_MS ms of SysTick
 * time it sends "seq=<n> t=<ms>\n" from port 5001 to PEER_IP:PEER_PORT
 * and prints each reply.
 *
 * UART0 (the console) shows a banner, one line per datagram served and
 * one per reply received, each with its SysTick time in ms. Everything
 * runs on guest time: under icount the same frames in give the same
 * frames and lines out.
 *
 * Addresses are build-time: -DNODE_IP='IP4(10,0,0,3)'; the MAC address
 * is the one QEMU gives the NIC (`-nic ...,macaddr=`), or
 * -DNODE_MAC='0x02,0,0,0,0,9' to force one.
 */
#include "lan9118.h"
#include "mps2.h"
#include "netstack.h"
#include "pi_law.h"
#include "qqq_signals.h"

#ifndef NODE_IP
#define NODE_IP IP4(10, 0, 0, 2)
#endif
#ifndef PEER_IP
#define PEER_IP IP4(10, 0, 0, 1)
#endif
#ifndef PEER_PORT
#define PEER_PORT 7
#endif
#ifndef PERIOD_MS
#define PERIOD_MS 0	/* 0: serve only, never send on our own */
#endif

#define ECHO_PORT   7
#define PI_PORT     5000
#define CLIENT_PORT 5001
#define TS          0.001	/* s, one PI sample per request */

#define NVIC_ICPR0 REG32(0xE000E280)

static volatile uint32_t ticks;

/* The PI service's inputs, set by the signal lines of a request. */
static double setpoint, speed;
static const qqq_signal inputs[] = {
	{"setpoint", QQQ_REAL, &setpoint},
	{"speed", QQQ_REAL, &speed},
};

/* qqq_putc() writes into a reply while one is being built. */
static char reply[QQQ_SIGNAL_LINE_MAX];
static uint32_t reply_len;
static int replying;

void qqq_putc(char c)
{
	if (!replying)
		uart_putc(c);
	else if (reply_len < sizeof reply)
		reply[reply_len++] = c;
}

void SysTick_Handler(void)
{
	ticks++;
}

/* The NIC interrupt only wakes the main loop, which drains the FIFO. */
void ETHERNET_Handler(void)
{
	lan9118_irq_ack();
}

int net_output(const void *frame, uint32_t len)
{
	return lan9118_send(frame, len);
}

/* -- console ------------------------------------------------------------- */

static void put_hex2(uint8_t b)
{
	static const char hex[] = "0123456789abcdef";

	uart_putc(hex[b >> 4]);
	uart_putc(hex[b & 15]);
}

static void put_ip(uint32_t ip)
{
	int i;

	for (i = 24; i >= 0; i -= 8) {
		uart_putu((ip >> i) & 0xff);
		if (i)
			uart_putc('.');
	}
}

static void put_mac(const uint8_t mac[6])
{
	int i;

	for (i = 0; i < 6; i++) {
		if (i)
			uart_putc(':');
		put_hex2(mac[i]);
	}
}

/* "t=<ms> <what> <ip>:<port> " */
static void put_event(const char *what, uint32_t ip, uint16_t port)
{
	uart_puts("t=");
	uart_putu(ticks);
	uart_putc(' ');
	uart_puts(what);
	uart_putc(' ');
	put_ip(ip);
	uart_putc(':');
	uart_putu(port);
	uart_putc(' ');
}

/* Payload text on one line: a final '\n' dropped, other controls as '.'. */
static void put_text(const uint8_t *p, uint32_t len)
{
	uint32_t i;

	if (len && p[len - 1] == '\n')
		len--;
	for (i = 0; i < len; i++)
		uart_putc(p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.');
	uart_putc('\n');
}

/* -- the services -------------------------------------------------------- */

static void pi_request(uint32_t ip, uint16_t port, const uint8_t *p,
		       uint32_t len)
{
	static double integral;
	int set = 0;
	uint32_t i;

	for (i = 0; i < len; i++)
		set |= qqq_signals_feed((char)p[i]);
	if (!len || p[len - 1] != '\n')	/* a datagram is whole lines */
		set |= qqq_signals_feed('\n');
	put_event("pi", ip, port);
	if (!set) {
		uart_puts("no input\n");
		return;
	}
	replying = 1;
	reply_len = 0;
	qqq_signals_put_real("voltage", pi_law(&integral, TS, setpoint, speed));
	replying = 0;
	net_udp_send(ip, PI_PORT, port, reply, reply_len);
	put_text((const uint8_t *)reply, reply_len);
}

void net_udp_input(uint32_t src_ip, uint16_t src_port, uint16_t dst_port,
		   const uint8_t *data, uint32_t len)
{
	if (dst_port == ECHO_PORT) {
		net_udp_send(src_ip, ECHO_PORT, src_port, data, len);
		put_event("echo", src_ip, src_port);
		uart_putu(len);
		uart_puts(" bytes\n");
	} else if (dst_port == PI_PORT) {
		pi_request(src_ip, src_port, data, len);
	} else if (dst_port == CLIENT_PORT) {
		put_event("reply", src_ip, src_port);
		put_text(data, len);
	}
}

/* Decimal into p; returns the end. */
static char *fmt_u(char *p, uint32_t n)
{
	char digits[10];
	int i = 0;

	do {
		digits[i++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	while (i)
		*p++ = digits[--i];
	return p;
}

static char *fmt_s(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

static void send_request(uint32_t seq, uint32_t now)
{
	char msg[32], *p = msg;

	p = fmt_s(p, "seq=");
	p = fmt_u(p, seq);
	p = fmt_s(p, " t=");
	p = fmt_u(p, now);
	*p++ = '\n';
	net_udp_send(PEER_IP, CLIENT_PORT, PEER_PORT, msg, (uint32_t)(p - msg));
}

/* -- main loop ----------------------------------------------------------- */

int main(void)
{
#ifdef NODE_MAC
	static const uint8_t forced[6] = {NODE_MAC};
	const uint8_t *mac = forced;
#else
	const uint8_t *mac = 0;
#endif
	/* Without an EEPROM address: locally administered, from the IP. */
	const uint8_t fallback[6] = {0x02, 0x00, NODE_IP >> 24,
				     (NODE_IP >> 16) & 0xff,
				     (NODE_IP >> 8) & 0xff, NODE_IP & 0xff};
	static uint32_t frame[(LAN9118_MAX_FRAME + 3) / 4];
	uint8_t used[6];
	uint32_t done = 0, seq = 0;

	qqq_signals_init(inputs, sizeof inputs / sizeof inputs[0]);
	if (lan9118_init(mac, fallback, used)) {
		uart_puts("udp_node: no LAN9118\n");
		return 0;
	}
	net_init(used, NODE_IP);

	uart_puts("udp_node ");
	put_ip(NODE_IP);
	uart_puts(" mac ");
	put_mac(used);
	uart_puts(" echo 7 pi 5000\n");
	if (PERIOD_MS) {
		uart_puts("client to ");
		put_ip(PEER_IP);
		uart_putc(':');
		uart_putu(PEER_PORT);
		uart_puts(" every ");
		uart_putu(PERIOD_MS);
		uart_puts(" ms\n");
	}

	SYST_RVR = SYSTICK_1MS_RELOAD;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
	/* The line was active low until lan9118_init: drop that pending. */
	NVIC_ICPR0 = 1u << IRQ_ETHERNET;
	NVIC_ISER0 = 1u << IRQ_ETHERNET;

	for (;;) {
		int len;

		/* Masked check-then-wfi, as in ticks.c: no wake-up is lost. */
		irq_disable();
		while (!lan9118_rx_pending() && ticks == done) {
			wfi();
			irq_enable();
			irq_disable();
		}
		irq_enable();

		while ((len = lan9118_recv(frame, sizeof frame)) != 0)
			if (len > 0)
				net_input((const uint8_t *)frame, (uint32_t)len);

		/* Every tick counts, even if several passed while busy. */
		while (done != ticks) {
			done++;
			/* (The divisor is never 0: no warning when PERIOD_MS is.) */
			if (PERIOD_MS && done % (PERIOD_MS ? PERIOD_MS : 1) == 0)
				send_request(++seq, done);
		}
	}
}

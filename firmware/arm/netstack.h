/*
 * netstack.h - a minimal IPv4 stack for bare-metal nodes: ARP (answers
 * for its address, resolves peers), IPv4 without fragments or options
 * sent, ICMP echo reply, UDP with checksums. Board-independent and
 * libc-free, like lib/qqq_signals: the firmware supplies net_output()
 * to send a frame and net_udp_input() to take datagrams, and hands every
 * received Ethernet frame to net_input().
 *
 * On-link only (no gateway, no netmask): peers are on the same Ethernet.
 * Not reentrant: call everything from one context (the main loop).
 */
#ifndef NETSTACK_H
#define NETSTACK_H

#include <stdint.h>

/* An IPv4 address as a number, a.b.c.d = 0xaabbccdd. */
#define IP4(a, b, c, d) \
	((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))

#define NET_MTU 1500
#define NET_UDP_MAX (NET_MTU - 20 - 8)	/* UDP payload in one datagram */

/* What the stack saw; the firmware may print it. */
struct net_stats {
	uint32_t rx_frames;	/* handed to net_input() */
	uint32_t rx_dropped;	/* malformed, bad checksum, fragment */
	uint32_t arp_replies;	/* ARP requests for us answered */
	uint32_t icmp_echoes;	/* echo requests answered */
	uint32_t udp_in;	/* datagrams handed to net_udp_input() */
	uint32_t udp_out;	/* datagrams sent or queued for ARP */
	uint32_t arp_lost;	/* datagrams dropped waiting for ARP */
};
extern struct net_stats net_stats;

/* Provided by the firmware: send one Ethernet frame (no FCS). */
int net_output(const void *frame, uint32_t len);

/* Provided by the firmware: a datagram for us arrived. */
void net_udp_input(uint32_t src_ip, uint16_t src_port, uint16_t dst_port,
		   const uint8_t *data, uint32_t len);

void net_init(const uint8_t mac[6], uint32_t ip);

/* One received Ethernet frame (no FCS). */
void net_input(const uint8_t *frame, uint32_t len);

/*
 * Send a datagram. Returns 0 when sent, 1 when it waits for the peer's
 * ARP reply (one datagram waits; a newer one replaces it, counted in
 * arp_lost), -1 when it cannot be sent (too long, output failed).
 */
int net_udp_send(uint32_t dst_ip, uint16_t src_port, uint16_t dst_port,
		 const void *data, uint32_t len);

#endif

/*
 * netstack.c - the minimal IPv4 stack of netstack.h.
 *
 * Frames are built in place in one transmit buffer; a datagram for a
 * peer whose MAC address is not known yet is parked (one slot) while an
 * ARP request goes out, and leaves as soon as the peer answers. Input is
 * checked before it is believed: lengths against the frame, the IPv4
 * header checksum, the UDP checksum (when the sender set one) and the
 * ICMP checksum; anything else is dropped and counted.
 *
 * What we send, so that runs and tests can expect exact bytes: IPv4
 * header of 20 bytes, TTL 64, don't-fragment set, identification 1, 2,
 * 3, ... per datagram sent; UDP checksum always set.
 */
#include "netstack.h"

#define ETH_HLEN 14
#define ETH_P_IP  0x0800
#define ETH_P_ARP 0x0806
#define ARP_LEN 28
#define IP_HLEN 20
#define IP_PROTO_ICMP 1
#define IP_PROTO_UDP 17
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP_TTL 64
#define UDP_HLEN 8
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ARP_REQUEST 1
#define ARP_REPLY 2
#define ARP_ENTRIES 4

struct net_stats net_stats;

static uint8_t my_mac[6];
static uint32_t my_ip;
static uint16_t ip_id;

static struct {
	uint32_t ip;		/* 0: free */
	uint8_t mac[6];
} arp_cache[ARP_ENTRIES];
static unsigned arp_next;	/* round-robin victim */

static uint8_t tx[ETH_HLEN + NET_MTU] __attribute__((aligned(4)));
static uint8_t parked[ETH_HLEN + NET_MTU] __attribute__((aligned(4)));
static uint32_t parked_len, parked_ip;

static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* -- bytes in network order; no libc ----------------------------------- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}

static void copy(uint8_t *dst, const uint8_t *src, uint32_t n)
{
	while (n--)
		*dst++ = *src++;
}

static int same(const uint8_t *a, const uint8_t *b, uint32_t n)
{
	while (n--)
		if (*a++ != *b++)
			return 0;
	return 1;
}

/* The Internet checksum (RFC 1071): add 16-bit words, fold, complement. */
static uint32_t sum16(uint32_t sum, const uint8_t *p, uint32_t len)
{
	for (; len > 1; p += 2, len -= 2)
		sum += get16(p);
	if (len)
		sum += (uint32_t)p[0] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* The UDP pseudo-header: addresses, protocol, UDP length. */
static uint32_t pseudo_sum(uint32_t src, uint32_t dst, uint32_t udp_len)
{
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) +
	       IP_PROTO_UDP + udp_len;
}

/* -- ARP ----------------------------------------------------------------- */

static int arp_find(uint32_t ip)
{
	int i;

	for (i = 0; i < ARP_ENTRIES; i++)
		if (arp_cache[i].ip == ip)
			return i;
	return -1;
}

static void arp_store(int i, uint32_t ip, const uint8_t *mac)
{
	arp_cache[i].ip = ip;
	copy(arp_cache[i].mac, mac, 6);
}

static void eth_header(uint8_t *f, const uint8_t *dst, uint32_t type)
{
	copy(f, dst, 6);
	copy(f + 6, my_mac, 6);
	put16(f + 12, type);
}

static void arp_send(uint32_t op, const uint8_t *tha, uint32_t tpa)
{
	uint8_t *a = tx + ETH_HLEN;

	eth_header(tx, op == ARP_REQUEST ? broadcast : tha, ETH_P_ARP);
	put16(a, 1);			/* Ethernet */
	put16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	copy(a + 8, my_mac, 6);
	put32(a + 14, my_ip);
	if (op == ARP_REQUEST)
		for (int i = 0; i < 6; i++)
			a[18 + i] = 0;
	else
		copy(a + 18, tha, 6);
	put32(a + 24, tpa);
	net_output(tx, ETH_HLEN + ARP_LEN);
}

/* A peer's address became known: the parked datagram can leave. */
static void arp_learned(uint32_t ip, const uint8_t *mac)
{
	if (parked_len && parked_ip == ip) {
		copy(parked, mac, 6);
		net_output(parked, parked_len);
		parked_len = 0;
	}
}

static void arp_input(const uint8_t *a, uint32_t len)
{
	uint32_t spa, tpa;
	int i;

	if (len < ARP_LEN || get16(a) != 1 || get16(a + 2) != ETH_P_IP ||
	    a[4] != 6 || a[5] != 4) {
		net_stats.rx_dropped++;
		return;
	}
	spa = get32(a + 14);
	tpa = get32(a + 24);

	/* RFC 826: refresh a known sender; learn it if we are the target. */
	i = arp_find(spa);
	if (spa && i >= 0)
		arp_store(i, spa, a + 8);
	if (tpa != my_ip)
		return;
	if (spa && i < 0) {
		arp_store(arp_next, spa, a + 8);
		arp_next = (arp_next + 1) % ARP_ENTRIES;
	}
	if (get16(a + 6) == ARP_REQUEST) {
		arp_send(ARP_REPLY, a + 8, spa);
		net_stats.arp_replies++;
	}
	if (spa)
		arp_learned(spa, a + 8);
}

/* -- IPv4 ---------------------------------------------------------------- */

/*
 * Finish the IPv4 header of the frame in tx (payload of `len` bytes
 * already in place) and send it, or park it until ARP answers.
 */
static int ip_output(uint32_t dst, uint32_t proto, uint32_t len)
{
	uint8_t *ip = tx + ETH_HLEN;
	uint32_t frame_len = ETH_HLEN + IP_HLEN + len;
	int i;

	ip[0] = 0x45;			/* version 4, 5 words */
	ip[1] = 0;
	put16(ip + 2, IP_HLEN + len);
	put16(ip + 4, ++ip_id);
	put16(ip + 6, IP_DF);
	ip[8] = IP_TTL;
	ip[9] = (uint8_t)proto;
	put16(ip + 10, 0);
	put32(ip + 12, my_ip);
	put32(ip + 16, dst);
	put16(ip + 10, fold(sum16(0, ip, IP_HLEN)));

	i = arp_find(dst);
	if (i >= 0) {
		eth_header(tx, arp_cache[i].mac, ETH_P_IP);
		return net_output(tx, frame_len) ? -1 : 0;
	}
	if (parked_len)
		net_stats.arp_lost++;
	eth_header(tx, broadcast, ETH_P_IP);	/* filled in by arp_learned */
	copy(parked, tx, frame_len);
	parked_len = frame_len;
	parked_ip = dst;
	arp_send(ARP_REQUEST, broadcast, dst);
	return 1;
}

static void icmp_input(uint32_t src, const uint8_t *m, uint32_t len)
{
	uint8_t *out = tx + ETH_HLEN + IP_HLEN;

	if (len < 8 || fold(sum16(0, m, len)) != 0) {
		net_stats.rx_dropped++;
		return;
	}
	if (m[0] != ICMP_ECHO_REQUEST || m[1] != 0)
		return;
	/* Same identifier, sequence and data; only the type changes. */
	copy(out, m, len);
	out[0] = ICMP_ECHO_REPLY;
	put16(out + 2, 0);
	put16(out + 2, fold(sum16(0, out, len)));
	net_stats.icmp_echoes++;
	ip_output(src, IP_PROTO_ICMP, len);
}

static void udp_input(uint32_t src, const uint8_t *u, uint32_t len)
{
	uint32_t ulen;

	if (len < UDP_HLEN) {
		net_stats.rx_dropped++;
		return;
	}
	ulen = get16(u + 4);
	if (ulen < UDP_HLEN || ulen > len ||
	    (get16(u + 6) &&
	     fold(sum16(pseudo_sum(src, my_ip, ulen), u, ulen)) != 0)) {
		net_stats.rx_dropped++;
		return;
	}
	net_stats.udp_in++;
	net_udp_input(src, get16(u), get16(u + 2), u + UDP_HLEN,
		      ulen - UDP_HLEN);
}

static void ip_input(const uint8_t *ip, uint32_t len)
{
	uint32_t hlen, total, src;

	if (len < IP_HLEN || ip[0] >> 4 != 4) {
		net_stats.rx_dropped++;
		return;
	}
	hlen = (ip[0] & 15u) * 4;
	total = get16(ip + 2);
	/* Ethernet pads short packets: the IP length is the truth. */
	if (hlen < IP_HLEN || total < hlen || total > len ||
	    fold(sum16(0, ip, hlen)) != 0) {
		net_stats.rx_dropped++;
		return;
	}
	if (get32(ip + 16) != my_ip)
		return;
	if (get16(ip + 6) & (IP_MF | IP_OFFSET)) {	/* no reassembly */
		net_stats.rx_dropped++;
		return;
	}
	src = get32(ip + 12);
	if (ip[9] == IP_PROTO_ICMP)
		icmp_input(src, ip + hlen, total - hlen);
	else if (ip[9] == IP_PROTO_UDP)
		udp_input(src, ip + hlen, total - hlen);
}

/* -- the interface ------------------------------------------------------- */

void net_init(const uint8_t mac[6], uint32_t ip)
{
	copy(my_mac, mac, 6);
	my_ip = ip;
}

void net_input(const uint8_t *f, uint32_t len)
{
	net_stats.rx_frames++;
	if (len < ETH_HLEN) {
		net_stats.rx_dropped++;
		return;
	}
	/* The NIC filters already; a promiscuous one must not fool us. */
	if (!same(f, my_mac, 6) && !same(f, broadcast, 6))
		return;
	switch (get16(f + 12)) {
	case ETH_P_ARP:
		arp_input(f + ETH_HLEN, len - ETH_HLEN);
		break;
	case ETH_P_IP:
		ip_input(f + ETH_HLEN, len - ETH_HLEN);
		break;
	}
}

int net_udp_send(uint32_t dst_ip, uint16_t src_port, uint16_t dst_port,
		 const void *data, uint32_t len)
{
	uint8_t *u = tx + ETH_HLEN + IP_HLEN;
	uint16_t sum;

	if (len > NET_UDP_MAX)
		return -1;
	put16(u, src_port);
	put16(u + 2, dst_port);
	put16(u + 4, UDP_HLEN + len);
	put16(u + 6, 0);
	copy(u + UDP_HLEN, data, len);
	sum = fold(sum16(pseudo_sum(my_ip, dst_ip, UDP_HLEN + len), u,
			 UDP_HLEN + len));
	put16(u + 6, sum ? sum : 0xffff);	/* 0 would mean "none" */
	net_stats.udp_out++;
	return ip_output(dst_ip, IP_PROTO_UDP, UDP_HLEN + len);
}

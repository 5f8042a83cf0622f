/*
 * qqq network backend: a guest NIC's Ethernet frames exchanged with the
 * simulator, each at an exact virtual time.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * "-netdev qqq,id=NAME" is a data channel of kind net over the qqq socket
 * (protocol version 3, docs/protocol-v2.md).  Every frame the NIC sends is
 * stamped with the virtual time it was sent and goes back with that step's
 * reply.  Every frame the simulator sends with an advance carries a
 * virtual delivery time inside the step and is handed to the NIC exactly
 * then, by a virtual-clock timer; one whose time has passed already goes
 * to the NIC at the start of the step.  Host timing never decides when a
 * frame arrives, so a run under icount is repeatable bit for bit, and a
 * network simulator can model delays to the nanosecond.
 *
 * A channel's bytes are records {u64 time_ns, u32 length, frame}, whole
 * records in every block, so frame boundaries survive the wire's
 * per-channel concatenation.
 */

#include "qemu/osdep.h"
#include "net/net.h"
#include "net/clients.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/timer.h"
#include "qqq/qqq-channel.h"

/* A record's fixed fields: delivery or send time, frame length. */
#define QQQ_NET_RECORD_HEADER 12
/* Ethernet addresses and type at least; QEMU's NICs send at most 64 KiB. */
#define QQQ_NET_MIN_FRAME 14
#define QQQ_NET_MAX_FRAME 65535

typedef struct QqqNetFrame {
    int64_t time_ns;
    size_t len;
    uint8_t data[];
} QqqNetFrame;

typedef struct QqqNetState {
    NetClientState nc;
    QqqChannel *channel;
    GQueue pending;         /* QqqNetFrame, in delivery order */
    QEMUTimer *timer;       /* QEMU_CLOCK_VIRTUAL, at the first pending */
} QqqNetState;

static void put_record(GByteArray *b, int64_t time_ns, const uint8_t *data,
                       size_t len)
{
    uint8_t hdr[QQQ_NET_RECORD_HEADER];

    stq_be_p(hdr, time_ns);
    stl_be_p(hdr + 8, len);
    g_byte_array_append(b, hdr, sizeof(hdr));
    g_byte_array_append(b, data, len);
}

/* The guest sent a frame: it goes with this step's reply, stamped now. */
static ssize_t qqq_net_receive(NetClientState *nc, const uint8_t *buf,
                               size_t size)
{
    QqqNetState *s = DO_UPCAST(QqqNetState, nc, nc);

    put_record(s->channel->out, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL), buf,
               size);
    return size;
}

/* Hand the NIC every frame whose time has come; wait for the next one. */
static void qqq_net_deliver(void *opaque)
{
    QqqNetState *s = opaque;
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
    QqqNetFrame *f;

    while ((f = g_queue_peek_head(&s->pending)) && f->time_ns <= now) {
        g_queue_pop_head(&s->pending);
        /* A NIC not ready yet gets it from QEMU's queue when it is. */
        qemu_send_packet(&s->nc, f->data, f->len);
        g_free(f);
    }
    if (f) {
        timer_mod(s->timer, f->time_ns);
    } else {
        timer_del(s->timer);
    }
}

/* Keep pending frames in time order; equal times keep their arrival order. */
static void qqq_net_enqueue(QqqNetState *s, int64_t time_ns,
                            const uint8_t *data, size_t len)
{
    QqqNetFrame *f = g_malloc(sizeof(*f) + len);
    GList *after = g_queue_peek_tail_link(&s->pending);

    f->time_ns = time_ns;
    f->len = len;
    memcpy(f->data, data, len);
    while (after && ((QqqNetFrame *)after->data)->time_ns > time_ns) {
        after = after->prev;
    }
    if (after) {
        g_queue_insert_after(&s->pending, after, f);
    } else {
        g_queue_push_head(&s->pending, f);
    }
}

/*
 * A block is whole records, each due inside the step (before its end) or
 * already due (at or before its start: late, delivered at once).  A frame
 * due later belongs to a later step's advance: the simulator keeps it.
 */
static char *qqq_net_check(void *opaque, const uint8_t *data, size_t len,
                           int64_t start_ns, int64_t end_ns)
{
    size_t pos = 0;
    int n = 0;

    while (pos < len) {
        int64_t time_ns;
        uint32_t flen;

        if (len - pos < QQQ_NET_RECORD_HEADER) {
            return g_strdup_printf("network frame %d: %zu bytes left, less "
                                   "than its %d-byte header", n, len - pos,
                                   QQQ_NET_RECORD_HEADER);
        }
        time_ns = ldq_be_p(data + pos);
        flen = ldl_be_p(data + pos + 8);
        if (flen < QQQ_NET_MIN_FRAME || flen > QQQ_NET_MAX_FRAME) {
            return g_strdup_printf("network frame %d is %u bytes; frames are "
                                   "%d to %d bytes", n, flen,
                                   QQQ_NET_MIN_FRAME, QQQ_NET_MAX_FRAME);
        }
        if (flen > len - pos - QQQ_NET_RECORD_HEADER) {
            return g_strdup_printf("network frame %d claims %u bytes, %zu "
                                   "remain", n, flen,
                                   len - pos - QQQ_NET_RECORD_HEADER);
        }
        if (time_ns < 0 || (time_ns > start_ns && time_ns >= end_ns)) {
            return g_strdup_printf("network frame %d is due at %" PRId64
                                   " ns, not in the step from %" PRId64
                                   " ns to %" PRId64 " ns", n, time_ns,
                                   start_ns, end_ns);
        }
        pos += QQQ_NET_RECORD_HEADER + flen;
        n++;
    }
    return NULL;
}

static void qqq_net_input(void *opaque, const uint8_t *data, size_t len)
{
    QqqNetState *s = opaque;
    size_t pos = 0;

    while (pos < len) {
        uint32_t flen = ldl_be_p(data + pos + 8);

        qqq_net_enqueue(s, ldq_be_p(data + pos),
                        data + pos + QQQ_NET_RECORD_HEADER, flen);
        pos += QQQ_NET_RECORD_HEADER + flen;
    }
    qqq_net_deliver(s);
}

/*
 * Between steps nothing is pending (every frame is due before its step's
 * end), but a state is self-describing anyway: the frames still waiting,
 * as records behind their count.
 */
static void qqq_net_save(void *opaque, GByteArray *b)
{
    QqqNetState *s = opaque;
    uint8_t word[4];
    GList *l;

    stl_be_p(word, g_queue_get_length(&s->pending));
    g_byte_array_append(b, word, 4);
    for (l = s->pending.head; l; l = l->next) {
        QqqNetFrame *f = l->data;

        put_record(b, f->time_ns, f->data, f->len);
    }
}

static bool qqq_net_load(void *opaque, const uint8_t **pp, const uint8_t *end)
{
    QqqNetState *s = opaque;
    const uint8_t *p = *pp;
    uint32_t i, n;

    if (end - p < 4) {
        return false;
    }
    n = ldl_be_p(p);
    p += 4;
    g_queue_clear_full(&s->pending, g_free);
    qemu_purge_queued_packets(&s->nc);
    for (i = 0; i < n; i++) {
        uint32_t flen;

        if (end - p < QQQ_NET_RECORD_HEADER) {
            return false;
        }
        flen = ldl_be_p(p + 8);
        if (end - p - QQQ_NET_RECORD_HEADER < flen) {
            return false;
        }
        qqq_net_enqueue(s, ldq_be_p(p), p + QQQ_NET_RECORD_HEADER, flen);
        p += QQQ_NET_RECORD_HEADER + flen;
    }
    *pp = p;
    qqq_net_deliver(s);
    return true;
}

static const QqqChannelOps qqq_net_ops = {
    .kind = QQQ_KIND_NET,
    .check = qqq_net_check,
    .input = qqq_net_input,
    .save = qqq_net_save,
    .load = qqq_net_load,
};

static void qqq_net_cleanup(NetClientState *nc)
{
    QqqNetState *s = DO_UPCAST(QqqNetState, nc, nc);

    qqq_channel_remove(s->channel);
    s->channel = NULL;
    timer_free(s->timer);
    g_queue_clear_full(&s->pending, g_free);
}

static NetClientInfo net_qqq_info = {
    .type = NET_CLIENT_DRIVER_QQQ,
    .size = sizeof(QqqNetState),
    .receive = qqq_net_receive,
    .cleanup = qqq_net_cleanup,
};

int net_init_qqq(const Netdev *netdev, const char *name,
                 NetClientState *peer, Error **errp)
{
    NetClientState *nc;
    QqqNetState *s;

    if (!name) {
        error_setg(errp, "a qqq network channel needs an id (its name)");
        return -1;
    }
    nc = qemu_new_net_client(&net_qqq_info, peer, "qqq", name);
    qemu_set_info_str(nc, "qqq channel %s", name);
    s = DO_UPCAST(QqqNetState, nc, nc);
    g_queue_init(&s->pending);
    s->timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, qqq_net_deliver, s);
    s->channel = qqq_channel_add(name, &qqq_net_ops, s);
    return 0;
}

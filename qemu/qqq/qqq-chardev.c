/*
 * qqq chardev backend: guest serial data exchanged only at synchronization
 * points.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * "-chardev qqq,id=NAME" gives any guest UART a data channel over the qqq
 * socket (protocol version 2).  What the guest transmits is collected and
 * sent with the reply of the step it was transmitted in.  What the
 * simulator sends with an advance is handed to the UART at the start of
 * that step, as fast as the UART model accepts it: the rest waits for the
 * front end's accept_input call, which the UART makes when the guest reads
 * its data register.  Not every model calls it when it becomes ready for
 * other reasons (the guest enabling its receiver), so while bytes wait the
 * backend also offers them again every QQQ_RETRY_NS of virtual time.  Host
 * timing never decides when a byte arrives, so a run under icount is
 * repeatable bit for bit.
 *
 * The backend needs no options of its own, so it uses the generic
 * ChardevCommon parse path and no QAPI schema change.
 */

#include "qemu/osdep.h"
#include "chardev/char.h"
#include "qemu/bswap.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qom/object.h"
#include "qqq/qqq-channel.h"

#define TYPE_CHARDEV_QQQ "chardev-qqq"

/* Virtual time between offers of input the front end has not taken. */
#define QQQ_RETRY_NS (100 * SCALE_US)

typedef struct QqqChardev {
    Chardev parent;
    QqqChannel *channel;
    GByteArray *in;         /* from the simulator, not yet accepted */
    size_t in_pos;
    QEMUTimer *retry;       /* QEMU_CLOCK_VIRTUAL, armed while input waits */
} QqqChardev;

DECLARE_INSTANCE_CHECKER(QqqChardev, QQQ_CHARDEV, TYPE_CHARDEV_QQQ)

static void qqq_chr_push(QqqChardev *q)
{
    Chardev *chr = CHARDEV(q);

    while (q->in_pos < q->in->len) {
        int room = qemu_chr_be_can_write(chr);
        int n = MIN(room, q->in->len - q->in_pos);

        if (n <= 0) {
            timer_mod(q->retry, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) +
                      QQQ_RETRY_NS);
            return;
        }
        qemu_chr_be_write(chr, q->in->data + q->in_pos, n);
        q->in_pos += n;
    }
    g_byte_array_set_size(q->in, 0);
    q->in_pos = 0;
    timer_del(q->retry);
}

static void qqq_chr_retry(void *opaque)
{
    qqq_chr_push(opaque);
}

/* Any bytes are a sound block: a serial line has no framing of its own. */
static char *qqq_chr_check(void *opaque, const uint8_t *data, size_t len,
                           int64_t start_ns, int64_t end_ns)
{
    return NULL;
}

static void qqq_chr_input(void *opaque, const uint8_t *data, size_t len)
{
    QqqChardev *q = opaque;

    g_byte_array_append(q->in, data, len);
    qqq_chr_push(q);
}

/*
 * Between two steps a serial channel holds the input the device has not
 * taken yet and when the retry timer offers it next.
 */
static void qqq_chr_save(void *opaque, GByteArray *b)
{
    QqqChardev *q = opaque;
    uint8_t word[8];

    stq_be_p(word, timer_expire_time_ns(q->retry));
    g_byte_array_append(b, word, 8);
    stl_be_p(word, q->in->len - q->in_pos);
    g_byte_array_append(b, word, 4);
    g_byte_array_append(b, q->in->data + q->in_pos, q->in->len - q->in_pos);
}

static bool qqq_chr_load(void *opaque, const uint8_t **pp, const uint8_t *end)
{
    QqqChardev *q = opaque;
    const uint8_t *p = *pp;
    int64_t expire;
    uint32_t n;

    if (end - p < 12 || end - p - 12 < ldl_be_p(p + 8)) {
        return false;
    }
    expire = ldq_be_p(p);
    n = ldl_be_p(p + 8);
    g_byte_array_set_size(q->in, 0);
    g_byte_array_append(q->in, p + 12, n);
    q->in_pos = 0;
    if (expire >= 0) {
        timer_mod(q->retry, expire);
    } else {
        timer_del(q->retry);
    }
    *pp = p + 12 + n;
    return true;
}

static const QqqChannelOps qqq_chr_ops = {
    .kind = QQQ_KIND_SERIAL,
    .check = qqq_chr_check,
    .input = qqq_chr_input,
    .save = qqq_chr_save,
    .load = qqq_chr_load,
};

static int qqq_chr_write(Chardev *chr, const uint8_t *buf, int len)
{
    g_byte_array_append(QQQ_CHARDEV(chr)->channel->out, buf, len);
    return len;
}

static void qqq_chr_accept_input(Chardev *chr)
{
    qqq_chr_push(QQQ_CHARDEV(chr));
}

static void qqq_chr_open(Chardev *chr, ChardevBackend *backend,
                         bool *be_opened, Error **errp)
{
    QqqChardev *q = QQQ_CHARDEV(chr);

    q->in = g_byte_array_new();
    q->retry = timer_new_ns(QEMU_CLOCK_VIRTUAL, qqq_chr_retry, q);
    q->channel = qqq_channel_add(chr->label, &qqq_chr_ops, q);
}

static void qqq_chr_finalize(Object *obj)
{
    QqqChardev *q = QQQ_CHARDEV(obj);

    qqq_channel_remove(q->channel);
    if (q->in) {
        timer_free(q->retry);
        g_byte_array_unref(q->in);
    }
}

static void qqq_chr_class_init(ObjectClass *oc, void *data)
{
    ChardevClass *cc = CHARDEV_CLASS(oc);

    cc->open = qqq_chr_open;
    cc->chr_write = qqq_chr_write;
    cc->chr_accept_input = qqq_chr_accept_input;
}

static const TypeInfo qqq_chr_type_info = {
    .name = TYPE_CHARDEV_QQQ,
    .parent = TYPE_CHARDEV,
    .instance_size = sizeof(QqqChardev),
    .instance_finalize = qqq_chr_finalize,
    .class_init = qqq_chr_class_init,
};

static void qqq_chr_register_types(void)
{
    type_register_static(&qqq_chr_type_info);
}

type_init(qqq_chr_register_types);

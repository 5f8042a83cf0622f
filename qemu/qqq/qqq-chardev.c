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
#include "qqq/qqq-internal.h"

#define TYPE_CHARDEV_QQQ "chardev-qqq"

/* Virtual time between offers of input the front end has not taken. */
#define QQQ_RETRY_NS (100 * SCALE_US)

typedef struct QqqChardev {
    Chardev parent;
    GByteArray *in;         /* from the simulator, not yet accepted */
    size_t in_pos;
    GByteArray *out;        /* from the guest, since the last reply */
    QEMUTimer *retry;       /* QEMU_CLOCK_VIRTUAL, armed while input waits */
} QqqChardev;

DECLARE_INSTANCE_CHECKER(QqqChardev, QQQ_CHARDEV, TYPE_CHARDEV_QQQ)

static GPtrArray *qqq_channels;

int qqq_channel_count(void)
{
    return qqq_channels ? qqq_channels->len : 0;
}

const char *qqq_channel_name(int index)
{
    Chardev *chr = g_ptr_array_index(qqq_channels, index);

    return chr->label;
}

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

void qqq_channel_input(int index, const uint8_t *data, size_t len)
{
    QqqChardev *q = QQQ_CHARDEV(g_ptr_array_index(qqq_channels, index));

    g_byte_array_append(q->in, data, len);
    qqq_chr_push(q);
}

GByteArray *qqq_channel_output(int index)
{
    return QQQ_CHARDEV(g_ptr_array_index(qqq_channels, index))->out;
}

/*
 * What the channels hold between two steps, for a machine state
 * (qqq-state.c): per channel, the input the device has not taken yet and
 * when the retry timer offers it next.  Output is always empty there: the
 * reply just took it.
 */
void qqq_channel_save(GByteArray *b)
{
    uint8_t word[8];
    int i;

    stl_be_p(word, qqq_channel_count());
    g_byte_array_append(b, word, 4);
    for (i = 0; i < qqq_channel_count(); i++) {
        QqqChardev *q = QQQ_CHARDEV(g_ptr_array_index(qqq_channels, i));

        stq_be_p(word, timer_expire_time_ns(q->retry));
        g_byte_array_append(b, word, 8);
        stl_be_p(word, q->in->len - q->in_pos);
        g_byte_array_append(b, word, 4);
        g_byte_array_append(b, q->in->data + q->in_pos,
                            q->in->len - q->in_pos);
    }
}

bool qqq_channel_load(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    int i;

    if (len < 4 || ldl_be_p(p) != qqq_channel_count()) {
        return false;
    }
    p += 4;
    for (i = 0; i < qqq_channel_count(); i++) {
        QqqChardev *q = QQQ_CHARDEV(g_ptr_array_index(qqq_channels, i));
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
        g_byte_array_set_size(q->out, 0);
        if (expire >= 0) {
            timer_mod(q->retry, expire);
        } else {
            timer_del(q->retry);
        }
        p += 12 + n;
    }
    return p == end;
}

static int qqq_chr_write(Chardev *chr, const uint8_t *buf, int len)
{
    g_byte_array_append(QQQ_CHARDEV(chr)->out, buf, len);
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
    q->out = g_byte_array_new();
    q->retry = timer_new_ns(QEMU_CLOCK_VIRTUAL, qqq_chr_retry, q);
    if (!qqq_channels) {
        qqq_channels = g_ptr_array_new();
    }
    g_ptr_array_add(qqq_channels, chr);
}

static void qqq_chr_finalize(Object *obj)
{
    QqqChardev *q = QQQ_CHARDEV(obj);

    if (qqq_channels) {
        g_ptr_array_remove(qqq_channels, obj);
    }
    if (q->in) {
        timer_free(q->retry);
        g_byte_array_unref(q->in);
        g_byte_array_unref(q->out);
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

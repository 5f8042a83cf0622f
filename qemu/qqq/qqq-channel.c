/*
 * qqq data channels: the registry every channel kind plugs into.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A channel is a guest device's link to the simulator: a serial port
 * (qqq-chardev.c) or a NIC (qqq-net.c).  The wire code (qqq-wire.c) and
 * machine states (qqq-state.c) see only this registry: a name, a kind, the
 * bytes collected for the next reply, and the kind's operations to check
 * and take an advance's bytes and to save and load what it holds between
 * steps.  A new kind (CAN, ...) is a new file with its own operations.
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qqq/qqq-channel.h"

static GPtrArray *qqq_channels;

QqqChannel *qqq_channel_add(const char *name, const QqqChannelOps *ops,
                            void *opaque)
{
    QqqChannel *ch = g_new0(QqqChannel, 1);

    ch->name = g_strdup(name);
    ch->ops = ops;
    ch->opaque = opaque;
    ch->out = g_byte_array_new();
    if (!qqq_channels) {
        qqq_channels = g_ptr_array_new();
    }
    g_ptr_array_add(qqq_channels, ch);
    return ch;
}

void qqq_channel_remove(QqqChannel *ch)
{
    if (!ch) {
        return;
    }
    g_ptr_array_remove(qqq_channels, ch);
    g_byte_array_unref(ch->out);
    g_free(ch->name);
    g_free(ch);
}

int qqq_channel_count(void)
{
    return qqq_channels ? qqq_channels->len : 0;
}

QqqChannel *qqq_channel_get(int index)
{
    return g_ptr_array_index(qqq_channels, index);
}

int qqq_channel_count_kind(uint16_t kind)
{
    int i, n = 0;

    for (i = 0; i < qqq_channel_count(); i++) {
        n += qqq_channel_get(i)->ops->kind == kind;
    }
    return n;
}

/*
 * What the channels hold between two steps, for a machine state: their
 * number, then each kind's own part.  Output is always empty there: the
 * reply just took it.
 */
void qqq_channel_save(GByteArray *b)
{
    uint8_t word[4];
    int i;

    stl_be_p(word, qqq_channel_count());
    g_byte_array_append(b, word, 4);
    for (i = 0; i < qqq_channel_count(); i++) {
        QqqChannel *ch = qqq_channel_get(i);

        ch->ops->save(ch->opaque, b);
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
        QqqChannel *ch = qqq_channel_get(i);

        g_byte_array_set_size(ch->out, 0);
        if (!ch->ops->load(ch->opaque, &p, end)) {
            return false;
        }
    }
    return p == end;
}

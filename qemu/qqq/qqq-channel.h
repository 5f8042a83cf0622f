/*
 * qqq data channels: what a channel kind (qqq-chardev.c, qqq-net.c) gives
 * the registry (qqq-channel.c), and what the wire and machine states see.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QQQ_CHANNEL_H
#define QQQ_CHANNEL_H

/* Channel kinds, as HELLO names them from version 3 on. */
enum {
    QQQ_KIND_SERIAL = 1,    /* -chardev qqq: a byte stream (qqq-chardev.c) */
    QQQ_KIND_NET = 2,       /* -netdev qqq: time-stamped frames (qqq-net.c) */
};

/* What a channel kind does with the bytes of the wire. */
typedef struct QqqChannelOps {
    uint16_t kind;
    /*
     * NULL if an advance's block for the channel is sound, else what is
     * wrong with it (g_free'd by the caller).  The step runs from start_ns
     * to end_ns of virtual time.  Nothing may take effect here.
     */
    char *(*check)(void *opaque, const uint8_t *data, size_t len,
                   int64_t start_ns, int64_t end_ns);
    /* A checked block, at the start of the step. */
    void (*input)(void *opaque, const uint8_t *data, size_t len);
    /* What the channel holds between steps, for a machine state. */
    void (*save)(void *opaque, GByteArray *b);
    bool (*load)(void *opaque, const uint8_t **p, const uint8_t *end);
} QqqChannelOps;

typedef struct QqqChannel {
    char *name;
    const QqqChannelOps *ops;
    void *opaque;
    GByteArray *out;        /* for the next reply */
} QqqChannel;

/* The data channels, in the order they were created. */
QqqChannel *qqq_channel_add(const char *name, const QqqChannelOps *ops,
                            void *opaque);
void qqq_channel_remove(QqqChannel *ch);
int qqq_channel_count(void);
int qqq_channel_count_kind(uint16_t kind);
QqqChannel *qqq_channel_get(int index);
void qqq_channel_save(GByteArray *b);
bool qqq_channel_load(const uint8_t *p, size_t len);

#endif

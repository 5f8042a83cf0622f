/*
 * qqq: what the synchronization core, the wire format and the chardev
 * backend share.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QQQ_INTERNAL_H
#define QQQ_INTERNAL_H

/*
 * Protocol versions: 1 is the fixed base protocol, 2 our framed extension,
 * 3 version 2 with channel kinds in HELLO and network channels.
 */
#define QQQ_BASE_VERSION 1
#define QQQ_FRAMED_VERSION 2
#define QQQ_KINDS_VERSION 3

/* Frame types of version 2 (docs/protocol-v2.md). */
enum {
    QQQ_FRAME_HELLO = 1,
    QQQ_FRAME_ADVANCE = 2,
    QQQ_FRAME_REPLY = 3,
    QQQ_FRAME_DATA = 4,     /* more of a step's output, ahead of its end */
    QQQ_FRAME_END = 5,      /* the machine stopped for good mid-step */
};

/* Why the machine stopped, in an END frame. */
enum {
    QQQ_END_GUEST_SHUTDOWN = 1,
    QQQ_END_GUEST_PANIC = 2,
    QQQ_END_INTERNAL_ERROR = 3,
    QQQ_END_QUIT = 4,
};

/* Frame types of machine states (qqq-state.c), numbered apart. */
enum {
    QQQ_FRAME_SAVE = 16,
    QQQ_FRAME_STATE = 17,
    QQQ_FRAME_LOAD = 18,
    QQQ_FRAME_RESULT = 19,
};

/* Largest frame payload either side may send. */
#define QQQ_MAX_PAYLOAD (16 * 1024 * 1024)

/*
 * Virtual time never goes past 2^62 ns (about 146 years) since start: an
 * advance that would take it further is refused.  The clock is an int64_t
 * of nanoseconds, and devices arm timers at "now + period"; the headroom
 * keeps those sums from overflowing.
 */
#define QQQ_MAX_TIME_NS (INT64_C(1) << 62)

/* "No pending virtual-timer deadline" in a reply's lookahead field. */
#define QQQ_NO_DEADLINE UINT64_MAX

/* Channel kinds, as HELLO names them from version 3 on. */
enum {
    QQQ_KIND_SERIAL = 1,    /* -chardev qqq: a byte stream (qqq-chardev.c) */
    QQQ_KIND_NET = 2,       /* -netdev qqq: time-stamped frames (qqq-net.c) */
};

/* What a channel kind does with the bytes of the wire (qqq-channel.c). */
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

/* qqq-channel.c: the data channels, in the order they were created. */
QqqChannel *qqq_channel_add(const char *name, const QqqChannelOps *ops,
                            void *opaque);
void qqq_channel_remove(QqqChannel *ch);
int qqq_channel_count(void);
int qqq_channel_count_kind(uint16_t kind);
QqqChannel *qqq_channel_get(int index);
void qqq_channel_save(GByteArray *b);
bool qqq_channel_load(const uint8_t *p, size_t len);

/* qqq-wire.c: one side of the socket, either version. */
typedef struct QqqWire {
    int fd;
    int parent_fd;      /* pidfd of the simulator's process, or -1 */
    int wake_fd;        /* readable once QEMU was told to quit, or -1 */
    int version;
    bool stopping;      /* a wait ended because wake_fd became readable */
    int64_t flush_until_ms; /* stopping: last frames may be written till then */
    GByteArray *buf;
    GByteArray *ahead;  /* bytes read past the frame being read */
    size_t ahead_pos;
} QqqWire;

/*
 * Each returns false when the exchange cannot go on: the simulator left
 * (end of stream, its process ended), or QEMU was told to quit while
 * waiting (then w->stopping is set).
 */
bool qqq_wire_hello(QqqWire *w);
bool qqq_wire_recv_advance(QqqWire *w, int64_t now_ns, uint64_t *advance_ns);
bool qqq_wire_send_reply(QqqWire *w, uint64_t elapsed_ns,
                         uint64_t lookahead_ns);
bool qqq_wire_send_end(QqqWire *w, uint32_t cause);
bool qqq_wire_peer_gone(QqqWire *w);
bool qqq_wire_recv_frame(QqqWire *w, uint32_t want, const char *name);
bool qqq_wire_send_frame(QqqWire *w, uint32_t type, const void *data,
                         size_t len);

/* qqq-state.c: machine states saved and loaded between steps. */
void qqq_state_init(int64_t *reported_ns);
void qqq_state_advanced(void);
bool qqq_state_frame_type(uint32_t type);
bool qqq_state_frame(QqqWire *w, uint32_t type);
bool qqq_state_pending(void);

/* qqq.c: go on stepping after a load done outside the callback. */
void qqq_continue(bool alive);

#endif

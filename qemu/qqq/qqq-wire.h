/*
 * qqq wire format: the protocol's constants and one side of the socket
 * (qqq-wire.c), for the synchronization core (qqq.c) and machine states
 * (qqq-state.c).
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QQQ_WIRE_H
#define QQQ_WIRE_H

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

/*
 * Frame types of machine states, numbered apart; SAVE and LOAD come
 * between two steps, in place of an ADVANCE.
 */
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
    bool reads_limited; /* SO_RCVTIMEO set (qqq-wire.c) */
} QqqWire;

/*
 * Each returns false when the exchange cannot go on: the simulator left
 * (end of stream, its process ended), or QEMU was told to quit while
 * waiting (then w->stopping is set).
 */
bool qqq_wire_hello(QqqWire *w);
/*
 * The next ADVANCE: its advance in *advance_ns, its blocks handed to their
 * channels, *between 0.  Or, between two steps, a SAVE or LOAD frame:
 * *between is its type, its payload in w->buf, for the caller to act on
 * before it asks again.
 */
bool qqq_wire_recv_advance(QqqWire *w, int64_t now_ns, uint64_t *advance_ns,
                           uint32_t *between);
bool qqq_wire_send_reply(QqqWire *w, uint64_t elapsed_ns,
                         uint64_t lookahead_ns);
bool qqq_wire_send_end(QqqWire *w, uint32_t cause);
bool qqq_wire_peer_gone(QqqWire *w);
bool qqq_wire_recv_frame(QqqWire *w, uint32_t want, const char *name);
bool qqq_wire_send_frame(QqqWire *w, uint32_t type, const void *data,
                         size_t len);

#endif

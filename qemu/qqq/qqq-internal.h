/*
 * qqq: what the synchronization core, the wire format and the chardev
 * backend share.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QQQ_INTERNAL_H
#define QQQ_INTERNAL_H

/* Protocol versions: 1 is the fixed base protocol, 2 our framed extension. */
#define QQQ_BASE_VERSION 1
#define QQQ_FRAMED_VERSION 2

/* Frame types of version 2 (docs/protocol-v2.md). */
enum {
    QQQ_FRAME_HELLO = 1,
    QQQ_FRAME_ADVANCE = 2,
    QQQ_FRAME_REPLY = 3,
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

/* "No pending virtual-timer deadline" in a reply's lookahead field. */
#define QQQ_NO_DEADLINE UINT64_MAX

/* qqq-chardev.c: the data channels, in the order they were created. */
int qqq_channel_count(void);
const char *qqq_channel_name(int index);
void qqq_channel_input(int index, const uint8_t *data, size_t len);
GByteArray *qqq_channel_output(int index);
void qqq_channel_save(GByteArray *b);
bool qqq_channel_load(const uint8_t *p, size_t len);

/* qqq-wire.c: one side of the socket, either version. */
typedef struct QqqWire {
    int fd;
    int parent_fd;      /* pidfd of the simulator's process, or -1 */
    int version;
    GByteArray *buf;
} QqqWire;

void qqq_wire_hello(QqqWire *w);
bool qqq_wire_recv_advance(QqqWire *w, uint64_t *advance_ns);
bool qqq_wire_send_reply(QqqWire *w, uint64_t elapsed_ns,
                         uint64_t lookahead_ns);
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

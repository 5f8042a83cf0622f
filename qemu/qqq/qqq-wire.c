/*
 * qqq wire format: the base protocol and our framed version 2.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Version 1 (docs/sync-protocol.md) is bare 32-bit big-endian microsecond
 * counts.  Version 2 (docs/protocol-v2.md) wraps every message in a frame
 * {u32 type, u32 length, payload}, starts with a HELLO exchange, counts
 * 64-bit nanoseconds, reports the next virtual-timer deadline and carries
 * the bytes of the qqq data channels.
 *
 * A version 2 frame is checked whole before any of it takes effect, so a
 * malformed frame ends QEMU (one line, exit 1) with the guest untouched.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qqq/qqq-internal.h"

static void G_NORETURN G_GNUC_PRINTF(1, 2) qqq_malformed(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("qqq: malformed frame from the simulator: %s", msg);
    exit(1);
}

/*
 * Wait until the socket has something to read.  False if the simulator's
 * process (parent=PID) ended first: a child it forked may hold the socket
 * open, and nobody would ever write to it again.
 */
static bool wire_wait(QqqWire *w)
{
    struct pollfd fds[2] = {
        { .fd = w->fd, .events = POLLIN },
        { .fd = w->parent_fd, .events = POLLIN },
    };

    if (w->parent_fd < 0) {
        return true;
    }
    while (poll(fds, 2, -1) < 0) {
        if (errno != EINTR) {
            return true;    /* let recv report it */
        }
    }
    return !(fds[1].revents & (POLLIN | POLLHUP | POLLERR)) ||
           (fds[0].revents & POLLIN);
}

/*
 * Read exactly len bytes.  Returns false if the stream ends (or breaks)
 * before the first byte of a frame; ending inside a frame is malformed,
 * except in version 1, whose messages have no frame to be inside of.
 */
static bool wire_recv(QqqWire *w, void *buf, size_t len, bool frame_start)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n;

        if (!wire_wait(w)) {
            return false;
        }
        n = recv(w->fd, (char *)buf + done, len - done, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if ((done == 0 && frame_start) || w->version == QQQ_BASE_VERSION) {
                return false;
            }
            qqq_malformed("truncated: the stream ended after %zu of %zu "
                          "bytes", done, len);
        }
        done += n;
    }
    return true;
}

static bool wire_send(QqqWire *w, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = send(w->fd, (const char *)buf + done, len - done,
                         MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += n;
    }
    return true;
}

static void put_u16(GByteArray *b, uint16_t v)
{
    v = cpu_to_be16(v);
    g_byte_array_append(b, (uint8_t *)&v, sizeof(v));
}

static void put_u32(GByteArray *b, uint32_t v)
{
    v = cpu_to_be32(v);
    g_byte_array_append(b, (uint8_t *)&v, sizeof(v));
}

static void put_u64(GByteArray *b, uint64_t v)
{
    v = cpu_to_be64(v);
    g_byte_array_append(b, (uint8_t *)&v, sizeof(v));
}

static void frame_begin(GByteArray *b, uint32_t type)
{
    g_byte_array_set_size(b, 0);
    put_u32(b, type);
    put_u32(b, 0);
}

static bool frame_send(QqqWire *w)
{
    stl_be_p(w->buf->data + 4, w->buf->len - 8);
    return wire_send(w, w->buf->data, w->buf->len);
}

/* Read one frame of the expected type into w->buf; false at end of stream. */
static bool frame_recv(QqqWire *w, uint32_t want, const char *name,
                       uint32_t min_len)
{
    uint8_t hdr[8];
    uint32_t type, len;

    if (!wire_recv(w, hdr, sizeof(hdr), true)) {
        return false;
    }
    type = ldl_be_p(hdr);
    len = ldl_be_p(hdr + 4);
    /* Between two steps the simulator may save or load the machine. */
    while (want == QQQ_FRAME_ADVANCE && qqq_state_frame_type(type)) {
        if (len > QQQ_MAX_PAYLOAD) {
            qqq_malformed("state frame payload of %u bytes exceeds the "
                          "limit of %u", len, QQQ_MAX_PAYLOAD);
        }
        g_byte_array_set_size(w->buf, len);
        if (!wire_recv(w, w->buf->data, len, false) ||
            !qqq_state_frame(w, type) ||
            !wire_recv(w, hdr, sizeof(hdr), true)) {
            return false;
        }
        type = ldl_be_p(hdr);
        len = ldl_be_p(hdr + 4);
    }
    if (type != want) {
        qqq_malformed("expected a %s frame (type %u), got type %u", name,
                      want, type);
    }
    if (len > QQQ_MAX_PAYLOAD) {
        qqq_malformed("%s payload of %u bytes exceeds the limit of %u", name,
                      len, QQQ_MAX_PAYLOAD);
    }
    if (len < min_len) {
        qqq_malformed("%s payload of %u bytes is shorter than %u", name, len,
                      min_len);
    }
    g_byte_array_set_size(w->buf, len);
    return wire_recv(w, w->buf->data, len, false);
}

bool qqq_wire_recv_frame(QqqWire *w, uint32_t want, const char *name)
{
    return frame_recv(w, want, name, 0);
}

bool qqq_wire_send_frame(QqqWire *w, uint32_t type, const void *data,
                         size_t len)
{
    uint8_t hdr[8];

    stl_be_p(hdr, type);
    stl_be_p(hdr + 4, len);
    return wire_send(w, hdr, sizeof(hdr)) && wire_send(w, data, len);
}

void qqq_wire_hello(QqqWire *w)
{
    int i, n = qqq_channel_count();
    uint32_t version;

    w->buf = g_byte_array_new();
    frame_begin(w->buf, QQQ_FRAME_HELLO);
    put_u32(w->buf, QQQ_FRAMED_VERSION);
    put_u32(w->buf, n);
    for (i = 0; i < n; i++) {
        const char *name = qqq_channel_name(i);

        put_u16(w->buf, strlen(name));
        g_byte_array_append(w->buf, (const uint8_t *)name, strlen(name));
    }
    if (!frame_send(w) || !frame_recv(w, QQQ_FRAME_HELLO, "HELLO", 4)) {
        exit(0);    /* the simulator left before the first advance */
    }
    version = ldl_be_p(w->buf->data);
    if (version != QQQ_FRAMED_VERSION) {
        error_report("qqq: the simulator speaks protocol version %u; this "
                     "QEMU speaks version %u", version, QQQ_FRAMED_VERSION);
        exit(1);
    }
}

static bool recv_advance_v1(QqqWire *w, uint64_t *advance_ns)
{
    uint32_t be;

    if (!wire_recv(w, &be, sizeof(be), true)) {
        return false;
    }
    *advance_ns = (uint64_t)be32_to_cpu(be) * SCALE_US;
    return true;
}

bool qqq_wire_recv_advance(QqqWire *w, uint64_t *advance_ns)
{
    const uint8_t *p;
    uint32_t i, blocks, left;
    int channels = qqq_channel_count();

    if (w->version == QQQ_BASE_VERSION) {
        return recv_advance_v1(w, advance_ns);
    }
    if (!frame_recv(w, QQQ_FRAME_ADVANCE, "ADVANCE", 12)) {
        return false;
    }
    p = w->buf->data;
    *advance_ns = ldq_be_p(p);
    blocks = ldl_be_p(p + 8);
    p += 12;
    left = w->buf->len - 12;
    for (i = 0; i < blocks; i++) {
        uint32_t channel, len;

        if (left < 8) {
            qqq_malformed("ADVANCE block %u of %u runs past the payload", i,
                          blocks);
        }
        channel = ldl_be_p(p);
        len = ldl_be_p(p + 4);
        if (channel >= channels) {
            qqq_malformed("ADVANCE block %u names channel %u, but QEMU has "
                          "%d", i, channel, channels);
        }
        if (len > left - 8) {
            qqq_malformed("ADVANCE block %u claims %u bytes, %u remain", i,
                          len, left - 8);
        }
        p += 8 + len;
        left -= 8 + len;
    }
    if (left) {
        qqq_malformed("%u stray bytes after the last ADVANCE block", left);
    }
    qqq_state_advanced();
    /* The whole frame is sound: now let the guest see its bytes. */
    p = w->buf->data + 12;
    for (i = 0; i < blocks; i++) {
        uint32_t len = ldl_be_p(p + 4);

        qqq_channel_input(ldl_be_p(p), p + 8, len);
        p += 8 + len;
    }
    return true;
}

bool qqq_wire_send_reply(QqqWire *w, uint64_t elapsed_ns,
                         uint64_t lookahead_ns)
{
    int i, blocks = 0, channels = qqq_channel_count();
    size_t count_at;

    if (w->version == QQQ_BASE_VERSION) {
        uint32_t be = cpu_to_be32(elapsed_ns / SCALE_US);

        return wire_send(w, &be, sizeof(be));
    }
    frame_begin(w->buf, QQQ_FRAME_REPLY);
    put_u64(w->buf, elapsed_ns);
    put_u64(w->buf, lookahead_ns);
    count_at = w->buf->len;
    put_u32(w->buf, 0);
    for (i = 0; i < channels; i++) {
        GByteArray *out = qqq_channel_output(i);

        if (out->len) {
            put_u32(w->buf, i);
            put_u32(w->buf, out->len);
            g_byte_array_append(w->buf, out->data, out->len);
            g_byte_array_set_size(out, 0);
            blocks++;
        }
    }
    stl_be_p(w->buf->data + count_at, blocks);
    return frame_send(w);
}

bool qqq_wire_peer_gone(QqqWire *w)
{
    struct pollfd parent = { .fd = w->parent_fd, .events = POLLIN };
    char c;
    ssize_t n;

    if (w->parent_fd >= 0 && poll(&parent, 1, 0) > 0) {
        return true;
    }
    n = recv(w->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                      errno != EINTR);
}

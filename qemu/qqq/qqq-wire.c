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
 * the bytes of the qqq data channels.  Version 3 names each channel's kind
 * in HELLO, which network channels (qqq-net.c) need.
 *
 * A version 2 frame is checked whole before any of it takes effect, so a
 * malformed frame ends QEMU (one line, exit 1) with the guest untouched.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qqq/qqq-channel.h"
#include "qqq/qqq-wire.h"

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
 * Host time a QEMU told to quit still gives a simulator that is reading to
 * take the last frames (END and the output of the interrupted step), which
 * can be more than the socket buffer holds.  One that does not read cannot
 * hold QEMU longer than this.
 */
#define QQQ_FLUSH_MS 2000

/*
 * Wait until the socket has room to write (reads block in recv(), see
 * wire_on()).  False if QEMU was told to quit and QQQ_FLUSH_MS have passed
 * since (a signal: w->stopping is set; the last frames may still go out
 * until then), or if the simulator's process (parent=PID) ended: a child
 * it forked may hold the socket open, and nobody would ever use it again.
 */
static bool wire_wait_room(QqqWire *w)
{
    struct pollfd fds[3] = {
        { .fd = w->fd, .events = POLLOUT },
        { .fd = w->wake_fd, .events = POLLIN },
        { .fd = w->parent_fd, .events = POLLIN },
    };

    for (;;) {
        int timeout = -1;
        int n;

        if (w->stopping) {
            int64_t now = g_get_monotonic_time() / 1000;

            if (!w->flush_until_ms) {
                w->flush_until_ms = now + QQQ_FLUSH_MS;
            }
            if (now >= w->flush_until_ms) {
                return false;
            }
            timeout = w->flush_until_ms - now;
            fds[1].fd = -1;     /* already told: only the deadline counts */
        }
        n = poll(fds, ARRAY_SIZE(fds), timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;   /* the wake descriptor says if it mattered */
            }
            return false;   /* cannot wait: as good as gone */
        }
        if (fds[1].revents) {
            w->stopping = true;
            continue;
        }
        if (fds[0].revents) {
            return true;
        }
        if (fds[2].revents) {
            return false;
        }
    }
}

/*
 * A read blocks in recv() itself, not in poll(): woken across CPUs, a
 * thread blocked in poll() took 12-15 us longer to answer a socket-pair
 * round trip on our 2-CPU VM than one blocked in recv() (a C echo both
 * ways).  So the quit and parent descriptors are looked at before each
 * read, without waiting, and the read gives up every QQQ_READ_CHECK_MS to
 * look again: a signal taken by another thread, or the simulator's process
 * ending while a child of it holds the socket, is noticed within that.
 */
#define QQQ_READ_CHECK_MS 50

/*
 * False if QEMU was told to quit (w->stopping set) or the simulator's
 * process ended; never waits.
 */
static bool wire_on(QqqWire *w)
{
    struct pollfd fds[2] = {
        { .fd = w->wake_fd, .events = POLLIN },
        { .fd = w->parent_fd, .events = POLLIN },
    };

    if (w->stopping) {
        return false;
    }
    if (poll(fds, ARRAY_SIZE(fds), 0) <= 0) {
        return true;    /* nothing, or EINTR: the next look will tell */
    }
    if (fds[0].revents) {
        w->stopping = true;
    }
    return false;
}

static void wire_limit_reads(QqqWire *w)
{
    struct timeval tv = { .tv_usec = QQQ_READ_CHECK_MS * 1000 };

    if (!w->reads_limited) {
        if (setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
            error_report("qqq: cannot limit reads on socket %d: %s", w->fd,
                         strerror(errno));
            exit(1);
        }
        w->reads_limited = true;
    }
}

/*
 * Small reads go through w->ahead: a frame's header and payload, usually
 * sent together, then take one wait and one recv instead of two each.
 * Reads of at least QQQ_AHEAD bytes go straight to their destination.
 */
#define QQQ_AHEAD 4096

static size_t take_ahead(QqqWire *w, void *buf, size_t len)
{
    size_t n;

    if (!w->ahead) {
        return 0;
    }
    n = MIN(len, w->ahead->len - w->ahead_pos);
    memcpy(buf, w->ahead->data + w->ahead_pos, n);
    w->ahead_pos += n;
    if (n && w->ahead_pos == w->ahead->len) {
        g_byte_array_set_size(w->ahead, 0);
        w->ahead_pos = 0;
    }
    return n;
}

/*
 * Read exactly len bytes.  Returns false if the stream ends (or breaks)
 * before the first byte of a frame, or a wait is cut short (wire_on());
 * ending inside a frame is malformed, except in version 1, whose messages
 * have no frame to be inside of.  Bytes already read ahead come first and
 * need no wait: they were queued before anything that followed them.
 */
static bool wire_recv(QqqWire *w, void *buf, size_t len, bool frame_start)
{
    size_t done;

    /*
     * A frame read ahead (the simulator sent frames before their replies)
     * waits for no poll; QEMU told to quit must still not start it.
     */
    if (frame_start && w->ahead && w->ahead_pos < w->ahead->len &&
        (w->stopping || (w->wake_fd >= 0 &&
                         poll(&(struct pollfd){ .fd = w->wake_fd,
                                                .events = POLLIN }, 1, 0) > 0))) {
        w->stopping = true;
        return false;
    }
    done = take_ahead(w, buf, len);
    wire_limit_reads(w);

    while (done < len) {
        bool small = len - done < QQQ_AHEAD;
        ssize_t n;

        if (!wire_on(w)) {
            return false;
        }
        /* blocks for at most QQQ_READ_CHECK_MS (SO_RCVTIMEO) */
        if (small) {
            if (!w->ahead) {
                w->ahead = g_byte_array_sized_new(QQQ_AHEAD);
            }
            g_byte_array_set_size(w->ahead, QQQ_AHEAD);
            n = recv(w->fd, w->ahead->data, QQQ_AHEAD, 0);
            g_byte_array_set_size(w->ahead, MAX(n, 0));
        } else {
            n = recv(w->fd, (char *)buf + done, len - done, 0);
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN ||
                      errno == EWOULDBLOCK)) {
            continue;
        }
        if (n <= 0) {
            if ((done == 0 && frame_start) || w->version == QQQ_BASE_VERSION) {
                return false;
            }
            qqq_malformed("truncated: the stream ended after %zu of %zu "
                          "bytes", done, len);
        }
        done += small ? take_ahead(w, (char *)buf + done, len - done) : n;
    }
    return true;
}

/*
 * Write all of buf.  A simulator that stops reading must not be able to
 * hold QEMU here: a wait for room gives up QQQ_FLUSH_MS after a signal,
 * or when the simulator's process ends (wire_wait_room()).
 */
static bool wire_send(QqqWire *w, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = send(w->fd, (const char *)buf + done, len - done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wire_wait_room(w)) {
                return false;
            }
            continue;
        }
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

/*
 * Read one frame of the expected type into w->buf; false at end of stream.
 * In place of an ADVANCE the simulator may send a SAVE or LOAD frame (a
 * machine state, between two steps): that one is read instead, and its
 * type left in *between for the caller.
 */
static bool frame_recv(QqqWire *w, uint32_t want, const char *name,
                       uint32_t min_len, uint32_t *between)
{
    uint8_t hdr[8];
    uint32_t type, len;

    if (!wire_recv(w, hdr, sizeof(hdr), true)) {
        return false;
    }
    type = ldl_be_p(hdr);
    len = ldl_be_p(hdr + 4);
    if (between && (type == QQQ_FRAME_SAVE || type == QQQ_FRAME_LOAD)) {
        *between = type;
        want = type;
        name = type == QQQ_FRAME_SAVE ? "SAVE" : "LOAD";
        min_len = 0;
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
    return frame_recv(w, want, name, 0, NULL);
}

bool qqq_wire_send_frame(QqqWire *w, uint32_t type, const void *data,
                         size_t len)
{
    uint8_t hdr[8];

    stl_be_p(hdr, type);
    stl_be_p(hdr + 4, len);
    return wire_send(w, hdr, sizeof(hdr)) && wire_send(w, data, len);
}

bool qqq_wire_hello(QqqWire *w)
{
    int i, n = qqq_channel_count();
    uint32_t version;

    w->buf = g_byte_array_new();
    frame_begin(w->buf, QQQ_FRAME_HELLO);
    put_u32(w->buf, w->version);
    put_u32(w->buf, n);
    for (i = 0; i < n; i++) {
        QqqChannel *ch = qqq_channel_get(i);

        if (w->version >= QQQ_KINDS_VERSION) {
            put_u16(w->buf, ch->ops->kind);
        }
        put_u16(w->buf, strlen(ch->name));
        g_byte_array_append(w->buf, (const uint8_t *)ch->name,
                            strlen(ch->name));
    }
    if (!frame_send(w) || !frame_recv(w, QQQ_FRAME_HELLO, "HELLO", 4, NULL)) {
        return false;
    }
    version = ldl_be_p(w->buf->data);
    if (version != w->version) {
        error_report("qqq: the simulator speaks protocol version %u; this "
                     "QEMU was started for version %d", version, w->version);
        exit(1);
    }
    /*
     * A simulator HELLO is exactly its version: anything more would be a
     * field this QEMU does not know, so accepting it would silently ignore
     * what the simulator meant.  A later version says so in its number.
     */
    if (w->buf->len != 4) {
        qqq_malformed("HELLO payload of %u bytes; version %d has exactly 4",
                      w->buf->len, w->version);
    }
    return true;
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

/*
 * Virtual time is capped (QQQ_MAX_TIME_NS): refuse, before the guest sees
 * anything of the frame, an advance that would pass the cap, rather than
 * run a shorter step than asked or let the clock overflow.
 */
static void check_limit(int64_t now_ns, uint64_t advance_ns)
{
    if (advance_ns > QQQ_MAX_TIME_NS - now_ns) {
        error_report("qqq: an advance of %" PRIu64 " ns at virtual time %"
                     PRId64 " ns would pass the limit of 2^62 ns (about 146 "
                     "years) of virtual time", advance_ns, now_ns);
        exit(1);
    }
}

/* A block's bytes must make sense to its channel's kind. */
static void check_block(uint32_t index, QqqChannel *ch, const uint8_t *data,
                        uint32_t len, int64_t now_ns, uint64_t advance_ns)
{
    int64_t end_ns = advance_ns > QQQ_MAX_TIME_NS - now_ns ?
                     QQQ_MAX_TIME_NS : now_ns + advance_ns;
    g_autofree char *why = ch->ops->check(ch->opaque, data, len, now_ns,
                                          end_ns);

    if (why) {
        qqq_malformed("ADVANCE block %u for channel %s: %s", index, ch->name,
                      why);
    }
}

bool qqq_wire_recv_advance(QqqWire *w, int64_t now_ns, uint64_t *advance_ns,
                           uint32_t *between)
{
    const uint8_t *p;
    uint32_t i, blocks, left;
    int channels = qqq_channel_count();

    *between = 0;
    if (w->version == QQQ_BASE_VERSION) {
        if (!recv_advance_v1(w, advance_ns)) {
            return false;
        }
        check_limit(now_ns, *advance_ns);
        return true;
    }
    if (!frame_recv(w, QQQ_FRAME_ADVANCE, "ADVANCE", 12, between)) {
        return false;
    }
    if (*between) {
        return true;
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
        check_block(i, qqq_channel_get(channel), p + 8, len, now_ns,
                    *advance_ns);
        p += 8 + len;
        left -= 8 + len;
    }
    if (left) {
        qqq_malformed("%u stray bytes after the last ADVANCE block", left);
    }
    check_limit(now_ns, *advance_ns);
    /* The whole frame is sound: now let the guest see its bytes. */
    p = w->buf->data + 12;
    for (i = 0; i < blocks; i++) {
        QqqChannel *ch = qqq_channel_get(ldl_be_p(p));
        uint32_t len = ldl_be_p(p + 4);

        ch->ops->input(ch->opaque, p + 8, len);
        p += 8 + len;
    }
    return true;
}

/* Where the next output byte to send is: channel, and offset in it. */
typedef struct OutCursor {
    int channel;
    size_t pos;
} OutCursor;

/* Bytes the output from the cursor on takes as one block per channel. */
static size_t pending_size(const OutCursor *c)
{
    int i, channels = qqq_channel_count();
    size_t total = 0;

    for (i = c->channel; i < channels; i++) {
        size_t left = qqq_channel_get(i)->out->len - (i == c->channel ? c->pos
                                                                      : 0);
        if (left) {
            total += 8 + left;
        }
    }
    return total;
}

/*
 * Append blocks to the frame in b from the cursor on, as far as they fit
 * in one payload; a channel's output that does not fit is cut and goes on
 * in the next frame.  Returns the number of blocks appended.
 */
static uint32_t put_blocks(GByteArray *b, OutCursor *c)
{
    int channels = qqq_channel_count();
    uint32_t blocks = 0;

    while (c->channel < channels) {
        GByteArray *out = qqq_channel_get(c->channel)->out;
        size_t room = QQQ_MAX_PAYLOAD + 8 - b->len;   /* b has the header */
        size_t n = MIN(out->len - c->pos, room > 8 ? room - 8 : 0);

        if (c->pos == out->len) {
            c->channel++;
            c->pos = 0;
            continue;
        }
        if (n == 0) {
            break;
        }
        put_u32(b, c->channel);
        put_u32(b, n);
        g_byte_array_append(b, out->data + c->pos, n);
        c->pos += n;
        blocks++;
    }
    return blocks;
}

/*
 * Send the output the channels collected since the last reply, in a last
 * frame of the given type whose fixed fields come first.  Whatever does
 * not fit in that frame's payload limit goes ahead of it in DATA frames,
 * each filled to the limit, so the split depends only on the output.
 */
static bool send_with_output(QqqWire *w, uint32_t type, const uint8_t *fixed,
                             size_t fixed_len)
{
    OutCursor c = { 0, 0 };
    size_t count_at;
    bool ok = true;
    int i;

    while (ok && fixed_len + 4 + pending_size(&c) > QQQ_MAX_PAYLOAD) {
        frame_begin(w->buf, QQQ_FRAME_DATA);
        put_u32(w->buf, 0);
        stl_be_p(w->buf->data + 8, put_blocks(w->buf, &c));
        ok = frame_send(w);
    }
    if (ok) {
        frame_begin(w->buf, type);
        g_byte_array_append(w->buf, fixed, fixed_len);
        count_at = w->buf->len;
        put_u32(w->buf, 0);
        stl_be_p(w->buf->data + count_at, put_blocks(w->buf, &c));
        ok = frame_send(w);
    }
    for (i = 0; i < qqq_channel_count(); i++) {
        g_byte_array_set_size(qqq_channel_get(i)->out, 0);
    }
    if (w->buf->len > QQQ_MAX_PAYLOAD / 4) {
        g_byte_array_set_size(w->buf, 0);   /* give a big one back */
        g_byte_array_unref(w->buf);
        w->buf = g_byte_array_new();
    }
    return ok;
}

bool qqq_wire_send_reply(QqqWire *w, uint64_t elapsed_ns,
                         uint64_t lookahead_ns)
{
    uint8_t fixed[16];

    if (w->version == QQQ_BASE_VERSION) {
        uint32_t be = cpu_to_be32(elapsed_ns / SCALE_US);

        return wire_send(w, &be, sizeof(be));
    }
    stq_be_p(fixed, elapsed_ns);
    stq_be_p(fixed + 8, lookahead_ns);
    return send_with_output(w, QQQ_FRAME_REPLY, fixed, sizeof(fixed));
}

bool qqq_wire_send_end(QqqWire *w, uint32_t cause)
{
    uint8_t fixed[4];

    if (w->version == QQQ_BASE_VERSION) {
        return true;    /* no room in the base protocol: end of stream says it */
    }
    stl_be_p(fixed, cause);
    return send_with_output(w, QQQ_FRAME_END, fixed, sizeof(fixed));
}

/*
 * Has the simulator gone while the guest runs?  POLLRDHUP/POLLHUP report
 * the end of its stream even when frames it sent ahead are still queued
 * (a peek would see those bytes, not the end).
 */
bool qqq_wire_peer_gone(QqqWire *w)
{
    struct pollfd fds[2] = {
        { .fd = w->fd, .events = POLLRDHUP },
        { .fd = w->parent_fd, .events = POLLIN },
    };

    return poll(fds, ARRAY_SIZE(fds), 0) > 0;
}

/*
 * qqq: pace QEMU's virtual clock from an external simulator.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * "-qqq sock=FD" names a connected AF_UNIX stream socket.  The simulator
 * writes a time advance (32-bit big-endian microseconds); QEMU runs the
 * guest exactly that far on QEMU_CLOCK_VIRTUAL, answers with the virtual
 * time that elapsed and waits for the next advance.  The contract is in
 * docs/sync-protocol.md, the design in docs/qqq-internals.md.
 *
 * The synchronization point is a QEMU_CLOCK_VIRTUAL timer.  Under icount
 * its callback runs with the BQL held before any instruction past the
 * deadline executes, so blocking on the socket there freezes the machine,
 * and because the deadline is a timer, idle warps (sleep=off) stop at it.
 * Under KVM the vCPUs run on threads of their own and the clock follows
 * the host: the timer schedules a bottom half that pauses the vCPUs and
 * stops the clock before talking to the simulator.
 *
 * While the guest runs, a host-time timer in the main loop peeks at the
 * socket every QQQ_WATCH_MS, so a simulator that goes away mid-step ends
 * QEMU promptly whatever the guest is doing.  It never touches guest state,
 * so it cannot disturb determinism.
 */

#include "qemu/osdep.h"
#include "qemu/config-file.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-control.h"
#include "system/cpus.h"
#include "system/cpu-timers.h"
#include "system/kvm.h"
#include "system/runstate.h"
#include "system/system.h"
#include "system/tcg.h"
#include "qqq/qqq.h"

/* Host time between looks at the socket while the guest runs. */
#define QQQ_WATCH_MS 50

typedef struct QqqState {
    int fd;
    bool kvm;
    QEMUTimer *timer;       /* QEMU_CLOCK_VIRTUAL: the synchronization point */
    QEMUTimer *watch;       /* QEMU_CLOCK_REALTIME: is the simulator there? */
    QEMUBH *kvm_bh;
    int64_t reported_us;    /* T(k-1): virtual time the last reply ended at */
    int64_t target_us;      /* T(k-1) + A(k): where the running step ends */
} QqqState;

static QqqState qqq = { .fd = -1 };

static QemuOptsList qqq_opts = {
    .name = "qqq",
    .head = QTAILQ_HEAD_INITIALIZER(qqq_opts.head),
    .desc = {
        {
            .name = "sock",
            .type = QEMU_OPT_NUMBER,
            .help = "descriptor of a connected AF_UNIX stream socket",
        },
        { /* end of list */ }
    },
};

void qqq_parse_option(const char *optarg)
{
    Error *err = NULL;
    QemuOpts *opts = qemu_opts_parse(&qqq_opts, optarg, false, &err);

    if (!opts) {
        error_report("%s (-qqq takes sock=FD)", error_get_pretty(err));
        exit(1);
    }
    if (!qemu_opt_find(opts, "sock") ||
        qemu_opt_get_number(opts, "sock", 0) > INT_MAX) {
        error_report("-qqq needs sock=FD, the descriptor number of the "
                     "simulator's socket");
        exit(1);
    }
    qqq.fd = qemu_opt_get_number(opts, "sock", 0);
    qemu_opts_del(opts);
}

static void G_NORETURN qqq_refuse(const char *msg)
{
    error_report("-qqq: %s", msg);
    exit(1);
}

static void qqq_check_config(void)
{
    QemuOpts *icount = qemu_opts_find(qemu_find_opts("icount"), NULL);

    if (rtc_clock != QEMU_CLOCK_VIRTUAL) {
        qqq_refuse("needs -rtc clock=vm, so that guest wall time follows "
                   "simulation time");
    }
    if (kvm_enabled()) {
        return;
    }
    if (!tcg_enabled()) {
        qqq_refuse("needs TCG with -icount shift=N,sleep=off, or KVM "
                   "(-accel kvm)");
    }
    if (!icount_enabled()) {
        qqq_refuse("needs -icount shift=N,sleep=off under TCG (or KVM: "
                   "-accel kvm)");
    }
    if (icount_enabled() == ICOUNT_ADAPTATIVE) {
        qqq_refuse("needs a fixed icount shift: -icount shift=N,sleep=off, "
                   "not shift=auto");
    }
    if (!icount || qemu_opt_get_bool(icount, "sleep", true)) {
        qqq_refuse("needs -icount shift=N,sleep=off: with sleep on, an idle "
                   "guest waits for host time");
    }
}

static void qqq_check_socket(void)
{
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    int type = 0;
    socklen_t tlen = sizeof(type);
    g_autofree char *msg = NULL;

    if (getsockopt(qqq.fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0) {
        msg = g_strdup_printf("descriptor %d is not a socket (%s); pass one "
                              "end of a connected socket pair", qqq.fd,
                              strerror(errno));
    } else if (type != SOCK_STREAM) {
        msg = g_strdup_printf("descriptor %d is not a stream socket; pass "
                              "one end of socketpair(AF_UNIX, SOCK_STREAM)",
                              qqq.fd);
    } else if (getpeername(qqq.fd, (struct sockaddr *)&peer, &len) < 0) {
        msg = g_strdup_printf("socket %d is not connected (%s); pass one end "
                              "of a connected socket pair", qqq.fd,
                              strerror(errno));
    }
    if (msg) {
        qqq_refuse(msg);
    }
}

static bool qqq_send(uint32_t us)
{
    uint32_t be = cpu_to_be32(us);
    size_t done = 0;

    while (done < sizeof(be)) {
        ssize_t n = send(qqq.fd, (char *)&be + done, sizeof(be) - done,
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

static bool qqq_recv(uint32_t *us)
{
    uint32_t be;
    size_t done = 0;

    while (done < sizeof(be)) {
        ssize_t n = recv(qqq.fd, (char *)&be + done, sizeof(be) - done, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += n;
    }
    *us = be32_to_cpu(be);
    return true;
}

/* True once the simulator has closed its end (or the socket broke). */
static bool qqq_peer_gone(void)
{
    char c;
    ssize_t n = recv(qqq.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                      errno != EINTR);
}

/*
 * The simulator is gone: nobody will pace the guest again, so quit as the
 * "quit" monitor command does (exit status 0, whatever -action says).
 */
static void qqq_detach(void)
{
    timer_del(qqq.timer);
    timer_del(qqq.watch);
    close(qqq.fd);
    qqq.fd = -1;
    qmp_quit(NULL);
}

/*
 * Block until a non-zero advance arrives, answering zero advances at once
 * without running the guest.  Returns false when the simulator is gone.
 */
static bool qqq_await_advance(void)
{
    uint32_t advance;

    do {
        if (!qqq_recv(&advance) || (advance == 0 && !qqq_send(0))) {
            return false;
        }
    } while (advance == 0);
    qqq.target_us = qqq.reported_us + advance;
    timer_mod(qqq.timer, qqq.target_us * SCALE_US);
    return true;
}

/* The running step has ended at virtual time now_ns: reply and wait. */
static void qqq_sync(int64_t now_ns)
{
    /*
     * icount stops within one instruction of the deadline, which can be
     * more than 1 us at large shifts; the step has still ended exactly at
     * its target.  Under KVM the host's latency really is guest time.
     */
    int64_t now_us = qqq.kvm ? MAX(now_ns / SCALE_US, qqq.target_us)
                             : qqq.target_us;
    uint32_t elapsed = MIN(now_us - qqq.reported_us, UINT32_MAX);

    qqq.reported_us += elapsed;
    if (!qqq_send(elapsed) || !qqq_await_advance()) {
        qqq_detach();
    }
}

static void qqq_watch_cb(void *opaque)
{
    if (qqq_peer_gone()) {
        qqq_detach();
    } else {
        timer_mod(qqq.watch,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + QQQ_WATCH_MS);
    }
}

static void qqq_timer_cb(void *opaque)
{
    if (qqq.kvm) {
        /* pause_all_vcpus() must not run inside a virtual-clock timer. */
        qemu_bh_schedule(qqq.kvm_bh);
    } else {
        qqq_sync(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
    }
}

static void qqq_kvm_bh(void *opaque)
{
    pause_all_vcpus();
    cpu_disable_ticks();
    qqq_sync(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
    cpu_enable_ticks();
    resume_all_vcpus();
}

/*
 * A guest that powered off under -no-shutdown, panicked or hit an internal
 * error will not reach the next synchronization point: end the stream now
 * instead of leaving the simulator waiting for a reply.
 */
static void qqq_vm_state_changed(void *opaque, bool running, RunState state)
{
    if (!running && qqq.fd >= 0 &&
        (state == RUN_STATE_SHUTDOWN || state == RUN_STATE_GUEST_PANICKED ||
         state == RUN_STATE_INTERNAL_ERROR)) {
        shutdown(qqq.fd, SHUT_RDWR);
    }
}

void qqq_start(void)
{
    if (qqq.fd < 0) {
        return;
    }
    qqq_check_config();
    qqq_check_socket();
    qemu_set_cloexec(qqq.fd);
    qemu_socket_set_block(qqq.fd);

    qqq.kvm = kvm_enabled();
    qqq.timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, qqq_timer_cb, NULL);
    qqq.watch = timer_new_ms(QEMU_CLOCK_REALTIME, qqq_watch_cb, NULL);
    if (qqq.kvm) {
        qqq.kvm_bh = qemu_bh_new(qqq_kvm_bh, NULL);
    }
    qemu_add_vm_change_state_handler(qqq_vm_state_changed, NULL);

    /*
     * The machine is created and marked running, but no vCPU can execute
     * while we hold the BQL.  Under KVM the clock already ticks with host
     * time, so stop it until the first advance arrives.
     */
    if (qqq.kvm) {
        pause_all_vcpus();
        cpu_disable_ticks();
    }
    qqq.reported_us = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) / SCALE_US;
    if (!qqq_await_advance()) {
        exit(0);
    }
    qqq_watch_cb(NULL);
    if (qqq.kvm) {
        cpu_enable_ticks();
        resume_all_vcpus();
    }
}

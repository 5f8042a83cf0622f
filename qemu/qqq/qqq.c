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
 * docs/sync-protocol.md, the design in docs/qqq-internals.md.  With
 * version=2 the messages are the frames of docs/protocol-v2.md instead
 * (qqq-wire.c), which also carry the data channels (qqq-channel.c): qqq
 * chardevs (qqq-chardev.c) and, from version 3, qqq netdevs (qqq-net.c).
 *
 * The synchronization point is a QEMU_CLOCK_VIRTUAL timer.  Under icount
 * its callback runs with the BQL held before any instruction past the
 * deadline executes, so blocking on the socket there freezes the machine,
 * and because the deadline is a timer, idle warps (sleep=off) stop at it.
 * Under KVM the vCPUs run on threads of their own and the clock follows
 * the host: the timer schedules a bottom half that pauses the vCPUs and
 * stops the clock before talking to the simulator.
 *
 * While the guest runs, a host-time timer in the main loop looks at the
 * socket every QQQ_WATCH_MS, so a simulator that goes away mid-step ends
 * QEMU promptly whatever the guest is doing.  It never touches guest state,
 * so it cannot disturb determinism.
 *
 * Waiting on the socket holds the BQL, so QEMU's own handling of SIGTERM,
 * SIGINT and SIGHUP (a request the main loop acts on) would never get its
 * turn: qqq wraps those handlers to also wake the wait, which then lets go.
 *
 * When the machine stops for good by itself (power-off, panic, internal
 * error, a signal), the output of the interrupted step goes out in an END
 * frame before the socket closes, so nothing the guest sent is lost.
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include "qemu/config-file.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qemu/seqlock.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-control.h"
#include "system/accel-ops.h"
#include "system/cpus.h"
#include "system/cpu-timers.h"
#include "system/cpu-timers-internal.h"
#include "system/kvm.h"
#include "system/runstate.h"
#include "system/system.h"
#include "system/tcg.h"
#include "hw/core/cpu.h"
#include "qqq/qqq.h"
#include "qqq/qqq-channel.h"
#include "qqq/qqq-state.h"
#include "qqq/qqq-wire.h"

/* Host time between looks at the socket while the guest runs. */
#define QQQ_WATCH_MS 50

typedef struct QqqState {
    QqqWire wire;
    int64_t unit_ns;        /* what the protocol counts in: 1000 or 1 ns */
    bool kvm;
    QEMUTimer *timer;       /* QEMU_CLOCK_VIRTUAL: the synchronization point */
    QEMUTimer *watch;       /* QEMU_CLOCK_REALTIME: is the simulator there? */
    QEMUBH *kvm_bh;
    int64_t reported_ns;    /* T(k-1): virtual time the last reply ended at */
    int64_t target_ns;      /* T(k-1) + A(k): where the running step ends */
    ShutdownCause shutdown_cause;   /* why QEMU is shutting down, if it is */
    Notifier shutdown;
    bool ended;             /* END sent, or the stream shut: nothing more */
    bool paced;             /* started with -qqq */
} QqqState;

static QqqState qqq = {
    .wire = { .fd = -1, .parent_fd = -1, .wake_fd = -1,
              .version = QQQ_BASE_VERSION },
};

/* The signals QEMU ends on (os_setup_signal_handling()). */
static const int qqq_term_signals[] = { SIGINT, SIGHUP, SIGTERM };
static struct sigaction qqq_term_actions[ARRAY_SIZE(qqq_term_signals)];

static QemuOptsList qqq_opts = {
    .name = "qqq",
    .head = QTAILQ_HEAD_INITIALIZER(qqq_opts.head),
    .desc = {
        {
            .name = "sock",
            .type = QEMU_OPT_NUMBER,
            .help = "descriptor of a connected AF_UNIX stream socket",
        }, {
            .name = "version",
            .type = QEMU_OPT_NUMBER,
            .help = "1: the base protocol (default), 2: framed extension, "
                    "3: framed, with channel kinds (network channels)",
        }, {
            .name = "parent",
            .type = QEMU_OPT_NUMBER,
            .help = "exit when this process (the simulator) ends",
        },
        { /* end of list */ }
    },
};

/*
 * A simulator that started QEMU wants it gone when the simulator's process
 * goes, even if someone else still holds the socket (a child it forked
 * without exec keeps it open).  The parent-death signal would fire when
 * the *thread* that started QEMU ends, which masters with worker pools
 * (libcosim) do mid-run, so QEMU holds a pidfd of the process instead and
 * watches it beside the socket (qqq-wire.c).  If the parent died before
 * this point we have already been re-parented.
 */
static void qqq_watch_parent(uint64_t parent)
{
    int fd;

    if (parent == 0 || parent > INT_MAX) {
        error_report("-qqq: parent=%" PRIu64 " is not a process id", parent);
        exit(1);
    }
    fd = syscall(__NR_pidfd_open, (pid_t)parent, 0);
    if (fd < 0 && errno != ESRCH) {
        error_report("-qqq: cannot watch process %" PRIu64 ": %s", parent,
                     strerror(errno));
        exit(1);
    }
    if (fd < 0 || getppid() != (pid_t)parent) {
        error_report("-qqq: process %" PRIu64 " that started QEMU is gone",
                     parent);
        exit(1);
    }
    qemu_set_cloexec(fd);
    qqq.wire.parent_fd = fd;
}

bool qqq_paced(void)
{
    return qqq.paced;
}

void qqq_parse_option(const char *optarg)
{
    Error *err = NULL;
    QemuOpts *opts = qemu_opts_parse(&qqq_opts, optarg, false, &err);

    if (!opts) {
        error_report("%s (-qqq takes sock=FD[,version=1|2|3][,parent=PID])",
                     error_get_pretty(err));
        exit(1);
    }
    if (!qemu_opt_find(opts, "sock") ||
        qemu_opt_get_number(opts, "sock", 0) > INT_MAX) {
        error_report("-qqq needs sock=FD, the descriptor number of the "
                     "simulator's socket");
        exit(1);
    }
    qqq.wire.fd = qemu_opt_get_number(opts, "sock", 0);
    qqq.paced = true;
    qqq.wire.version = qemu_opt_get_number(opts, "version", QQQ_BASE_VERSION);
    if (qqq.wire.version < QQQ_BASE_VERSION ||
        qqq.wire.version > QQQ_KINDS_VERSION) {
        error_report("-qqq: version=%d is not 1 (base protocol), 2 (framed) "
                     "or 3 (framed, with channel kinds)", qqq.wire.version);
        exit(1);
    }
    if (qemu_opt_find(opts, "parent")) {
        qqq_watch_parent(qemu_opt_get_number(opts, "parent", 0));
    }
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

    if (getsockopt(qqq.wire.fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0) {
        msg = g_strdup_printf("descriptor %d is not a socket (%s); pass one "
                              "end of a connected socket pair", qqq.wire.fd,
                              strerror(errno));
    } else if (type != SOCK_STREAM) {
        msg = g_strdup_printf("descriptor %d is not a stream socket; pass "
                              "one end of socketpair(AF_UNIX, SOCK_STREAM)",
                              qqq.wire.fd);
    } else if (getpeername(qqq.wire.fd, (struct sockaddr *)&peer, &len) < 0) {
        msg = g_strdup_printf("socket %d is not connected (%s); pass one end "
                              "of a connected socket pair", qqq.wire.fd,
                              strerror(errno));
    }
    if (msg) {
        qqq_refuse(msg);
    }
}

/*
 * The simulator is gone: nobody will pace the guest again, so quit as the
 * "quit" monitor command does (exit status 0, whatever -action says).
 */
static void qqq_detach(void)
{
    timer_del(qqq.timer);
    timer_del(qqq.watch);
    close(qqq.wire.fd);
    qqq.wire.fd = -1;
    qmp_quit(NULL);
}

/*
 * A wait on the socket ended: the simulator left, or QEMU was told to quit
 * (a signal), whose request the main loop carries out as soon as we return.
 */
static void qqq_wait_ended(void)
{
    if (qqq.wire.stopping) {
        timer_del(qqq.timer);
        timer_del(qqq.watch);
    } else {
        qqq_detach();
    }
}

/*
 * QEMU's handler for a terminating signal only records a request for the
 * main loop; run it, then wake a wait on the socket.  Async-signal-safe.
 */
static void qqq_term_handler(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uint64_t one = 1;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(qqq_term_signals); i++) {
        struct sigaction *old = &qqq_term_actions[i];

        if (qqq_term_signals[i] != sig) {
            continue;
        }
        if (old->sa_flags & SA_SIGINFO) {
            old->sa_sigaction(sig, info, ctx);
        } else if (old->sa_handler == SIG_IGN) {
            return;
        } else if (old->sa_handler != SIG_DFL) {
            old->sa_handler(sig);
        } else {
            qemu_system_killed(sig, info->si_pid);
        }
    }
    if (write(qqq.wire.wake_fd, &one, sizeof(one)) < 0) {
        /* already readable: the counter is full; nothing else to do */
    }
    errno = saved_errno;
}

static void qqq_wrap_term_signals(void)
{
    size_t i;

    qqq.wire.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (qqq.wire.wake_fd < 0) {
        qqq_refuse("cannot create an eventfd to wake on signals");
    }
    for (i = 0; i < ARRAY_SIZE(qqq_term_signals); i++) {
        struct sigaction act;

        sigaction(qqq_term_signals[i], NULL, &qqq_term_actions[i]);
        act = qqq_term_actions[i];
        act.sa_sigaction = qqq_term_handler;
        act.sa_flags = (act.sa_flags & ~SA_RESETHAND) | SA_SIGINFO;
        sigaction(qqq_term_signals[i], &act, NULL);
    }
}

/* Time to the next pending virtual-timer deadline after the step's end. */
static uint64_t qqq_lookahead(void)
{
    int64_t now, next;

    if (qqq.wire.version == QQQ_BASE_VERSION) {
        return QQQ_NO_DEADLINE;     /* the base protocol has no room for it */
    }
    now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
    next = qemu_clock_deadline_ns_all(QEMU_CLOCK_VIRTUAL, QEMU_TIMER_ATTR_ALL);
    return next < 0 ? QQQ_NO_DEADLINE : MAX(now + next - qqq.reported_ns, 0);
}

/*
 * Under icount a vCPU that is still inside its execution slice has run
 * instructions that the clock does not show yet: icount_process_data()
 * adds them only after tcg_cpu_exec() returns.  A WFI or HLT sets
 * cpu->halted (without the BQL) before that, so the main loop, woken for
 * any reason in between, sees every vCPU idle and warps the clock to the
 * next deadline from the stale count; the vCPU then adds its instructions
 * on top and the clock overshoots the deadline by as many nanoseconds as
 * host scheduling decided.  A vCPU is idle for QEMU only once its slice is
 * accounted: icount_budget is zero outside the slice (and inside it only
 * when nothing can run).  The vCPU thread wakes the main loop to warp when
 * it is done, so no warp is lost.  TCG leaves this hook unset; KVM does
 * not use icount.
 */
static bool qqq_vcpu_accounted(CPUState *cpu)
{
    bool accounted = qatomic_read(&cpu->icount_budget) == 0;

    smp_rmb();      /* the count icount_process_data() stored before it */
    return accounted;
}

static void qqq_guard_idle_check(void)
{
    AccelOpsClass *ops =
        ACCEL_OPS_CLASS(object_class_by_name(ACCEL_OPS_NAME("tcg")));

    assert(ops == cpus_get_accel() && !ops->cpu_thread_is_idle);
    ops->cpu_thread_is_idle = qqq_vcpu_accounted;
}

static void qqq_no_work(CPUState *cpu, run_on_cpu_data data)
{
}

/*
 * Idle fast path under icount.  The round-robin vCPU thread calls this
 * when it finds every vCPU halted (a WFI or HLT at the end of an interrupt
 * handler, or the step starting on a halted guest).  QEMU would wake the
 * main loop only to warp the clock to the next deadline, which then wakes
 * the vCPU thread again to run the timers: two thread switches, a main
 * loop iteration and the BQL handed back and forth.  Do the same warp to
 * the same deadline here and queue a no-op, so that the round-robin loop
 * goes straight back to its timers instead of sleeping.  Only inside a
 * step (the synchronization timer armed), so the warp never passes it.
 */
bool qqq_vcpu_idle(void)
{
    CPUState *cpu;

    if (!qqq.timer || qqq.kvm || !timer_pending(qqq.timer) ||
        !runstate_is_running()) {
        return false;
    }
    /*
     * A vCPU stops itself when it asks the main loop for something (a
     * guest panic pausing the machine, a reset): the main loop must act
     * on that before any warp, as it would have done.
     */
    CPU_FOREACH(cpu) {
        if (cpu->stop || cpu->stopped) {
            return false;
        }
    }
    icount_start_warp_timer();
    async_run_on_cpu(first_cpu, qqq_no_work, RUN_ON_CPU_NULL);
    return true;
}

/*
 * Idle steps under icount.  When every vCPU is halted and no virtual timer
 * falls due up to and including the target, the whole step is one clock
 * warp.  Warp the icount bias here, as icount_start_warp_timer() would, and
 * let the caller answer at once: the guest sees the same clock and the
 * same deadlines, and a step costs no thread wake-ups at all.
 */
static bool qqq_idle_jump(void)
{
    int64_t now, next;

    if (qqq.kvm || !all_cpu_threads_idle()) {
        return false;
    }
    now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
    next = qemu_clock_deadline_ns_all(QEMU_CLOCK_VIRTUAL, QEMU_TIMER_ATTR_ALL);
    if (qqq.target_ns <= now || (next >= 0 && now + next <= qqq.target_ns)) {
        return false;   /* already there (icount overshoot), or a timer is due */
    }
    seqlock_write_lock(&timers_state.vm_clock_seqlock,
                       &timers_state.vm_clock_lock);
    qatomic_set_i64(&timers_state.qemu_icount_bias,
                    timers_state.qemu_icount_bias + qqq.target_ns - now);
    seqlock_write_unlock(&timers_state.vm_clock_seqlock,
                         &timers_state.vm_clock_lock);
    return true;
}

/*
 * Block until an advance arrives that needs the guest to run, answering
 * zero advances and idle steps at once, and saving or loading the machine
 * when asked to between two steps.  Returns false when the simulator is
 * gone; true also when a LOAD goes on in a bottom half, which then resumes
 * stepping (qqq_continue()).
 */
static bool qqq_await_advance(void)
{
    uint64_t advance;
    uint32_t between;

    timer_del(qqq.timer);
    for (;;) {
        if (!qqq_wire_recv_advance(&qqq.wire, qqq.reported_ns, &advance,
                                   &between)) {
            return false;
        }
        if (between) {
            if (!qqq_state_frame(&qqq.wire, between)) {
                return qqq_state_pending();
            }
            continue;
        }
        qqq_state_advanced();
        qqq.target_ns = qqq.reported_ns + advance;  /* checked: no overflow */
        if (advance && !qqq_idle_jump()) {
            break;
        }
        qqq.reported_ns = qqq.target_ns;
        if (!qqq_wire_send_reply(&qqq.wire, advance, qqq_lookahead())) {
            return false;
        }
    }
    timer_mod(qqq.timer, qqq.target_ns);
    return true;
}

/* The running step has ended at virtual time now_ns: reply and wait. */
static void qqq_sync(int64_t now_ns)
{
    int64_t end_ns;
    uint64_t elapsed;

    /*
     * The guest asked for power-off (or QEMU for its end) within this step,
     * and a stopped vCPU may have let the clock warp to our deadline since:
     * the step ends with END and its output when the machine stops, never
     * with a reply first, whoever wins the race to the main loop.
     */
    if (qqq.ended || qemu_shutdown_requested_get() != SHUTDOWN_CAUSE_NONE) {
        return;
    }
    /*
     * icount stops within one instruction of the deadline, which can be
     * more than 1 us at large shifts; the step has still ended exactly at
     * its target.  Under KVM the host's latency really is guest time.
     */
    end_ns = qqq.kvm ? MAX(now_ns, qqq.target_ns) : qqq.target_ns;
    elapsed = QEMU_ALIGN_DOWN(end_ns - qqq.reported_ns, qqq.unit_ns);

    if (qqq.wire.version == QQQ_BASE_VERSION) {
        elapsed = MIN(elapsed, (uint64_t)UINT32_MAX * SCALE_US);
    }
    qqq.reported_ns += elapsed;
    if (!qqq_wire_send_reply(&qqq.wire, elapsed, qqq_lookahead()) ||
        !qqq_await_advance()) {
        qqq_wait_ended();
    }
}

/* A LOAD done in a bottom half (qqq-state.c): go on stepping. */
static void qqq_continue(bool alive)
{
    if (!alive || !qqq_await_advance()) {
        qqq_detach();
    }
}

static void qqq_watch_cb(void *opaque)
{
    if (qqq_wire_peer_gone(&qqq.wire)) {
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

static void qqq_shutdown_notify(Notifier *notifier, void *data)
{
    qqq.shutdown_cause = *(ShutdownCause *)data;
}

/* The END frame's cause for a machine that stopped in state. */
static uint32_t qqq_end_cause(RunState state)
{
    switch (state) {
    case RUN_STATE_GUEST_PANICKED:
        return QQQ_END_GUEST_PANIC;
    case RUN_STATE_INTERNAL_ERROR:
        return QQQ_END_INTERNAL_ERROR;
    case RUN_STATE_SHUTDOWN:
        if (qqq.shutdown_cause == SHUTDOWN_CAUSE_GUEST_PANIC) {
            return QQQ_END_GUEST_PANIC;
        }
        if (qqq.shutdown_cause == SHUTDOWN_CAUSE_HOST_ERROR) {
            return QQQ_END_INTERNAL_ERROR;
        }
        return shutdown_caused_by_guest(qqq.shutdown_cause) ?
               QQQ_END_GUEST_SHUTDOWN : QQQ_END_QUIT;
    default:
        return 0;
    }
}

/*
 * The machine stopped for good in the middle of a step: the guest powered
 * off (QEMU exits, or stays up under -no-shutdown), panicked, hit an
 * internal error, or QEMU was told to quit.  The vCPUs are paused by now,
 * so all the step's output is in: send it with an END frame, then end the
 * stream so the simulator is never left waiting for a reply.  Not when the
 * simulator left first (the descriptor is closed then).
 */
static void qqq_vm_state_changed(void *opaque, bool running, RunState state)
{
    uint32_t cause = qqq_end_cause(state);

    if (running || !cause || qqq.wire.fd < 0 || qqq.ended) {
        return;
    }
    qqq.ended = true;
    qqq_wire_send_end(&qqq.wire, cause);
    shutdown(qqq.wire.fd, SHUT_RDWR);
}

void qqq_start(void)
{
    if (qqq_channel_count_kind(QQQ_KIND_SERIAL) &&
        qqq.wire.version < QQQ_FRAMED_VERSION) {
        error_report("-chardev qqq: data channels need -qqq "
                     "sock=FD,version=2 or 3");
        exit(1);
    }
    if (qqq_channel_count_kind(QQQ_KIND_NET) &&
        qqq.wire.version < QQQ_KINDS_VERSION) {
        error_report("-netdev qqq: network channels need -qqq "
                     "sock=FD,version=3");
        exit(1);
    }
    if (qqq.wire.fd < 0) {
        return;
    }
    qqq_check_config();
    qqq_check_socket();
    qemu_set_cloexec(qqq.wire.fd);
    qemu_socket_set_block(qqq.wire.fd);

    qqq.kvm = kvm_enabled();
    if (!qqq.kvm) {
        qqq_guard_idle_check();
    }
    qqq.unit_ns = qqq.wire.version == QQQ_BASE_VERSION ? SCALE_US : 1;
    qqq.timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, qqq_timer_cb, NULL);
    qqq.watch = timer_new_ms(QEMU_CLOCK_REALTIME, qqq_watch_cb, NULL);
    if (qqq.kvm) {
        qqq.kvm_bh = qemu_bh_new(qqq_kvm_bh, NULL);
    }
    qemu_add_vm_change_state_handler(qqq_vm_state_changed, NULL);
    qqq.shutdown.notify = qqq_shutdown_notify;
    qemu_register_shutdown_notifier(&qqq.shutdown);
    qqq_wrap_term_signals();

    /*
     * The machine is created and marked running, but no vCPU can execute
     * while we hold the BQL.  Under KVM the clock already ticks with host
     * time, so stop it until the first advance arrives.
     */
    if (qqq.kvm) {
        pause_all_vcpus();
        cpu_disable_ticks();
    }
    qqq.reported_ns = QEMU_ALIGN_DOWN(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL),
                                      qqq.unit_ns);
    if (qqq.wire.version >= QQQ_FRAMED_VERSION) {
        qqq_state_init(&qqq.reported_ns, qqq_continue);    /* qqq-state.c */
    }
    if ((qqq.wire.version >= QQQ_FRAMED_VERSION &&
         !qqq_wire_hello(&qqq.wire)) || !qqq_await_advance()) {
        if (!qqq.wire.stopping) {
            exit(0);    /* the simulator left before the first advance */
        }
        /* Told to quit: the main loop does it before any guest code runs. */
        return;
    }
    qqq_watch_cb(NULL);
    if (qqq.kvm) {
        cpu_enable_ticks();
        resume_all_vcpus();
    }
}

/*
 * qqq machine states: save the whole machine at a synchronization point,
 * load it back, in the same QEMU or a new one.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A SAVE frame between two steps runs QEMU's own migration code
 * (qemu_savevm_state(), what savevm runs) into a memory buffer and streams
 * the result back as STATE frames, then a RESULT frame.  Under icount the
 * machine is frozen there: virtual timers run only on the vCPU thread,
 * between two instruction budgets, and our callback holds the BQL, so no
 * guest instruction and no device timer runs while the state is written.
 *
 * LOAD frames carry a saved state back, before the first ADVANCE or
 * between any two steps: the vCPUs are paused, the machine reset and the
 * state loaded as loadvm does.  Between steps we are inside the
 * synchronization callback, and timerlist_run_timers() goes on with the
 * clock it read before calling us: it would fire the restored timers that
 * lie between the restored time and that stale time at once.  So there
 * the load is left to a bottom half, which then resumes stepping.
 *
 * The module's own state (the time reported so far, channel input the
 * guest device has not taken yet and its retry timer) is the "qqq" section
 * of the same stream.  The protocol is in docs/protocol-v2.md, the design
 * in docs/fmu-state.md.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/yank.h"
#include "qapi/error.h"
#include "io/channel-buffer.h"
#include "migration/vmstate.h"
#include "migration/global_state.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "system/cpus.h"
#include "system/kvm.h"
#include "system/runstate.h"
#include "hw/core/cpu.h"
#include "qqq/qqq-channel.h"
#include "qqq/qqq-state.h"

/* A state larger than this is refused (the machine's RAM bounds it). */
#define QQQ_STATE_MAX ((uint64_t)64 * 1024 * 1024 * 1024)

typedef struct QqqSaved {
    int64_t *reported_ns;       /* qqq.c's T(k-1) */
    int64_t reported;
    uint32_t channels_len;
    uint8_t *channels;          /* qqq_channel_save()'s packing */
} QqqSaved;

static QqqSaved qqq_saved;
static bool qqq_state_running;  /* an ADVANCE came: we are in the callback */
static bool qqq_state_in_bh;    /* in qqq_state_load_bh(): vCPUs paused */
static QqqWire *qqq_state_wire;
static GByteArray *qqq_state_deferred;  /* a LOAD waiting for the BH */
static QEMUBH *qqq_state_bh;
static void (*qqq_state_resume)(bool alive);    /* after a deferred LOAD */

static int qqq_saved_pre_save(void *opaque)
{
    QqqSaved *s = opaque;
    GByteArray *b = g_byte_array_new();

    s->reported = *s->reported_ns;
    qqq_channel_save(b);
    g_free(s->channels);
    s->channels_len = b->len;
    s->channels = g_byte_array_free(b, false);
    return 0;
}

static int qqq_saved_pre_load(void *opaque)
{
    QqqSaved *s = opaque;

    g_clear_pointer(&s->channels, g_free);
    s->channels_len = 0;
    return 0;
}

static int qqq_saved_post_load(void *opaque, int version_id)
{
    QqqSaved *s = opaque;

    if (!qqq_channel_load(s->channels, s->channels_len)) {
        error_report("qqq: the state's data channels do not match this "
                     "QEMU's -chardev qqq options");
        return -EINVAL;
    }
    *s->reported_ns = s->reported;
    return 0;
}

static const VMStateDescription vmstate_qqq = {
    .name = "qqq",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = qqq_saved_pre_save,
    .pre_load = qqq_saved_pre_load,
    .post_load = qqq_saved_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_INT64(reported, QqqSaved),
        VMSTATE_UINT32(channels_len, QqqSaved),
        VMSTATE_VBUFFER_ALLOC_UINT32(channels, QqqSaved, 0, NULL,
                                     channels_len),
        VMSTATE_END_OF_LIST()
    },
};

static void qqq_state_load_bh(void *opaque);

void qqq_state_init(int64_t *reported_ns, void (*resume)(bool alive))
{
    qqq_saved.reported_ns = reported_ns;
    qqq_state_resume = resume;
    vmstate_register(NULL, 0, &vmstate_qqq, &qqq_saved);
    qqq_state_bh = qemu_bh_new(qqq_state_load_bh, NULL);
}

bool qqq_state_pending(void)
{
    return qqq_state_deferred != NULL;
}

void qqq_state_advanced(void)
{
    qqq_state_running = true;
}

static bool send_result(QqqWire *w, bool ok, const char *msg)
{
    g_autoptr(GByteArray) b = g_byte_array_new();
    uint32_t status = cpu_to_be32(ok ? 0 : 1);

    g_byte_array_append(b, (const uint8_t *)&status, sizeof(status));
    g_byte_array_append(b, (const uint8_t *)msg, strlen(msg));
    return qqq_wire_send_frame(w, QQQ_FRAME_RESULT, b->data, b->len);
}

static const char *qqq_state_refusal(void)
{
    if (kvm_enabled()) {
        return "machine states need accelerator tcg-icount: under KVM the "
               "guest's clock follows the host, so a restored run could not "
               "repeat the original";
    }
    return NULL;
}

static bool qqq_state_save(QqqWire *w)
{
    QIOChannelBuffer *bioc;
    QEMUFile *f;
    Error *err = NULL;
    const char *refusal = qqq_state_refusal();
    bool sent = true;
    size_t off;
    int ret;

    if (refusal) {
        return send_result(w, false, refusal);
    }
    bioc = qio_channel_buffer_new(1024 * 1024);
    qio_channel_set_name(QIO_CHANNEL(bioc), "qqq-state-save");
    f = qemu_file_new_output(QIO_CHANNEL(bioc));
    global_state_store();       /* the run state, as savevm records it */
    ret = qemu_savevm_state(f, &err);
    if (ret == 0) {
        ret = qemu_fflush(f);
    }
    for (off = 0; ret == 0 && sent && off < bioc->usage;
         off += QQQ_MAX_PAYLOAD) {
        sent = qqq_wire_send_frame(w, QQQ_FRAME_STATE, bioc->data + off,
                                   MIN(bioc->usage - off, QQQ_MAX_PAYLOAD));
    }
    qemu_fclose(f);
    object_unref(OBJECT(bioc));
    if (!sent) {
        return false;
    }
    if (ret != 0) {
        g_autofree char *msg = g_strdup_printf(
            "QEMU could not save the machine: %s",
            err ? error_get_pretty(err) : strerror(-ret));

        error_free(err);
        return send_result(w, false, msg);
    }
    return send_result(w, true, "");
}

/* Reset the machine and load the stream, as loadvm does. */
static int qqq_state_load_stream(GByteArray *data)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    QIOChannelBuffer *bioc = qio_channel_buffer_new(data->len);
    QEMUFile *f;
    int ret;

    memcpy(bioc->data, data->data, data->len);
    bioc->usage = data->len;
    qio_channel_set_name(QIO_CHANNEL(bioc), "qqq-state-load");
    f = qemu_file_new_input(QIO_CHANNEL(bioc));
    object_unref(OBJECT(bioc));

    /*
     * The machine is marked running, and qemu_loadvm_state() drops the BQL
     * while it waits for its load threads: without the pause the vCPU
     * would run the half-loaded guest right then.
     */
    pause_all_vcpus();
    qemu_system_reset(SHUTDOWN_CAUSE_SNAPSHOT_LOAD);
    mis->from_src_file = f;
    if (!yank_register_instance(MIGRATION_YANK_INSTANCE, NULL)) {
        qemu_fclose(f);
        mis->from_src_file = NULL;
        resume_all_vcpus();
        return -EINVAL;
    }
    ret = qemu_loadvm_state(f);
    migration_incoming_state_destroy();
    resume_all_vcpus();
    return ret;
}

/* Load a whole state and answer; exits QEMU if the machine is left broken. */
static bool qqq_state_finish_load(QqqWire *w, GByteArray *data)
{
    int ret = qqq_state_load_stream(data);

    if (ret < 0) {
        g_autofree char *msg = g_strdup_printf(
            "QEMU could not load the state (%s); the machine is "
            "half-restored, so QEMU exits", strerror(-ret));

        error_report("qqq: %s", msg);
        send_result(w, false, msg);
        exit(1);
    }
    return send_result(w, true, "");
}

/*
 * A LOAD that came in the synchronization callback, done from the main
 * loop: no timer list is being walked here.  The vCPUs were stopped in
 * the callback and stay paused until the next step is armed.
 */
static void qqq_state_load_bh(void *opaque)
{
    g_autoptr(GByteArray) data = qqq_state_deferred;
    bool alive;

    qqq_state_deferred = NULL;
    qqq_state_in_bh = true;
    pause_all_vcpus();
    alive = qqq_state_finish_load(qqq_state_wire, data);
    qqq_state_resume(alive);
    qqq_state_in_bh = false;
    resume_all_vcpus();
}

static bool qqq_state_load(QqqWire *w)
{
    g_autoptr(GByteArray) data = g_byte_array_new();
    const char *refusal = qqq_state_refusal();
    CPUState *cpu;

    /* The first chunk is in w->buf; the stream ends with an empty LOAD. */
    while (w->buf->len) {
        if (data->len + (uint64_t)w->buf->len > QQQ_STATE_MAX) {
            error_report("qqq: malformed frame from the simulator: a state "
                         "over %" PRIu64 " bytes", QQQ_STATE_MAX);
            exit(1);
        }
        g_byte_array_append(data, w->buf->data, w->buf->len);
        if (!qqq_wire_recv_frame(w, QQQ_FRAME_LOAD, "LOAD")) {
            return false;
        }
    }
    if (refusal) {
        return send_result(w, false, refusal);
    }
    if (!qqq_state_running || qqq_state_in_bh) {
        return qqq_state_finish_load(w, data);
    }
    /*
     * In the synchronization callback: timerlist_run_timers() would go on
     * with the clock it read before calling us and fire restored timers
     * early.  Stop the vCPUs here (we are their thread: this is immediate)
     * and load from a bottom half; false tells the caller not to arm a
     * step: the bottom half resumes stepping when the load is done.
     */
    CPU_FOREACH(cpu) {
        cpu_pause(cpu);
    }
    qqq_state_wire = w;
    qqq_state_deferred = g_steal_pointer(&data);
    qemu_bh_schedule(qqq_state_bh);
    return false;
}

bool qqq_state_frame(QqqWire *w, uint32_t type)
{
    if (type == QQQ_FRAME_SAVE) {
        return qqq_state_save(w);
    }
    return qqq_state_load(w);
}

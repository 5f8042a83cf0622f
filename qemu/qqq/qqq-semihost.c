/*
 * qqq semihosting clocks: simulation time for firmware that asks the host.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Arm semihosting's SYS_CLOCK, SYS_TIME and SYS_ELAPSED answer from the
 * host (clock(), time(), get_clock()).  Networked firmware seeds its
 * TCP/IP stack from them (initial sequence numbers, DHCP transaction ids),
 * so two runs of a paced QEMU would differ.  When QEMU is paced its time
 * is the simulation's: the wall clock is the RTC's (-rtc base plus virtual
 * time, the same date the guest's RTC shows), and the CPU has been busy
 * exactly as long as virtual time has run.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/timer.h"
#include "system/rtc.h"
#include "qqq/qqq.h"

int64_t qqq_semihost_clock(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) / (10 * SCALE_MS);
}

int64_t qqq_semihost_time(void)
{
    struct tm tm;

    qemu_get_timedate(&tm, 0);
    return mktimegm(&tm);
}

int64_t qqq_semihost_elapsed(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
}

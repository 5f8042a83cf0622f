/*
 * qqq: pace QEMU's virtual clock from an external simulator.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The two entry points vl.c calls; everything else is private to qqq.c.
 */

#ifndef QQQ_QQQ_H
#define QQQ_QQQ_H

/* Parse the argument of -qqq; exits with one line on stderr if invalid. */
void qqq_parse_option(const char *optarg);

/*
 * Called once the machine exists, before the main loop: checks the
 * configuration and blocks until the simulator's first advance.
 */
void qqq_start(void);

/* Was QEMU started with -qqq, so that its time is the simulation's? */
bool qqq_paced(void);

/*
 * The round-robin vCPU thread found every vCPU halted mid-step: warp the
 * clock to the next deadline on this thread.  False if QEMU is not paced
 * under icount, and the main loop must be woken to warp as usual.
 */
bool qqq_vcpu_idle(void);

/*
 * Arm semihosting's clocks for a paced QEMU (qqq-semihost.c): simulation
 * time, so that firmware seeding from them runs the same every time.
 */
int64_t qqq_semihost_clock(void);     /* SYS_CLOCK: centiseconds */
int64_t qqq_semihost_time(void);      /* SYS_TIME: seconds since 1970 */
int64_t qqq_semihost_elapsed(void);   /* SYS_ELAPSED: ticks of 1 ns */

#endif

/*
 * qqq machine states (qqq-state.c): saved and loaded between two steps.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef QQQ_STATE_H
#define QQQ_STATE_H

#include "qqq/qqq-wire.h"

/*
 * reported_ns: the synchronization core's "time reported so far", part of
 * every state.  resume: called once a LOAD that had to wait for a bottom
 * half is done (alive: the exchange can go on), to go on stepping.
 */
void qqq_state_init(int64_t *reported_ns, void (*resume)(bool alive));
/* An ADVANCE came: from now on we are inside the synchronization callback. */
void qqq_state_advanced(void);
/*
 * A SAVE or LOAD frame (payload in w->buf).  False when the exchange
 * cannot go on now: the simulator left, or a LOAD goes on in a bottom half
 * (qqq_state_pending()), which calls resume when done.
 */
bool qqq_state_frame(QqqWire *w, uint32_t type);
bool qqq_state_pending(void);

#endif

/*
 * bridge: the FMU's slave, a Python object, behind C calls.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Each function takes the GIL for the call (from whatever thread), calls
 * the slave's method, converts values, and hands the messages the slave
 * queued with Fmi2Slave.log, then any exception (as fmi2Error), to the
 * BridgeLog given at creation, after the GIL is released.  Answers are
 * fmi2OK, fmi2Discard (do_step returned False), fmi2Error, or fmi2Fatal
 * once Python itself is shutting down.
 */
#ifndef QEMUFMU_BRIDGE_H
#define QEMUFMU_BRIDGE_H

#include <stddef.h>

#include "fmi2.h"

typedef struct Slave Slave;

/* One message for the master: status, category ("" if none) and text. */
typedef void (*BridgeLog)(void *ctx, fmi2Status status, const char *category,
                          const char *text);

/*
 * Bind the Python C API in scope (dlopen handle or RTLD_DEFAULT) once per
 * process.  0, or -1 with the reason in err.
 */
int bridge_init(void *scope, char *err, size_t len);

/*
 * The slave of the FMU whose resources directory is resources: the class
 * named in resources/slavemodule.txt, instantiated.  NULL when it cannot
 * be made; the reason went to log.
 */
Slave *bridge_new(const char *instance_name, const char *resources,
                  int visible, BridgeLog log, void *ctx);

/* Drop the slave; python: 0 frees only the C side (Python is gone). */
void bridge_free(Slave *s, int python);

fmi2Status bridge_setup(Slave *s, int tolerance_defined, double tolerance,
                        double start, int stop_defined, double stop);
/* A hook without arguments: enter/exit_initialization_mode, terminate. */
fmi2Status bridge_hook(Slave *s, const char *method);
/* A new instance of the class in place of the current one. */
fmi2Status bridge_reset(Slave *s);
fmi2Status bridge_do_step(Slave *s, double t, double h);
/*
 * The master's logging settings (fmi2Instantiate's loggingOn,
 * fmi2SetDebugLogging), for a slave with set_debug_logging(on, categories):
 * it can then skip building messages the loader would drop.  fmi2OK for a
 * slave without that method.
 */
fmi2Status bridge_debug_logging(Slave *s, int on, size_t n,
                                char *const categories[]);

/* kind: 'r' Real, 'i' Integer, 'b' Boolean, 's' String. */
fmi2Status bridge_get(Slave *s, char kind, const fmi2ValueReference vr[],
                      size_t n, void *values);
fmi2Status bridge_set(Slave *s, char kind, const fmi2ValueReference vr[],
                      size_t n, const void *values);

fmi2Status bridge_get_state(Slave *s, fmi2FMUstate *state);
fmi2Status bridge_set_state(Slave *s, fmi2FMUstate state);
fmi2Status bridge_free_state(Slave *s, fmi2FMUstate *state);
fmi2Status bridge_state_size(Slave *s, fmi2FMUstate state, size_t *size);
fmi2Status bridge_serialize(Slave *s, fmi2FMUstate state, fmi2Byte bytes[],
                            size_t size);
fmi2Status bridge_deserialize(Slave *s, const fmi2Byte bytes[], size_t size,
                              fmi2FMUstate *state);

#endif

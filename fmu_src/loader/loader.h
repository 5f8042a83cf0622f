/*
 * The loader shim's internal interface.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMUFMU_LOADER_H
#define QEMUFMU_LOADER_H

#include <stddef.h>

/*
 * Make sure the process has a running CPython whose symbols are global.
 * 0 when it has, with *scope the dlsym handle to find its API in; -1 with
 * a message for the FMU log in err.
 */
int pyembed_ensure(void **scope, char *err, size_t len);

#endif

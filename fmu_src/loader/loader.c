/*
 * loader: the FMU's binary, so that any FMI 2.0 host can load it.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The FMU's slave is a Python class (pythonfmu's Fmi2Slave API).  This
 * library exports the whole FMI 2.0 co-simulation API, makes sure the
 * process has a Python (pyembed.c: the master's, or one it loads) and
 * calls the slave through bridge.c.  Nothing of pythonfmu's native code
 * is used: its export library corrupted the heap at every process exit
 * (docs/fmu-loader.md).
 *
 * Here, in front of the bridge, it keeps the promises the FMI standard
 * and our docs make:
 * - the status returned is the worst of what the call answered and the
 *   statuses the slave logged during it (our slave logs Error for a misuse
 *   and Discard for a simulation that ended, rather than raise); a Python
 *   exception is fmi2Error with its message, and the instance goes on;
 * - errors reach the master even with logging off: everything at
 *   fmi2Warning and above is passed on, the rest by the master's
 *   loggingOn and categories;
 * - every message is handed to the master's logger as the argument of
 *   "%s": a '%' in a guest's console line is text, not a conversion;
 * - strings that are not UTF-8, and NULL arrays, are refused before they
 *   reach Python;
 * - resource locations in any file: URI form (file:///p,
 *   file://localhost/p, file:/p, percent-escapes) reach the slave as the
 *   path /p;
 * - after fmi2Fatal (only when Python itself is shutting down) the
 *   instance is fenced off: later calls fail with fmi2Error and
 *   fmi2FreeInstance frees only the C side.
 */

#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "fmi2.h"
#include "loader.h"

#define FMI_EXPORT __attribute__((visibility("default")))

typedef struct Instance {
    Slave *slave;
    fmi2CallbackFunctions host;     /* the master's, as given */
    char *name;
    int fenced;                     /* a call returned fmi2Fatal */
    int logging;                    /* the master's loggingOn */
    char **categories;              /* the master's, NULL: all */
    size_t ncategories;
    fmi2Status logged;              /* worst status logged during a call */
    fmi2Real last_successful_time;  /* fmi2LastSuccessfulTime */
    int terminated;                 /* do_step returned False: fmi2Terminated */
} Instance;

static void host_log(const fmi2CallbackFunctions *cb, fmi2String name,
                     fmi2Status status, const char *fmt, ...)
{
    char text[2048];
    va_list ap;

    if (!cb || !cb->logger) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    cb->logger(cb->componentEnvironment, name ? name : "", status,
               status >= fmi2Error ? "logStatusError" : "logStatusDiscard",
               "%s", text);
}

static int wanted(const Instance *inst, fmi2Status status,
                  fmi2String category)
{
    size_t i;

    if (status >= fmi2Warning) {
        return 1;
    }
    if (!inst->logging) {
        return 0;
    }
    for (i = 0; i < inst->ncategories; i++) {
        if (category && !strcmp(inst->categories[i], category)) {
            return 1;
        }
    }
    return inst->ncategories == 0;
}

/* The slave's messages (and the bridge's), handed on to the master. */
static void forward_log(void *env, fmi2Status status, const char *category,
                        const char *text)
{
    Instance *inst = env;

    if ((status == fmi2Discard || status == fmi2Error) &&
        status > inst->logged) {
        inst->logged = status;
    }
    if (inst->host.logger && wanted(inst, status, category)) {
        inst->host.logger(inst->host.componentEnvironment, inst->name, status,
                          category, "%s", text);
    }
}

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' :
           c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * The directory a resource location names: file:///p, file://localhost/p
 * and file:/p give /p with percent-escapes decoded.  Anything else is
 * taken as a path as it is (a master that passes one).
 */
static char *resource_path(const char *uri)
{
    const char *path = NULL;
    char *out, *o;

    if (!strncmp(uri, "file://localhost/", 17)) {
        path = uri + 16;
    } else if (!strncmp(uri, "file:///", 8)) {
        path = uri + 7;
    } else if (!strncmp(uri, "file:/", 6)) {
        path = uri + 5;
    }
    if (!path) {
        return strdup(uri);
    }
    out = malloc(strlen(path) + 1);
    if (!out) {
        return NULL;
    }
    for (o = out; *path; path++) {
        if (path[0] == '%' && hex(path[1]) >= 0 && hex(path[2]) >= 0) {
            *o++ = (char)(hex(path[1]) * 16 + hex(path[2]));
            path += 2;
        } else {
            *o++ = *path;
        }
    }
    *o = '\0';
    return out;
}

FMI_EXPORT const char *fmi2GetTypesPlatform(void)
{
    return fmi2TypesPlatform;
}

FMI_EXPORT const char *fmi2GetVersion(void)
{
    return fmi2Version;
}

/* Python up and its API bound, once per process; -1 with the reason. */
static int python_ready(char *err, size_t len)
{
    void *scope;

    if (pyembed_ensure(&scope, err, len) < 0) {
        return -1;
    }
    return bridge_init(scope, err, len);
}

FMI_EXPORT fmi2Component fmi2Instantiate(fmi2String name, fmi2Type type,
    fmi2String guid, fmi2String location,
    const fmi2CallbackFunctions *functions, fmi2Boolean visible,
    fmi2Boolean logging)
{
    char err[1536];
    Instance *inst;
    char *path = NULL;

    (void)guid;
    if (!functions) {
        return NULL;
    }
    if (type != fmi2CoSimulation) {
        host_log(functions, name, fmi2Error,
                 "this FMU supports co-simulation only");
        return NULL;
    }
    if (python_ready(err, sizeof(err)) < 0) {
        host_log(functions, name, fmi2Error, "cannot instantiate: %s", err);
        return NULL;
    }
    inst = calloc(1, sizeof(*inst));
    if (location) {
        path = resource_path(location);
    }
    if (!inst || (location && !path) ||
        !(inst->name = strdup(name ? name : ""))) {
        host_log(functions, name, fmi2Error, "out of memory");
        free(path);
        free(inst);
        return NULL;
    }
    inst->host = *functions;
    inst->logging = logging;
    inst->last_successful_time = NAN;
    inst->slave = bridge_new(inst->name, path, visible, forward_log, inst);
    free(path);
    if (!inst->slave) {
        free(inst->name);
        free(inst);
        return NULL;
    }
    inst->logged = fmi2OK;
    bridge_debug_logging(inst->slave, logging, 0, NULL);
    return inst;
}

/* The instance behind c if it may still be called, else NULL (logged). */
static Instance *usable(fmi2Component c, const char *function)
{
    Instance *inst = c;

    if (!inst) {
        return NULL;
    }
    if (inst->fenced) {
        host_log(&inst->host, inst->name, fmi2Error,
                 "%s refused: the instance had a fatal error; only "
                 "fmi2FreeInstance may follow", function);
        return NULL;
    }
    inst->logged = fmi2OK;
    return inst;
}

/* The status a call returns: the worse of answered and logged. */
static fmi2Status settle(Instance *inst, fmi2Status status)
{
    if (status == fmi2Fatal) {
        inst->fenced = 1;
    } else if (inst->logged > status) {
        status = inst->logged;
    }
    inst->logged = fmi2OK;
    return status;
}

static void forget_categories(Instance *inst)
{
    size_t i;

    for (i = 0; i < inst->ncategories; i++) {
        free(inst->categories[i]);
    }
    free(inst->categories);
    inst->categories = NULL;
    inst->ncategories = 0;
}

FMI_EXPORT void fmi2FreeInstance(fmi2Component c)
{
    Instance *inst = c;

    if (!inst) {
        return;
    }
    bridge_free(inst->slave, !inst->fenced);
    forget_categories(inst);
    free(inst->name);
    free(inst);
}

/* The master's logging settings stay here; the bridge passes on all. */
FMI_EXPORT fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean on,
                                          size_t n, const fmi2String cats[])
{
    Instance *inst = usable(c, "fmi2SetDebugLogging");
    size_t i;

    if (!inst) {
        return fmi2Error;
    }
    if (n && !cats) {
        host_log(&inst->host, inst->name, fmi2Error,
                 "fmi2SetDebugLogging: %zu categories but no array", n);
        return fmi2Error;
    }
    forget_categories(inst);
    inst->logging = on;
    inst->categories = n ? calloc(n, sizeof(*inst->categories)) : NULL;
    for (i = 0; inst->categories && i < n; i++) {
        inst->categories[i] = strdup(cats[i] ? cats[i] : "");
        inst->ncategories += inst->categories[i] != NULL;
    }
    return settle(inst, bridge_debug_logging(inst->slave, inst->logging,
                                             inst->ncategories,
                                             inst->categories));
}

/*
 * Every call into the slave: refuse on a fenced instance, call, settle
 * (and fence the instance if the bridge answers Fatal).
 */
#define BRIDGED(name, params, call) \
    FMI_EXPORT fmi2Status name params \
    { \
        Instance *inst = usable(c, #name); \
        if (!inst) { \
            return fmi2Error; \
        } \
        return settle(inst, call); \
    }

BRIDGED(fmi2SetupExperiment,
        (fmi2Component c, fmi2Boolean tol_defined, fmi2Real tol,
         fmi2Real start, fmi2Boolean stop_defined, fmi2Real stop),
        bridge_setup(inst->slave, tol_defined, tol, start, stop_defined, stop))
BRIDGED(fmi2EnterInitializationMode, (fmi2Component c),
        bridge_hook(inst->slave, "enter_initialization_mode"))
BRIDGED(fmi2ExitInitializationMode, (fmi2Component c),
        bridge_hook(inst->slave, "exit_initialization_mode"))
BRIDGED(fmi2Terminate, (fmi2Component c),
        bridge_hook(inst->slave, "terminate"))

FMI_EXPORT fmi2Status fmi2Reset(fmi2Component c)
{
    Instance *inst = usable(c, "fmi2Reset");
    fmi2Status status;

    if (!inst) {
        return fmi2Error;
    }
    status = bridge_reset(inst->slave);
    if (status == fmi2OK) {
        inst->terminated = 0;
        inst->last_successful_time = NAN;
        status = bridge_debug_logging(inst->slave, inst->logging,
                                      inst->ncategories, inst->categories);
    }
    return settle(inst, status);
}

FMI_EXPORT fmi2Status fmi2DoStep(fmi2Component c, fmi2Real t, fmi2Real h,
                                 fmi2Boolean no_prior)
{
    Instance *inst = usable(c, "fmi2DoStep");
    fmi2Status status;

    (void)no_prior;
    if (!inst) {
        return fmi2Error;
    }
    status = bridge_do_step(inst->slave, t, h);
    if (status == fmi2OK) {
        inst->last_successful_time = t + h;
    } else if (status == fmi2Discard) {
        /* do_step returned False: the simulation cannot go on. */
        inst->last_successful_time = t;
        inst->terminated = 1;
    }
    return settle(inst, status);
}

static int arrays_given(Instance *inst, const char *function,
                        const void *vr, const void *value, size_t n)
{
    if (n && (!vr || !value)) {
        host_log(&inst->host, inst->name, fmi2Error,
                 "%s: %zu values but no array", function, n);
        return 0;
    }
    return 1;
}

/* Strict UTF-8: what Python will accept as a str. */
static int utf8(const unsigned char *s)
{
    while (*s) {
        int len = *s < 0x80 ? 1 : (*s & 0xe0) == 0xc0 ? 2 :
                  (*s & 0xf0) == 0xe0 ? 3 : (*s & 0xf8) == 0xf0 ? 4 : 0;
        unsigned cp;
        int i;

        if (!len || (len == 2 && *s < 0xc2)) {
            return 0;
        }
        cp = len == 1 ? *s : *s & (0x7f >> len);
        for (i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
            return 0;
        }
        s += len;
    }
    return 1;
}

#define NO_CHECK(inst, function, vr, value, n) 1

static int strings_ok(Instance *inst, const char *function,
                      const fmi2ValueReference vr[], const fmi2String value[],
                      size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!value[i] || !utf8((const unsigned char *)value[i])) {
            host_log(&inst->host, inst->name, fmi2Error,
                     "%s: the value for variable %u is %s; strings must be "
                     "UTF-8", function, vr[i],
                     value[i] ? "not UTF-8" : "NULL");
            return 0;
        }
    }
    return 1;
}

#define ACCESSOR(name, type, how, kind, check) \
    FMI_EXPORT fmi2Status name(fmi2Component c, \
                               const fmi2ValueReference vr[], size_t n, \
                               type value[]) \
    { \
        Instance *inst = usable(c, #name); \
        if (!inst || !arrays_given(inst, #name, vr, value, n) || \
            !check(inst, #name, vr, value, n)) { \
            return fmi2Error; \
        } \
        return settle(inst, how(inst->slave, kind, vr, n, value)); \
    }

ACCESSOR(fmi2GetReal, fmi2Real, bridge_get, 'r', NO_CHECK)
ACCESSOR(fmi2GetInteger, fmi2Integer, bridge_get, 'i', NO_CHECK)
ACCESSOR(fmi2GetBoolean, fmi2Boolean, bridge_get, 'b', NO_CHECK)
ACCESSOR(fmi2GetString, fmi2String, bridge_get, 's', NO_CHECK)
ACCESSOR(fmi2SetReal, const fmi2Real, bridge_set, 'r', NO_CHECK)
ACCESSOR(fmi2SetInteger, const fmi2Integer, bridge_set, 'i', NO_CHECK)
ACCESSOR(fmi2SetBoolean, const fmi2Boolean, bridge_set, 'b', NO_CHECK)
ACCESSOR(fmi2SetString, const fmi2String, bridge_set, 's', strings_ok)

BRIDGED(fmi2GetFMUstate, (fmi2Component c, fmi2FMUstate *state),
        bridge_get_state(inst->slave, state))
BRIDGED(fmi2SetFMUstate, (fmi2Component c, fmi2FMUstate state),
        bridge_set_state(inst->slave, state))
BRIDGED(fmi2FreeFMUstate, (fmi2Component c, fmi2FMUstate *state),
        bridge_free_state(inst->slave, state))
BRIDGED(fmi2SerializedFMUstateSize,
        (fmi2Component c, fmi2FMUstate state, size_t *size),
        bridge_state_size(inst->slave, state, size))
BRIDGED(fmi2SerializeFMUstate,
        (fmi2Component c, fmi2FMUstate state, fmi2Byte bytes[], size_t size),
        bridge_serialize(inst->slave, state, bytes, size))
BRIDGED(fmi2DeSerializeFMUstate,
        (fmi2Component c, const fmi2Byte bytes[], size_t size,
         fmi2FMUstate *state),
        bridge_deserialize(inst->slave, bytes, size, state))

/* What the model description does not claim: an Error, as pythonfmu had. */
static fmi2Status unsupported(fmi2Component c, const char *function)
{
    Instance *inst = usable(c, function);

    if (inst) {
        host_log(&inst->host, inst->name, fmi2Error,
                 "%s is not supported by this FMU", function);
    }
    return fmi2Error;
}

FMI_EXPORT fmi2Status fmi2GetDirectionalDerivative(fmi2Component c,
    const fmi2ValueReference unknowns[], size_t nu,
    const fmi2ValueReference knowns[], size_t nk, const fmi2Real dknown[],
    fmi2Real dunknown[])
{
    (void)unknowns, (void)nu, (void)knowns, (void)nk, (void)dknown;
    (void)dunknown;
    return unsupported(c, "fmi2GetDirectionalDerivative");
}

FMI_EXPORT fmi2Status fmi2SetRealInputDerivatives(fmi2Component c,
    const fmi2ValueReference vr[], size_t n, const fmi2Integer order[],
    const fmi2Real value[])
{
    (void)vr, (void)n, (void)order, (void)value;
    return unsupported(c, "fmi2SetRealInputDerivatives");
}

FMI_EXPORT fmi2Status fmi2GetRealOutputDerivatives(fmi2Component c,
    const fmi2ValueReference vr[], size_t n, const fmi2Integer order[],
    fmi2Real value[])
{
    (void)vr, (void)n, (void)order, (void)value;
    return unsupported(c, "fmi2GetRealOutputDerivatives");
}

/* fmi2DoStep never answers fmi2Pending: there is no step to cancel. */
FMI_EXPORT fmi2Status fmi2CancelStep(fmi2Component c)
{
    return unsupported(c, "fmi2CancelStep");
}

/*
 * The status inquiries: fmi2LastSuccessfulTime and fmi2Terminated are
 * known; anything else is not available (fmi2Discard, as FMI 2.0 says).
 */
static fmi2Status status_of(fmi2Component c, const char *function,
                            const void *value, fmi2StatusKind kind, int known)
{
    Instance *inst = usable(c, function);

    if (!inst) {
        return fmi2Error;
    }
    if (!value) {
        host_log(&inst->host, inst->name, fmi2Error, "%s: no place for the "
                 "value (NULL)", function);
        return fmi2Error;
    }
    if ((int)kind != known) {
        host_log(&inst->host, inst->name, fmi2Discard, "%s: status kind %d "
                 "is not available", function, (int)kind);
        return fmi2Discard;
    }
    return fmi2OK;
}

FMI_EXPORT fmi2Status fmi2GetStatus(fmi2Component c, const fmi2StatusKind kind,
                                    fmi2Status *value)
{
    return status_of(c, "fmi2GetStatus", value, kind, -1);
}

FMI_EXPORT fmi2Status fmi2GetRealStatus(fmi2Component c,
                                        const fmi2StatusKind kind,
                                        fmi2Real *value)
{
    fmi2Status status = status_of(c, "fmi2GetRealStatus", value, kind,
                                  fmi2LastSuccessfulTime);

    if (status == fmi2OK) {
        *value = ((Instance *)c)->last_successful_time;
    }
    return status;
}

FMI_EXPORT fmi2Status fmi2GetIntegerStatus(fmi2Component c,
                                           const fmi2StatusKind kind,
                                           fmi2Integer *value)
{
    return status_of(c, "fmi2GetIntegerStatus", value, kind, -1);
}

FMI_EXPORT fmi2Status fmi2GetBooleanStatus(fmi2Component c,
                                           const fmi2StatusKind kind,
                                           fmi2Boolean *value)
{
    fmi2Status status = status_of(c, "fmi2GetBooleanStatus", value, kind,
                                  fmi2Terminated);

    if (status == fmi2OK) {
        *value = ((Instance *)c)->terminated ? fmi2True : fmi2False;
    }
    return status;
}

FMI_EXPORT fmi2Status fmi2GetStringStatus(fmi2Component c,
                                          const fmi2StatusKind kind,
                                          fmi2String *value)
{
    return status_of(c, "fmi2GetStringStatus", value, kind, -1);
}

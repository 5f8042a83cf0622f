/*
 * loader: the FMU's binary, so that any FMI 2.0 host can load it.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * pythonfmu's export library runs the slave in the process's Python and
 * cannot be loaded where there is none (C and C++ masters: FMI Library,
 * libcosim, OMSimulator ...).  This shim exports the whole FMI 2.0
 * co-simulation API, makes sure a Python is there (pyembed.c), opens the
 * export library shipped beside it (pythonfmu/ next to this file) and
 * forwards every call.
 *
 * Forwarding also lets it keep the promises pythonfmu cannot:
 * - a Python hook can only fail by raising, which pythonfmu turns into
 *   fmi2Fatal (losing the message) and then frees the slave it keeps
 *   using.  Our slave never raises: it logs the failure with the status
 *   the call deserves (Error for misuse, Discard for a simulation that
 *   ended) and the shim returns the worst status logged during the call;
 * - errors reach the master even with logging off: the export library
 *   always logs, and the shim filters by the master's loggingOn and
 *   categories everything below fmi2Warning;
 * - after an fmi2Fatal (a bug, not a misuse) the instance is fenced off:
 *   later calls fail with fmi2Error and fmi2FreeInstance frees only what
 *   is ours;
 * - the export library passes log text as printf formats, so a '%' in a
 *   guest's console line would make the master's logger read garbage: the
 *   text is handed on as the argument of "%s";
 * - strings that are not UTF-8, and NULL arrays, are refused before they
 *   reach Python;
 * - resource locations in any file: URI form reach it as file:///path.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmi2.h"
#include "loader.h"

#define FMI_EXPORT __attribute__((visibility("default")))

/* Where the export library lives, relative to this file's directory. */
#define EXPORT_LIBRARY "pythonfmu/libpythonfmu-export.so"

typedef struct Inner {
#define FIELD(name, ret, params) ret (*name) params;
    FMI2_FORWARDED(FIELD)
#undef FIELD
} Inner;

typedef struct Instance {
    fmi2Component inner;
    fmi2CallbackFunctions host;     /* the master's, as given */
    fmi2CallbackFunctions mine;     /* what the export library gets */
    char *name;
    int fenced;                     /* the export library returned Fatal */
    int logging;                    /* the master's loggingOn */
    char **categories;              /* the master's, NULL: all */
    size_t ncategories;
    fmi2Status logged;              /* worst status logged during a call */
} Instance;

static Inner inner;
static pthread_mutex_t inner_lock = PTHREAD_MUTEX_INITIALIZER;
static int inner_ready;

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
    cb->logger(cb->componentEnvironment, name ? name : "", status, "logStatusError",
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

/* The export library's log calls, handed on to the master verbatim. */
static void forward_log(fmi2ComponentEnvironment env, fmi2String name,
                        fmi2Status status, fmi2String category,
                        fmi2String message, ...)
{
    Instance *inst = env;

    if (!inst) {
        return;
    }
    if ((status == fmi2Discard || status == fmi2Error) &&
        status > inst->logged) {
        inst->logged = status;
    }
    if (inst->host.logger && wanted(inst, status, category)) {
        inst->host.logger(inst->host.componentEnvironment, name, status,
                          category ? category : "", "%s",
                          message ? message : "");
    }
}

static void *plain_calloc(size_t n, size_t size)
{
    return calloc(n, size);
}

/* This library's directory, with a trailing slash. */
static int own_directory(char *dir, size_t len)
{
    Dl_info where;
    const char *slash;

    if (!dladdr((void *)own_directory, &where) || !where.dli_fname ||
        !(slash = strrchr(where.dli_fname, '/'))) {
        return -1;
    }
    snprintf(dir, len, "%.*s", (int)(slash - where.dli_fname + 1),
             where.dli_fname);
    return 0;
}

static int load_inner(char *err, size_t len)
{
    char path[PATH_MAX];
    void *handle;
    int ret = -1;

    pthread_mutex_lock(&inner_lock);
    if (inner_ready) {
        ret = 0;
        goto out;
    }
    if (own_directory(path, sizeof(path)) < 0) {
        snprintf(err, len, "cannot tell where the FMU's binary is");
        goto out;
    }
    strncat(path, EXPORT_LIBRARY, sizeof(path) - strlen(path) - 1);
    /* Never unloaded: the slave's Python objects point into it. */
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle) {
        snprintf(err, len, "cannot load the FMU's Python bridge: %s",
                 dlerror());
        goto out;
    }
#define BIND(name, ret, params) \
    inner.name = (ret (*) params)dlsym(handle, #name); \
    if (!inner.name) { \
        snprintf(err, len, "%s lacks %s", path, #name); \
        goto out; \
    }
    FMI2_FORWARDED(BIND)
#undef BIND
    inner_ready = 1;
    ret = 0;
out:
    pthread_mutex_unlock(&inner_lock);
    return ret;
}

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' :
           c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * file:///p, file://localhost/p and file:/p, percent-escapes decoded, as
 * the file:///p the export library understands (it strips "file://" and
 * decodes nothing but %20).  Anything else is passed on unchanged.
 */
static char *normalize_location(const char *uri)
{
    const char *path = NULL;
    char *out, *o;

    if (!uri) {
        return NULL;
    }
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
    out = malloc(strlen(path) + 8);
    if (!out) {
        return NULL;
    }
    o = out + sprintf(out, "file://");
    for (; *path; path++) {
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

FMI_EXPORT fmi2Component fmi2Instantiate(fmi2String name, fmi2Type type,
    fmi2String guid, fmi2String location,
    const fmi2CallbackFunctions *functions, fmi2Boolean visible,
    fmi2Boolean logging)
{
    char err[1536];
    Instance *inst;
    char *uri;

    if (!functions) {
        return NULL;
    }
    if (type != fmi2CoSimulation) {
        host_log(functions, name, fmi2Error,
                 "this FMU supports co-simulation only");
        return NULL;
    }
    if (pyembed_ensure(err, sizeof(err)) < 0 ||
        load_inner(err, sizeof(err)) < 0) {
        host_log(functions, name, fmi2Error, "cannot instantiate: %s", err);
        return NULL;
    }
    inst = calloc(1, sizeof(*inst));
    uri = normalize_location(location);
    if (!inst || !uri || !(inst->name = strdup(name ? name : ""))) {
        host_log(functions, name, fmi2Error, "out of memory");
        free(uri);
        free(inst);
        return NULL;
    }
    inst->host = *functions;
    inst->mine = *functions;
    inst->mine.logger = forward_log;
    inst->mine.componentEnvironment = inst;
    if (!inst->mine.allocateMemory || !inst->mine.freeMemory) {
        inst->mine.allocateMemory = plain_calloc;
        inst->mine.freeMemory = free;
    }
    inst->logging = logging;
    inst->inner = inner.fmi2Instantiate(name, type, guid, uri, &inst->mine,
                                        visible, fmi2True);
    free(uri);
    if (!inst->inner) {
        free(inst->name);
        free(inst);
        return NULL;
    }
    inst->logged = fmi2OK;
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
    return inst;
}

/* The status a forwarded call returns: the worse of answered and logged. */
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
    if (!inst->fenced) {
        inner.fmi2FreeInstance(inst->inner);
    }
    forget_categories(inst);
    free(inst->name);
    free(inst);
}

/* The master's logging settings stay here; the export library logs all. */
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
    return fmi2OK;
}

/*
 * Every other function: refuse on a fenced instance, forward, and fence the
 * instance if the export library reports Fatal.
 */
#define FORWARD(name, params, args) \
    FMI_EXPORT fmi2Status name params \
    { \
        Instance *inst = usable(c, #name); \
        if (!inst) { \
            return fmi2Error; \
        } \
        return settle(inst, inner.name args); \
    }

FORWARD(fmi2SetupExperiment,
        (fmi2Component c, fmi2Boolean tol_defined, fmi2Real tol,
         fmi2Real start, fmi2Boolean stop_defined, fmi2Real stop),
        (inst->inner, tol_defined, tol, start, stop_defined, stop))
FORWARD(fmi2EnterInitializationMode, (fmi2Component c), (inst->inner))
FORWARD(fmi2ExitInitializationMode, (fmi2Component c), (inst->inner))
FORWARD(fmi2Terminate, (fmi2Component c), (inst->inner))
FORWARD(fmi2Reset, (fmi2Component c), (inst->inner))

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

#define ACCESSOR(name, type, check) \
    FMI_EXPORT fmi2Status name(fmi2Component c, \
                               const fmi2ValueReference vr[], size_t n, \
                               type value[]) \
    { \
        Instance *inst = usable(c, #name); \
        if (!inst || !arrays_given(inst, #name, vr, value, n) || \
            !check(inst, #name, vr, value, n)) { \
            return fmi2Error; \
        } \
        return settle(inst, inner.name(inst->inner, vr, n, value)); \
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

ACCESSOR(fmi2GetReal, fmi2Real, NO_CHECK)
ACCESSOR(fmi2GetInteger, fmi2Integer, NO_CHECK)
ACCESSOR(fmi2GetBoolean, fmi2Boolean, NO_CHECK)
ACCESSOR(fmi2GetString, fmi2String, NO_CHECK)
ACCESSOR(fmi2SetReal, const fmi2Real, NO_CHECK)
ACCESSOR(fmi2SetInteger, const fmi2Integer, NO_CHECK)
ACCESSOR(fmi2SetBoolean, const fmi2Boolean, NO_CHECK)
ACCESSOR(fmi2SetString, const fmi2String, strings_ok)

FORWARD(fmi2GetFMUstate, (fmi2Component c, fmi2FMUstate *state),
        (inst->inner, state))
FORWARD(fmi2SetFMUstate, (fmi2Component c, fmi2FMUstate state),
        (inst->inner, state))
FORWARD(fmi2FreeFMUstate, (fmi2Component c, fmi2FMUstate *state),
        (inst->inner, state))
FORWARD(fmi2SerializedFMUstateSize,
        (fmi2Component c, fmi2FMUstate state, size_t *size),
        (inst->inner, state, size))
FORWARD(fmi2SerializeFMUstate,
        (fmi2Component c, fmi2FMUstate state, fmi2Byte bytes[], size_t size),
        (inst->inner, state, bytes, size))
FORWARD(fmi2DeSerializeFMUstate,
        (fmi2Component c, const fmi2Byte bytes[], size_t size,
         fmi2FMUstate *state),
        (inst->inner, bytes, size, state))
FORWARD(fmi2GetDirectionalDerivative,
        (fmi2Component c, const fmi2ValueReference unknowns[], size_t nu,
         const fmi2ValueReference knowns[], size_t nk,
         const fmi2Real dknown[], fmi2Real dunknown[]),
        (inst->inner, unknowns, nu, knowns, nk, dknown, dunknown))
FORWARD(fmi2SetRealInputDerivatives,
        (fmi2Component c, const fmi2ValueReference vr[], size_t n,
         const fmi2Integer order[], const fmi2Real value[]),
        (inst->inner, vr, n, order, value))
FORWARD(fmi2GetRealOutputDerivatives,
        (fmi2Component c, const fmi2ValueReference vr[], size_t n,
         const fmi2Integer order[], fmi2Real value[]),
        (inst->inner, vr, n, order, value))
FORWARD(fmi2DoStep,
        (fmi2Component c, fmi2Real t, fmi2Real h, fmi2Boolean no_prior),
        (inst->inner, t, h, no_prior))
FORWARD(fmi2CancelStep, (fmi2Component c), (inst->inner))

#define STATUS(name, type) \
    FORWARD(name, (fmi2Component c, const fmi2StatusKind kind, type *value), \
            (inst->inner, kind, value))
STATUS(fmi2GetStatus, fmi2Status)
STATUS(fmi2GetRealStatus, fmi2Real)
STATUS(fmi2GetIntegerStatus, fmi2Integer)
STATUS(fmi2GetBooleanStatus, fmi2Boolean)
STATUS(fmi2GetStringStatus, fmi2String)

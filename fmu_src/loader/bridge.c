/*
 * bridge: call the FMU's Python slave (a pythonfmu Fmi2Slave subclass)
 * from C, in place of pythonfmu's own export library.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * pythonfmu 0.7's export library keeps a global C++ shared_ptr that the
 * C++ runtime destroys at exit, after which its unload destructor writes
 * to it: every process that loaded an FMU read freed memory at exit and
 * some aborted (docs/fmu-loader.md).  This file does the same job in C
 * with nothing global but the bound Python API: no static constructors or
 * destructors, nothing that runs at unload, Python never finalized.
 *
 * It does what the export library did for the Python side, so slaves
 * written for pythonfmu run unchanged:
 * - the model class is the class in the module named by
 *   resources/slavemodule.txt, imported with resources/ first on sys.path,
 *   that has a class named Fmi2Slave deepest in its MRO (first one wins a
 *   tie);
 * - it is called with instance_name, resources (a path), visible and
 *   logger (None: there is nothing a slave could do with a C pointer);
 * - messages the slave queued with Fmi2Slave.log (the list
 *   _get_log_queue() returns, of objects with status, category, msg) are
 *   taken off the queue after every call;
 * - FMU states are the objects _get_fmu_state() returns, restored with
 *   _set_fmu_state(state) and converted by the class's
 *   _fmu_state_to_bytes(state) and _fmu_state_from_bytes(bytes).
 *
 * Unlike it, an exception is fmi2Error with its type, text and place in
 * the log, the instance stays usable, and fmi2Reset keeps the old
 * instance when the new one cannot be made.  The master's logger is
 * called after the GIL is released, so it may block or call back into
 * the FMU without deadlocking Python.
 *
 * The Python C API is looked up with dlsym: the FMU is built without
 * Python headers and runs on any CPython 3.10 to 3.13.  Objects are
 * opaque pointers; only functions (and three exported objects) are used,
 * never a macro that would look inside an object.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "bridge.h"

typedef struct _object PyObject;

#define PY_EQ 2     /* Py_EQ for PyObject_RichCompareBool */

#define PY_API(X) \
    X(int, Py_IsInitialized, (void)) \
    X(int, PyGILState_Ensure, (void)) \
    X(void, PyGILState_Release, (int)) \
    X(void, Py_IncRef, (PyObject *)) \
    X(void, Py_DecRef, (PyObject *)) \
    X(PyObject *, PyImport_ImportModule, (const char *)) \
    X(PyObject *, PyObject_GetAttrString, (PyObject *, const char *)) \
    X(PyObject *, PyObject_Call, (PyObject *, PyObject *, PyObject *)) \
    X(PyObject *, PyObject_CallObject, (PyObject *, PyObject *)) \
    X(PyObject *, PyObject_Str, (PyObject *)) \
    X(int, PyObject_IsTrue, (PyObject *)) \
    X(int, PyObject_IsInstance, (PyObject *, PyObject *)) \
    X(int, PyObject_RichCompareBool, (PyObject *, PyObject *, int)) \
    X(PyObject *, PyTuple_New, (ssize_t)) \
    X(int, PyTuple_SetItem, (PyObject *, ssize_t, PyObject *)) \
    X(PyObject *, PyDict_New, (void)) \
    X(int, PyDict_SetItemString, (PyObject *, const char *, PyObject *)) \
    X(PyObject *, PyDict_Values, (PyObject *)) \
    X(PyObject *, PyModule_GetDict, (PyObject *)) \
    X(PyObject *, PyList_New, (ssize_t)) \
    X(int, PyList_SetItem, (PyObject *, ssize_t, PyObject *)) \
    X(int, PyList_Insert, (PyObject *, ssize_t, PyObject *)) \
    X(ssize_t, PySequence_Size, (PyObject *)) \
    X(PyObject *, PySequence_GetItem, (PyObject *, ssize_t)) \
    X(int, PySequence_DelSlice, (PyObject *, ssize_t, ssize_t)) \
    X(PyObject *, PyLong_FromUnsignedLong, (unsigned long)) \
    X(PyObject *, PyLong_FromLong, (long)) \
    X(long, PyLong_AsLong, (PyObject *)) \
    X(PyObject *, PyFloat_FromDouble, (double)) \
    X(double, PyFloat_AsDouble, (PyObject *)) \
    X(PyObject *, PyBool_FromLong, (long)) \
    X(PyObject *, PyUnicode_FromString, (const char *)) \
    X(PyObject *, PyUnicode_DecodeFSDefault, (const char *)) \
    X(PyObject *, PyUnicode_DecodeUTF8, (const char *, ssize_t, const char *)) \
    X(const char *, PyUnicode_AsUTF8AndSize, (PyObject *, ssize_t *)) \
    X(PyObject *, PyBytes_FromStringAndSize, (const char *, ssize_t)) \
    X(int, PyBytes_AsStringAndSize, (PyObject *, char **, ssize_t *)) \
    X(PyObject *, PyErr_Occurred, (void)) \
    X(void, PyErr_Fetch, (PyObject **, PyObject **, PyObject **)) \
    X(void, PyErr_NormalizeException, (PyObject **, PyObject **, PyObject **)) \
    X(void, PyErr_Clear, (void)) \
    X(int, PyErr_GivenExceptionMatches, (PyObject *, PyObject *)) \
    X(void, PyErr_SetInterrupt, (void))

typedef struct PyApi {
#define FIELD(type, name, args) type (*name) args;
    PY_API(FIELD)
#undef FIELD
    PyObject *none;                 /* &_Py_NoneStruct */
    PyObject *type_type;            /* &PyType_Type */
    PyObject *keyboard_interrupt;   /* PyExc_KeyboardInterrupt */
    int (*is_finalizing)(void);     /* Py_IsFinalizing or older name; or NULL */
} PyApi;

static PyApi py;
static pthread_mutex_t bind_lock = PTHREAD_MUTEX_INITIALIZER;
static int bound;

typedef struct Message {
    fmi2Status status;
    char *category;
    char *text;
} Message;

struct Slave {
    PyObject *cls;          /* the model class */
    PyObject *kwargs;       /* its constructor's, kept for fmi2Reset */
    PyObject *obj;          /* the instance */
    PyObject *queue;        /* the instance's log queue, or NULL */
    PyObject *sized_state;  /* the state fmi2SerializedFMUstateSize saw */
    PyObject *sized_bytes;  /* and its bytes, for fmi2SerializeFMUstate */
    int gil;                /* PyGILState_Ensure's answer, during a call */
    int interrupted;        /* the call raised KeyboardInterrupt */
    BridgeLog log;
    void *ctx;
    Message *messages;      /* for the master, once the GIL is released */
    size_t nmessages;
    char **strings;         /* fmi2GetString's answers, kept until the next */
    size_t nstrings;
};

int bridge_init(void *scope, char *err, size_t len)
{
    PyObject **exc;
    int ret = 0;

    pthread_mutex_lock(&bind_lock);
    if (bound) {
        goto out;
    }
#define BIND(type, name, args) \
    py.name = (type (*) args)dlsym(scope, #name); \
    if (!py.name) { \
        snprintf(err, len, "the loaded libpython lacks %s", #name); \
        ret = -1; \
        goto out; \
    }
    PY_API(BIND)
#undef BIND
    py.none = dlsym(scope, "_Py_NoneStruct");
    py.type_type = dlsym(scope, "PyType_Type");
    exc = dlsym(scope, "PyExc_KeyboardInterrupt");
    if (!py.none || !py.type_type || !exc) {
        snprintf(err, len, "the loaded libpython lacks _Py_NoneStruct, "
                 "PyType_Type or PyExc_KeyboardInterrupt");
        ret = -1;
        goto out;
    }
    py.keyboard_interrupt = *exc;
    py.is_finalizing = (int (*)(void))dlsym(scope, "Py_IsFinalizing");
    if (!py.is_finalizing) {
        py.is_finalizing = (int (*)(void))dlsym(scope, "_Py_IsFinalizing");
    }
    bound = 1;
out:
    pthread_mutex_unlock(&bind_lock);
    return ret;
}

/* -- messages ------------------------------------------------------------ */

static void note_text(Slave *s, fmi2Status status, const char *category,
                      const char *text)
{
    Message *grown = realloc(s->messages,
                             (s->nmessages + 1) * sizeof(*s->messages));
    Message *m;

    if (!grown) {
        return;
    }
    s->messages = grown;
    m = &s->messages[s->nmessages];
    m->status = status;
    m->category = strdup(category ? category : "");
    m->text = strdup(text ? text : "");
    if (!m->category || !m->text) {
        free(m->category);
        free(m->text);
        return;
    }
    s->nmessages++;
}

static void vnote(Slave *s, fmi2Status status, const char *category,
                  const char *fmt, va_list ap)
{
    char *text;

    if (vasprintf(&text, fmt, ap) >= 0) {
        note_text(s, status, category, text);
        free(text);
    }
}

static void __attribute__((format(printf, 4, 5)))
note(Slave *s, fmi2Status status, const char *category, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vnote(s, status, category, fmt, ap);
    va_end(ap);
}

/* Hand the messages of this call to the master; never with the GIL held. */
static void flush(Slave *s)
{
    Message *messages = s->messages;
    size_t i, n = s->nmessages;

    s->messages = NULL;
    s->nmessages = 0;
    for (i = 0; i < n; i++) {
        if (s->log) {
            s->log(s->ctx, messages[i].status, messages[i].category,
                   messages[i].text);
        }
        free(messages[i].category);
        free(messages[i].text);
    }
    free(messages);
}

/* An argument the master got wrong, refused before any Python runs. */
static fmi2Status __attribute__((format(printf, 2, 3)))
misuse(Slave *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vnote(s, fmi2Error, "logStatusError", fmt, ap);
    va_end(ap);
    flush(s);
    return fmi2Error;
}

/* -- small Python helpers (GIL held) ------------------------------------- */

static void drop(PyObject *o)
{
    if (o) {
        py.Py_DecRef(o);
    }
}

static PyObject *keep(PyObject *o)
{
    py.Py_IncRef(o);
    return o;
}

/* o.name, a new reference; NULL if o is NULL or has no such attribute. */
static PyObject *attr(PyObject *o, const char *name)
{
    return o ? py.PyObject_GetAttrString(o, name) : NULL;
}

/* str(o) as a malloc'd UTF-8 string; never NULL unless out of memory. */
static char *text_of(PyObject *o)
{
    PyObject *str = o ? py.PyObject_Str(o) : NULL;
    const char *utf8 = str ? py.PyUnicode_AsUTF8AndSize(str, NULL) : NULL;
    char *copy;

    if (!utf8) {
        py.PyErr_Clear();
        utf8 = "?";
    }
    copy = strdup(utf8);
    drop(str);
    return copy;
}

static char *attr_text(PyObject *o, const char *name)
{
    PyObject *value = o ? py.PyObject_GetAttrString(o, name) : NULL;
    char *text;

    if (!value) {
        py.PyErr_Clear();
    }
    text = text_of(value);
    drop(value);
    return text;
}

/* " (at file.py:LINE)" for the innermost frame of a traceback, or "". */
static char *location(PyObject *tb)
{
    PyObject *next, *frame, *code;
    char *file, *line, *where = NULL;
    const char *base;

    if (!tb || tb == py.none) {
        return strdup("");
    }
    keep(tb);
    while ((next = py.PyObject_GetAttrString(tb, "tb_next")) &&
           next != py.none) {
        drop(tb);
        tb = next;
    }
    drop(next);
    py.PyErr_Clear();
    frame = py.PyObject_GetAttrString(tb, "tb_frame");
    code = frame ? py.PyObject_GetAttrString(frame, "f_code") : NULL;
    py.PyErr_Clear();
    file = code ? attr_text(code, "co_filename") : NULL;
    line = code ? attr_text(tb, "tb_lineno") : NULL;
    base = file && strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    if (file && line && asprintf(&where, " (at %s:%s)", base, line) < 0) {
        where = NULL;
    }
    free(file);
    free(line);
    drop(code);
    drop(frame);
    drop(tb);
    return where ? where : strdup("");
}

static void drain(Slave *s, PyObject *queue);

/*
 * The pending Python exception as an fmi2Error message: what raised which
 * exception, with what text, where.  A KeyboardInterrupt (the master's
 * Ctrl-C arriving while the slave ran) is handed back to the master's
 * main thread at the end of the call (leave), which would otherwise never
 * see it.
 */
static void report(Slave *s, const char *what)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    char *name, *text, *where;

    py.PyErr_Fetch(&type, &value, &tb);
    if (!type) {
        note(s, fmi2Error, "logStatusError", "%s failed", what);
        return;
    }
    py.PyErr_NormalizeException(&type, &value, &tb);
    drain(s, s->queue);     /* what the slave logged before it raised */
    name = attr_text(type, "__name__");
    text = value ? text_of(value) : strdup("");
    where = location(tb);
    note(s, fmi2Error, "logStatusError", "%s raised %s%s%s%s", what,
         name ? name : "?", text && *text ? ": " : "", text ? text : "",
         where ? where : "");
    if (py.PyErr_GivenExceptionMatches(type, py.keyboard_interrupt)) {
        s->interrupted = 1;
    }
    free(name);
    free(text);
    free(where);
    drop(type);
    drop(value);
    drop(tb);
}

/*
 * Move the messages queued on queue (Fmi2Slave.log's LogMsg objects) to
 * the call's messages, and empty it.
 */
static void drain(Slave *s, PyObject *queue)
{
    ssize_t i, n;

    if (!queue) {
        return;
    }
    n = py.PySequence_Size(queue);
    for (i = 0; i < n; i++) {
        PyObject *msg = py.PySequence_GetItem(queue, i);
        PyObject *status = attr(msg, "status");
        long level = status ? py.PyLong_AsLong(status) : -1;
        PyObject *cat;
        char *category, *text;

        py.PyErr_Clear();
        cat = attr(msg, "category");
        category = cat && cat != py.none ? text_of(cat) : NULL;
        py.PyErr_Clear();
        text = attr_text(msg, "msg");
        if (!msg || !status || level < fmi2OK || level > fmi2Fatal) {
            level = fmi2Error;      /* not a LogMsg: a bug in the slave */
        }
        note_text(s, (fmi2Status)level, category, text);
        free(category);
        free(text);
        drop(cat);
        drop(status);
        drop(msg);
    }
    if (n < 0 || (n > 0 && py.PySequence_DelSlice(queue, 0, n) < 0)) {
        py.PyErr_Clear();
    }
}

/* dict[key] = value, value a new reference (stolen; NULL: pending error). */
static int put(PyObject *dict, const char *key, PyObject *value)
{
    int ret = value ? py.PyDict_SetItemString(dict, key, value) : -1;

    drop(value);
    return ret;
}

/* A tuple of n new references (stolen, NULLs allowed: then NULL). */
static PyObject *pack(int n, ...)
{
    PyObject *tuple = py.PyTuple_New(n);
    int i, ok = tuple != NULL;
    va_list ap;

    va_start(ap, n);
    for (i = 0; i < n; i++) {
        PyObject *item = va_arg(ap, PyObject *);

        if (!item) {
            ok = 0;
        } else if (ok) {
            py.PyTuple_SetItem(tuple, i, item);
        } else {
            drop(item);
        }
    }
    va_end(ap);
    if (!ok) {
        drop(tuple);
        return NULL;
    }
    return tuple;
}

/*
 * target.method(*args), args stolen (NULL: an error is pending, reported
 * as such).  A new reference, or NULL with the exception reported.
 */
static PyObject *call(Slave *s, PyObject *target, const char *method,
                      PyObject *args)
{
    PyObject *fn = NULL, *result = NULL;

    if (args) {
        fn = py.PyObject_GetAttrString(target, method);
    }
    if (fn) {
        result = py.PyObject_CallObject(fn, args);
    }
    if (!result) {
        report(s, method);
    }
    drop(fn);
    drop(args);
    return result;
}

/* -- calls ---------------------------------------------------------------- */

static int python_alive(void)
{
    return py.Py_IsInitialized() && !(py.is_finalizing && py.is_finalizing());
}

/*
 * Take the GIL for one call.  Python that has begun to shut down (a
 * Python master exiting) can no longer run the slave: fmi2Fatal.
 */
static int enter(Slave *s)
{
    if (!python_alive()) {
        note(s, fmi2Fatal, "logStatusFatal", "Python is shutting down: "
             "the instance cannot be used any more");
        flush(s);
        return -1;
    }
    s->gil = py.PyGILState_Ensure();
    return 0;
}

static fmi2Status leave(Slave *s, fmi2Status status)
{
    drain(s, s->queue);
    py.PyGILState_Release(s->gil);
    flush(s);
    /*
     * Only now, so that the master's logger (Python code, in fmpy) is not
     * the one that gets the KeyboardInterrupt: the master's code does,
     * right after the call.
     */
    if (s->interrupted) {
        s->interrupted = 0;
        py.PyErr_SetInterrupt();
    }
    return status;
}

static PyObject *log_queue(PyObject *obj)
{
    PyObject *queue = py.PyObject_GetAttrString(obj, "_get_log_queue");
    PyObject *list = queue ? py.PyObject_CallObject(queue, NULL) : NULL;

    drop(queue);
    if (!list) {
        py.PyErr_Clear();   /* a slave that does not log */
    }
    return list;
}

/* The first line of resources/slavemodule.txt, trimmed; NULL: logged. */
static char *module_name(Slave *s, const char *resources)
{
    char *path, line[256];
    FILE *f;
    size_t n;

    if (asprintf(&path, "%s/slavemodule.txt", resources) < 0) {
        return NULL;
    }
    f = fopen(path, "r");
    if (!f || !fgets(line, sizeof(line), f)) {
        note(s, fmi2Error, "logStatusError", "cannot read %s: %s", path,
             f ? "it is empty" : strerror(errno));
        if (f) {
            fclose(f);
        }
        free(path);
        return NULL;
    }
    fclose(f);
    free(path);
    n = strcspn(line, "\r\n \t");
    line[n] = '\0';
    if (!n) {
        note(s, fmi2Error, "logStatusError",
             "%s/slavemodule.txt names no module", resources);
        return NULL;
    }
    return strdup(line);
}

/* resources first on sys.path, as pythonfmu does, once. */
static int put_first_on_path(Slave *s, const char *resources)
{
    PyObject *sys = py.PyImport_ImportModule("sys");
    PyObject *path = sys ? py.PyObject_GetAttrString(sys, "path") : NULL;
    PyObject *dir = path ? py.PyUnicode_DecodeFSDefault(resources) : NULL;
    PyObject *first = NULL;
    int same, ret = -1;

    if (dir) {
        first = py.PySequence_GetItem(path, 0);
        if (!first) {
            py.PyErr_Clear();   /* an empty sys.path */
        }
        same = first ? py.PyObject_RichCompareBool(first, dir, PY_EQ) : 0;
        if (same == 1 || (same == 0 && py.PyList_Insert(path, 0, dir) == 0)) {
            ret = 0;
        }
    }
    if (ret < 0) {
        report(s, "putting the FMU's resources on sys.path");
    }
    drop(first);
    drop(dir);
    drop(path);
    drop(sys);
    return ret;
}

/*
 * pythonfmu's rule: the class of the module's namespace that has a class
 * named Fmi2Slave deepest in its MRO.  A new reference, or NULL (logged).
 */
static PyObject *model_class(Slave *s, PyObject *module, const char *name)
{
    PyObject *values = py.PyDict_Values(py.PyModule_GetDict(module));
    PyObject *best = NULL;
    ssize_t depth = 0, i, j, n = values ? py.PySequence_Size(values) : -1;

    for (i = 0; i < n; i++) {
        PyObject *value = py.PySequence_GetItem(values, i);
        PyObject *mro = NULL;
        ssize_t m = -1;

        if (value && py.PyObject_IsInstance(value, py.type_type) == 1) {
            mro = py.PyObject_GetAttrString(value, "__mro__");
            m = mro ? py.PySequence_Size(mro) : -1;
        }
        for (j = depth + 1; j < m; j++) {
            PyObject *base = py.PySequence_GetItem(mro, j);
            char *base_name = attr_text(base, "__name__");

            if (base_name && !strcmp(base_name, "Fmi2Slave")) {
                drop(best);
                best = keep(value);
                depth = j;
            }
            free(base_name);
            drop(base);
        }
        py.PyErr_Clear();
        drop(mro);
        drop(value);
    }
    drop(values);
    py.PyErr_Clear();
    if (!best) {
        note(s, fmi2Error, "logStatusError", "module %s has no subclass of "
             "pythonfmu's Fmi2Slave", name);
    }
    return best;
}

static void forget_strings(Slave *s)
{
    size_t i;

    for (i = 0; i < s->nstrings; i++) {
        free(s->strings[i]);
    }
    free(s->strings);
    s->strings = NULL;
    s->nstrings = 0;
}

static void forget_sized(Slave *s)
{
    drop(s->sized_state);
    drop(s->sized_bytes);
    s->sized_state = s->sized_bytes = NULL;
}

Slave *bridge_new(const char *instance_name, const char *resources,
                  int visible, BridgeLog log, void *ctx)
{
    Slave *s = calloc(1, sizeof(*s));
    PyObject *module = NULL, *args = NULL;
    char *modname = NULL, *what = NULL;
    int ok = 0;

    if (!s) {
        return NULL;
    }
    s->log = log;
    s->ctx = ctx;
    if (!resources) {
        note(s, fmi2Error, "logStatusError", "no resource location given: "
             "the slave lives in the FMU's resources");
    } else {
        modname = module_name(s, resources);
    }
    if (!modname) {
        flush(s);
        free(s);
        return NULL;
    }
    if (enter(s) < 0) {
        free(modname);
        free(s);
        return NULL;
    }
    if (put_first_on_path(s, resources) < 0) {
        goto out;
    }
    module = py.PyImport_ImportModule(modname);
    if (!module) {
        if (asprintf(&what, "import %s", modname) >= 0) {
            report(s, what);
        } else {
            report(s, "import");
        }
        goto out;
    }
    s->cls = model_class(s, module, modname);
    if (!s->cls) {
        goto out;
    }
    s->kwargs = py.PyDict_New();
    if (!s->kwargs ||
        put(s->kwargs, "instance_name",
            py.PyUnicode_DecodeUTF8(instance_name, strlen(instance_name),
                                    "replace")) < 0 ||
        put(s->kwargs, "resources",
            py.PyUnicode_DecodeFSDefault(resources)) < 0 ||
        put(s->kwargs, "visible", py.PyBool_FromLong(visible)) < 0 ||
        put(s->kwargs, "logger", keep(py.none)) < 0) {
        report(s, "preparing the constructor's arguments");
        goto out;
    }
    args = py.PyTuple_New(0);
    s->obj = args ? py.PyObject_Call(s->cls, args, s->kwargs) : NULL;
    if (!s->obj) {
        report(s, "the model class");
        goto out;
    }
    s->queue = log_queue(s->obj);
    ok = 1;
out:
    drop(args);
    drop(module);
    free(what);
    free(modname);
    if (!ok) {
        drop(s->obj);
        drop(s->kwargs);
        drop(s->cls);
        s->obj = s->kwargs = s->cls = NULL;
    }
    leave(s, fmi2OK);
    if (!ok) {
        free(s);
        return NULL;
    }
    return s;
}

void bridge_free(Slave *s, int python)
{
    PyObject *queue;

    if (!s) {
        return;
    }
    if (python && python_alive()) {
        s->gil = py.PyGILState_Ensure();
        forget_sized(s);
        queue = s->queue;
        s->queue = NULL;
        drop(s->obj);           /* the slave's __del__ may still log */
        drain(s, queue);
        drop(queue);
        drop(s->kwargs);
        drop(s->cls);
        py.PyGILState_Release(s->gil);
        flush(s);
    }
    forget_strings(s);
    flush(s);
    free(s);
}

fmi2Status bridge_setup(Slave *s, int tolerance_defined, double tolerance,
                        double start, int stop_defined, double stop)
{
    PyObject *result;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->obj, "setup_experiment", pack(3,
        py.PyFloat_FromDouble(start),
        stop_defined ? py.PyFloat_FromDouble(stop) : keep(py.none),
        tolerance_defined ? py.PyFloat_FromDouble(tolerance) : keep(py.none)));
    drop(result);
    return leave(s, result ? fmi2OK : fmi2Error);
}

fmi2Status bridge_debug_logging(Slave *s, int on, size_t n,
                                char *const categories[])
{
    PyObject *fn, *list, *result;
    size_t i;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    fn = py.PyObject_GetAttrString(s->obj, "set_debug_logging");
    if (!fn) {
        py.PyErr_Clear();       /* a slave that does not care */
        return leave(s, fmi2OK);
    }
    drop(fn);
    list = py.PyList_New((ssize_t)n);
    for (i = 0; list && i < n; i++) {
        const char *text = categories[i] ? categories[i] : "";
        PyObject *name = py.PyUnicode_DecodeUTF8(text, strlen(text),
                                                 "replace");

        if (!name || py.PyList_SetItem(list, (ssize_t)i, name) < 0) {
            drop(list);
            list = NULL;
        }
    }
    result = call(s, s->obj, "set_debug_logging",
                  list ? pack(2, py.PyBool_FromLong(on), list) : NULL);
    drop(result);
    return leave(s, result ? fmi2OK : fmi2Error);
}

fmi2Status bridge_hook(Slave *s, const char *method)
{
    PyObject *result;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->obj, method, pack(0));
    drop(result);
    return leave(s, result ? fmi2OK : fmi2Error);
}

fmi2Status bridge_reset(Slave *s)
{
    PyObject *args, *obj, *old, *old_queue;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    args = py.PyTuple_New(0);
    obj = args ? py.PyObject_Call(s->cls, args, s->kwargs) : NULL;
    drop(args);
    if (!obj) {
        report(s, "the model class (fmi2Reset; the instance is unchanged)");
        return leave(s, fmi2Error);
    }
    forget_sized(s);
    old = s->obj;
    old_queue = s->queue;
    s->obj = obj;
    s->queue = log_queue(obj);
    drop(old);                  /* its __del__ may still log */
    drain(s, old_queue);
    drop(old_queue);
    return leave(s, fmi2OK);
}

fmi2Status bridge_do_step(Slave *s, double t, double h)
{
    fmi2Status status = fmi2Error;
    PyObject *result;
    int ok;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->obj, "do_step",
                  pack(2, py.PyFloat_FromDouble(t), py.PyFloat_FromDouble(h)));
    if (result) {
        ok = py.PyObject_IsTrue(result);
        if (ok < 0) {
            report(s, "do_step's answer");
        } else {
            status = ok ? fmi2OK : fmi2Discard;
        }
    }
    drop(result);
    return leave(s, status);
}

static const char *const getters[] = {
    ['r'] = "get_real", ['i'] = "get_integer", ['b'] = "get_boolean",
    ['s'] = "get_string",
};
static const char *const setters[] = {
    ['r'] = "set_real", ['i'] = "set_integer", ['b'] = "set_boolean",
    ['s'] = "set_string",
};

static PyObject *references(const fmi2ValueReference vr[], size_t n)
{
    PyObject *list = py.PyList_New((ssize_t)n);
    size_t i;

    for (i = 0; list && i < n; i++) {
        PyObject *item = py.PyLong_FromUnsignedLong(vr[i]);

        if (!item) {
            drop(list);
            return NULL;
        }
        py.PyList_SetItem(list, (ssize_t)i, item);
    }
    return list;
}

/* One value of a getter's answer into values[i]; -1: reported. */
static int value_out(Slave *s, char kind, const char *method, PyObject *item,
                     void *values, size_t i)
{
    const char *utf8;
    double real;
    long integer;
    int truth;

    switch (kind) {
    case 'r':
        real = py.PyFloat_AsDouble(item);
        if (real == -1.0 && py.PyErr_Occurred()) {
            break;
        }
        ((fmi2Real *)values)[i] = real;
        return 0;
    case 'i':
        integer = py.PyLong_AsLong(item);
        if (integer == -1 && py.PyErr_Occurred()) {
            break;
        }
        if (integer < INT_MIN || integer > INT_MAX) {
            note(s, fmi2Error, "logStatusError", "%s: value %ld of the "
                 "variable at index %zu does not fit an fmi2Integer",
                 method, integer, i);
            return -1;
        }
        ((fmi2Integer *)values)[i] = (fmi2Integer)integer;
        return 0;
    case 'b':
        truth = py.PyObject_IsTrue(item);
        if (truth < 0) {
            break;
        }
        ((fmi2Boolean *)values)[i] = truth ? fmi2True : fmi2False;
        return 0;
    default:
        utf8 = py.PyUnicode_AsUTF8AndSize(item, NULL);
        if (!utf8) {
            break;
        }
        s->strings[i] = strdup(utf8);
        if (!s->strings[i]) {
            note(s, fmi2Error, "logStatusError", "%s: out of memory", method);
            return -1;
        }
        ((fmi2String *)values)[i] = s->strings[i];
        return 0;
    }
    report(s, method);
    return -1;
}

fmi2Status bridge_get(Slave *s, char kind, const fmi2ValueReference vr[],
                      size_t n, void *values)
{
    const char *method = getters[(unsigned char)kind];
    fmi2Status status = fmi2Error;
    PyObject *result;
    ssize_t got;
    size_t i;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    if (kind == 's') {
        /* The strings of the previous fmi2GetString live until now. */
        forget_strings(s);
        s->strings = calloc(n ? n : 1, sizeof(*s->strings));
        if (!s->strings) {
            note(s, fmi2Error, "logStatusError", "%s: out of memory", method);
            return leave(s, fmi2Error);
        }
        s->nstrings = n;
    }
    result = call(s, s->obj, method, pack(1, references(vr, n)));
    if (result) {
        got = py.PySequence_Size(result);
        if (got != (ssize_t)n) {
            py.PyErr_Clear();
            note(s, fmi2Error, "logStatusError", "%s returned %zd values for "
                 "%zu variables", method, got, n);
        } else {
            status = fmi2OK;
        }
        for (i = 0; status == fmi2OK && i < n; i++) {
            PyObject *item = py.PySequence_GetItem(result, (ssize_t)i);

            if (!item) {
                report(s, method);
                status = fmi2Error;
            } else if (value_out(s, kind, method, item, values, i) < 0) {
                status = fmi2Error;
            }
            drop(item);
        }
    }
    drop(result);
    return leave(s, status);
}

static PyObject *value_in(char kind, const void *values, size_t i)
{
    switch (kind) {
    case 'r':
        return py.PyFloat_FromDouble(((const fmi2Real *)values)[i]);
    case 'i':
        return py.PyLong_FromLong(((const fmi2Integer *)values)[i]);
    case 'b':
        return py.PyBool_FromLong(((const fmi2Boolean *)values)[i] != 0);
    default:
        return py.PyUnicode_FromString(((const fmi2String *)values)[i]);
    }
}

fmi2Status bridge_set(Slave *s, char kind, const fmi2ValueReference vr[],
                      size_t n, const void *values)
{
    PyObject *list, *result;
    size_t i;

    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    list = py.PyList_New((ssize_t)n);
    for (i = 0; list && i < n; i++) {
        PyObject *item = value_in(kind, values, i);

        if (!item) {
            drop(list);
            list = NULL;
        } else {
            py.PyList_SetItem(list, (ssize_t)i, item);
        }
    }
    if (!list) {
        report(s, setters[(unsigned char)kind]);
        return leave(s, fmi2Error);
    }
    result = call(s, s->obj, setters[(unsigned char)kind],
                  pack(2, references(vr, n), list));
    drop(result);
    return leave(s, result ? fmi2OK : fmi2Error);
}

/* -- FMU states: the slave's own objects, handed out as fmi2FMUstate ------ */

fmi2Status bridge_get_state(Slave *s, fmi2FMUstate *state)
{
    PyObject *result;

    if (!state) {
        return misuse(s, "fmi2GetFMUstate: no place for the state (NULL)");
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->obj, "_get_fmu_state", pack(0));
    if (result) {
        /* FMI 2.0: a state given in *state is to be overwritten. */
        drop(*state);
        *state = result;
    }
    return leave(s, result ? fmi2OK : fmi2Error);
}

fmi2Status bridge_set_state(Slave *s, fmi2FMUstate state)
{
    PyObject *result;

    if (!state) {
        return misuse(s, "fmi2SetFMUstate: no state (NULL)");
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->obj, "_set_fmu_state", pack(1, keep(state)));
    drop(result);
    return leave(s, result ? fmi2OK : fmi2Error);
}

fmi2Status bridge_free_state(Slave *s, fmi2FMUstate *state)
{
    if (!state || !*state) {
        return fmi2OK;      /* FMI 2.0: a NULL state is ignored */
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    if (s->sized_state == *state) {
        forget_sized(s);
    }
    drop(*state);
    *state = NULL;
    return leave(s, fmi2OK);
}

/* The class's _fmu_state_to_bytes(state), remembered for the next call. */
static int to_bytes(Slave *s, PyObject *state, char **data, ssize_t *len)
{
    PyObject *bytes;

    if (s->sized_state != state) {
        forget_sized(s);
        bytes = call(s, s->cls, "_fmu_state_to_bytes", pack(1, keep(state)));
        if (!bytes) {
            return -1;
        }
        s->sized_state = keep(state);
        s->sized_bytes = bytes;
    }
    if (py.PyBytes_AsStringAndSize(s->sized_bytes, data, len) < 0) {
        report(s, "_fmu_state_to_bytes's answer");
        forget_sized(s);
        return -1;
    }
    return 0;
}

fmi2Status bridge_state_size(Slave *s, fmi2FMUstate state, size_t *size)
{
    fmi2Status status = fmi2Error;
    ssize_t len;
    char *data;

    if (!state || !size) {
        return misuse(s, "fmi2SerializedFMUstateSize: %s is NULL",
                      state ? "size" : "the state");
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    forget_sized(s);    /* the state may have changed since */
    if (to_bytes(s, state, &data, &len) == 0) {
        *size = (size_t)len;
        status = fmi2OK;
    }
    return leave(s, status);
}

fmi2Status bridge_serialize(Slave *s, fmi2FMUstate state, fmi2Byte bytes[],
                            size_t size)
{
    fmi2Status status = fmi2Error;
    ssize_t len;
    char *data;

    if (!state || (size && !bytes)) {
        return misuse(s, "fmi2SerializeFMUstate: %s is NULL",
                      state ? "the buffer" : "the state");
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    if (to_bytes(s, state, &data, &len) == 0) {
        if ((size_t)len != size) {
            note(s, fmi2Error, "logStatusError", "fmi2SerializeFMUstate: "
                 "the state takes %zd bytes, not %zu (as "
                 "fmi2SerializedFMUstateSize says)", len, size);
        } else {
            memcpy(bytes, data, size);
            status = fmi2OK;
        }
    }
    forget_sized(s);
    return leave(s, status);
}

fmi2Status bridge_deserialize(Slave *s, const fmi2Byte bytes[], size_t size,
                              fmi2FMUstate *state)
{
    PyObject *result;

    if (!state || (size && !bytes)) {
        return misuse(s, "fmi2DeSerializeFMUstate: %s is NULL",
                      state ? "the buffer" : "the place for the state");
    }
    if (enter(s) < 0) {
        return fmi2Fatal;
    }
    result = call(s, s->cls, "_fmu_state_from_bytes",
                  pack(1, py.PyBytes_FromStringAndSize(bytes, (ssize_t)size)));
    if (result) {
        *state = result;
    }
    return leave(s, result ? fmi2OK : fmi2Error);
}

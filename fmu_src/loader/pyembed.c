/*
 * pyembed: make sure the process has a running Python for the slave.
 *
 * Copyright (c) 2026 qemu-fmu contributors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The FMU's slave is Python code (bridge.c calls it).  Python masters
 * (fmpy, libcosimpy) already run an interpreter whose symbols are global:
 * that one is used.  A C or C++ master has none, and loads our library
 * RTLD_LOCAL, so the libpython we load must be opened RTLD_GLOBAL:
 * CPython's own extension modules (_ctypes, ...) resolve the
 * interpreter's symbols globally.
 *
 * The interpreter we start is told where its own standard library is, from
 * the path of the libpython actually loaded, because without a home it
 * looks for `python3` on PATH and may pick another installation's stdlib.
 * It runs isolated (no PYTHONPATH, PYTHONHOME, user site, site-packages),
 * so nothing of the host's environment shadows the packages the FMU
 * carries, and without signal handlers, which belong to the host.
 *
 * Only the API that every CPython 3.10 to 3.13 exports is used, looked up
 * with dlsym: we are built without any Python headers.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "loader.h"

/* Newest first: the first one the dynamic linker finds is used. */
static const char *const libpython_names[] = {
    "libpython3.13.so.1.0",
    "libpython3.12.so.1.0",
    "libpython3.11.so.1.0",
    "libpython3.10.so.1.0",
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int ready;
static void *api_scope;     /* where the running Python's API is */

static void say(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/*
 * The prefix whose lib/pythonX.Y holds this libpython's standard library:
 * /usr for Debian's /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0, the
 * installation directory for a pyenv or /opt build.
 */
static int find_home(const char *library, const char *version,
                     char *home, size_t len)
{
    char path[PATH_MAX], probe[PATH_MAX + 64];
    char *slash;
    int up;

    if (!realpath(library, path)) {
        return -1;
    }
    for (up = 0; up < 4; up++) {
        slash = strrchr(path, '/');
        if (!slash) {
            return -1;
        }
        *slash = '\0';
        snprintf(probe, sizeof(probe), "%s/lib/python%s/encodings/__init__.py",
                 path, version);
        if (access(probe, R_OK) == 0) {
            snprintf(probe, sizeof(probe), "%s/lib/python%s/os.py",
                     path, version);
            if (access(probe, R_OK) == 0) {
                snprintf(home, len, "%s", path[0] ? path : "/");
                return 0;
            }
        }
    }
    return -1;
}

/* Open one libpython globally; NULL with the reason in err. */
static void *open_libpython(const char *name, char *err, size_t len)
{
    void *handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL);

    if (!handle) {
        say(err, len, "%s", dlerror());
    } else if (!dlsym(handle, "Py_InitializeEx")) {
        say(err, len, "%s is not a Python library", name);
        dlclose(handle);
        handle = NULL;
    }
    return handle;
}

static void *load_libpython(char *err, size_t len)
{
    const char *chosen = getenv("QEMU_FMU_LIBPYTHON");
    char tried[1024] = "", why[512];
    void *handle;
    size_t i;

    if (chosen && *chosen) {
        handle = open_libpython(chosen, why, sizeof(why));
        if (!handle) {
            say(err, len, "QEMU_FMU_LIBPYTHON=%s cannot be used: %s",
                chosen, why);
        }
        return handle;
    }
    for (i = 0; i < sizeof(libpython_names) / sizeof(*libpython_names); i++) {
        handle = open_libpython(libpython_names[i], why, sizeof(why));
        if (handle) {
            return handle;
        }
        snprintf(tried + strlen(tried), sizeof(tried) - strlen(tried),
                 "%s%s", i ? ", " : "", libpython_names[i]);
    }
    say(err, len, "this process has no Python and none of %s could be "
        "loaded. Install one (Debian/Ubuntu: apt-get install libpython3.11) "
        "or set QEMU_FMU_LIBPYTHON to the path of a libpython3.X.so.1.0 "
        "(3.10 or newer)", tried);
    return NULL;
}

#define PY_SYMBOLS(X) \
    X(int, Py_IsInitialized, (void)) \
    X(void, Py_InitializeEx, (int)) \
    X(const char *, Py_GetVersion, (void)) \
    X(void, Py_SetPythonHome, (const wchar_t *)) \
    X(wchar_t *, Py_DecodeLocale, (const char *, size_t *)) \
    X(void *, PyEval_SaveThread, (void))

typedef struct PyApi {
#define FIELD(ret, name, args) ret (*name) args;
    PY_SYMBOLS(FIELD)
#undef FIELD
} PyApi;

static int bind_api(void *scope, PyApi *api, char *err, size_t len)
{
#define BIND(ret, name, args) \
    api->name = (ret (*) args)dlsym(scope, #name); \
    if (!api->name) { \
        say(err, len, "the loaded libpython lacks %s", #name); \
        return -1; \
    }
    PY_SYMBOLS(BIND)
#undef BIND
    return 0;
}

static void set_flag(void *scope, const char *name)
{
    int *flag = dlsym(scope, name);

    if (flag) {
        *flag = 1;
    }
}

/* Start an interpreter from the libpython reachable through scope. */
static int start_python(void *scope, char *err, size_t len)
{
    char home[PATH_MAX], version[16];
    size_t major, minor;
    const char *v;
    wchar_t *whome;
    Dl_info where;
    PyApi api;

    if (bind_api(scope, &api, err, len) < 0) {
        return -1;
    }
    if (!dladdr((void *)api.Py_InitializeEx, &where) || !where.dli_fname) {
        say(err, len, "cannot tell which file the libpython was loaded from");
        return -1;
    }
    /* "3.11.2 (main, ...": the major.minor part names lib/pythonX.Y. */
    v = api.Py_GetVersion();
    major = strspn(v, "0123456789");
    minor = v[major] == '.' ? strspn(v + major + 1, "0123456789") : 0;
    if (!major || !minor || major + 1 + minor >= sizeof(version)) {
        say(err, len, "cannot read the version of %s", where.dli_fname);
        return -1;
    }
    snprintf(version, sizeof(version), "%.*s", (int)(major + 1 + minor), v);
    if (find_home(where.dli_fname, version, home, sizeof(home)) < 0) {
        say(err, len, "%s (Python %s) is there but its standard library "
            "(lib/python%s) is not next to it; install the standard library "
            "of that Python (Debian/Ubuntu: apt-get install "
            "libpython%s-stdlib) or point QEMU_FMU_LIBPYTHON at another "
            "libpython", where.dli_fname, version, version, version);
        return -1;
    }
    whome = api.Py_DecodeLocale(home, NULL);
    if (!whome) {
        say(err, len, "cannot decode the Python home %s", home);
        return -1;
    }
    api.Py_SetPythonHome(whome);    /* kept: Python keeps the pointer */
    set_flag(scope, "Py_IsolatedFlag");
    set_flag(scope, "Py_IgnoreEnvironmentFlag");
    set_flag(scope, "Py_NoUserSiteDirectory");
    set_flag(scope, "Py_NoSiteFlag");
    set_flag(scope, "Py_DontWriteBytecodeFlag");
    api.Py_InitializeEx(0);
    if (!api.Py_IsInitialized()) {
        say(err, len, "Python %s from %s did not start", version,
            where.dli_fname);
        return -1;
    }
    /*
     * Hand the GIL back: bridge.c takes it per call with PyGILState_Ensure,
     * from whatever thread the master calls on.  The interpreter is never
     * finalized (nothing here runs at exit or unload); it ends with the
     * process.
     */
    api.PyEval_SaveThread();
    return 0;
}

int pyembed_ensure(void **scope, char *err, size_t len)
{
    int (*is_initialized)(void);
    void *handle = RTLD_DEFAULT;
    int ret = 0;

    pthread_mutex_lock(&lock);
    if (ready) {
        goto out;
    }
    is_initialized = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    if (is_initialized && is_initialized()) {
        /* A Python master, or our own Python from before a reload. */
        api_scope = RTLD_DEFAULT;
        ready = 1;
        goto out;
    }
    if (is_initialized) {
        /* libpython is global (LD_PRELOAD, another plugin) but not running. */
        ret = start_python(RTLD_DEFAULT, err, len);
    } else {
        handle = load_libpython(err, len);
        ret = handle ? start_python(handle, err, len) : -1;
    }
    /* Never dlclose'd: the interpreter lives on until the process ends. */
    api_scope = handle;
    ready = ret == 0;
out:
    *scope = api_scope;
    pthread_mutex_unlock(&lock);
    return ret;
}

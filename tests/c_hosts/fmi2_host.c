/*
 * fmi2_host: a minimal FMI 2.0 co-simulation master in C, for the tests.
 *
 * It loads FMU binaries the way FMI Library (OpenModelica's tools) does,
 * dlopen(RTLD_NOW | RTLD_LOCAL), starts no Python of its own, and formats
 * log messages with vfprintf as C masters do.  It runs a script of one
 * command per line (argv[1], or stdin) and prints one result line each:
 *
 *   load ID DIR MODEL GUID   bind DIR/binaries/linux64/MODEL.so as ID
 *   inst ID [logging [URI]]  fmi2Instantiate (resources of DIR, or at URI)
 *   setup ID T0 | enter ID | exit ID | term ID | reset ID | free ID
 *   set ID r|i|b|s VR VALUE  get ID r|i|b|s VR
 *   step ID T H              run ID T0 H N  (N steps; stops at the first
 *                                            status that is not fmi2OK)
 *   children -               how many QEMU children this process has
 *   null ID VR               fmi2SetReal, GetReal, SetString, GetString
 *                            with NULL arrays: the four statuses
 *   save ID | restore ID | freestate ID   fmi2Get/Set/FreeFMUstate, one
 *                                         state per ID
 *   serialize ID                          the ID's state to bytes kept
 *   deserialize ID [FROM]                 bytes (FROM's, else ID's) to the
 *                                         ID's state
 *   wire FROM VR TO VR       a String connection: FROM's output to TO's input
 *   cosim - T0 H N           N Jacobi steps of every instance, in load
 *                            order, then every wire (stops at the first
 *                            status that is not fmi2OK)
 *
 * Two IDs may name two FMUs or two instances of one.  Exit status 0 when
 * the script ran to its end, whatever the FMU answered.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../fmu_src/loader/fmi2.h"
#include "host_log.h"

#define MAX_SLOTS 8

typedef struct Slot {
    char id[32];
    char dir[4096];
    char guid[256];
    void *lib;
    fmi2Component c;
    fmi2FMUstate state;
    fmi2Byte *blob;
    size_t blob_size;
#define FIELD(name, ret, params) ret (*name) params;
    FMI2_FORWARDED(FIELD)
#undef FIELD
} Slot;

static Slot slots[MAX_SLOTS];

#define MAX_WIRES 32

typedef struct Wire {
    Slot *from, *to;
    fmi2ValueReference out, in;
} Wire;

static Wire wires[MAX_WIRES];
static int nwires;

static int qemu_children(void)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    char path[300], comm[64];
    int ppid, count = 0;
    FILE *f;

    while (proc && (e = readdir(proc))) {
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (!f) {
            continue;
        }
        if (fscanf(f, "%*d (%63[^)]) %*c %d", comm, &ppid) == 2 &&
            ppid == getpid() && !strncmp(comm, "qemu-system", 11)) {
            count++;
        }
        fclose(f);
    }
    if (proc) {
        closedir(proc);
    }
    return count;
}

static Slot *slot(const char *id, int create)
{
    int i;

    for (i = 0; i < MAX_SLOTS; i++) {
        if (!strcmp(slots[i].id, id)) {
            return &slots[i];
        }
    }
    for (i = 0; create && i < MAX_SLOTS; i++) {
        if (!slots[i].id[0]) {
            snprintf(slots[i].id, sizeof(slots[i].id), "%s", id);
            return &slots[i];
        }
    }
    fprintf(stderr, "fmi2_host: no slot %s\n", id);
    exit(2);
}

static int load(Slot *s, const char *dir, const char *model)
{
    char path[8192];

    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    snprintf(path, sizeof(path), "%s/binaries/linux64/%s.so", dir, model);
    s->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!s->lib) {
        printf("load %s failed: %s\n", s->id, dlerror());
        return -1;
    }
#define BIND(name, ret, params) \
    s->name = (ret (*) params)dlsym(s->lib, #name); \
    if (!s->name) { \
        printf("load %s failed: no %s\n", s->id, #name); \
        return -1; \
    }
    FMI2_FORWARDED(BIND)
#undef BIND
    printf("load %s ok\n", s->id);
    return 0;
}

static void get(Slot *s, char kind, fmi2ValueReference vr)
{
    fmi2Status st;

    switch (kind) {
    case 'r': { fmi2Real v = 0; st = s->fmi2GetReal(s->c, &vr, 1, &v);
                printf("get %s %u -> %d %.17g\n", s->id, vr, st, v); break; }
    case 'i': { fmi2Integer v = 0; st = s->fmi2GetInteger(s->c, &vr, 1, &v);
                printf("get %s %u -> %d %d\n", s->id, vr, st, v); break; }
    case 'b': { fmi2Boolean v = 0; st = s->fmi2GetBoolean(s->c, &vr, 1, &v);
                printf("get %s %u -> %d %d\n", s->id, vr, st, v); break; }
    default: { fmi2String v = NULL; st = s->fmi2GetString(s->c, &vr, 1, &v);
               printf("get %s %u -> %d %s\n", s->id, vr, st, v ? v : "(null)");
               break; }
    }
}

static void set(Slot *s, char kind, fmi2ValueReference vr, const char *text)
{
    fmi2Status st;

    switch (kind) {
    case 'r': { fmi2Real v = strtod(text, NULL);
                st = s->fmi2SetReal(s->c, &vr, 1, &v); break; }
    case 'i': { fmi2Integer v = atoi(text);
                st = s->fmi2SetInteger(s->c, &vr, 1, &v); break; }
    case 'b': { fmi2Boolean v = atoi(text);
                st = s->fmi2SetBoolean(s->c, &vr, 1, &v); break; }
    default: st = s->fmi2SetString(s->c, &vr, 1, &text); break;
    }
    printf("set %s %u -> %d\n", s->id, vr, st);
}

/* The text after the first n words and the single space that follows. */
static const char *after(const char *line, int n)
{
    while (n-- > 0) {
        line += strspn(line, " ");
        line += strcspn(line, " ");
    }
    return *line ? line + 1 : line;
}

static void run(Slot *s, double t0, double h, long n)
{
    fmi2Status st = fmi2OK;
    long k;

    for (k = 0; k < n && st == fmi2OK; k++) {
        st = s->fmi2DoStep(s->c, t0 + k * h, h, fmi2True);
    }
    printf("run %s steps=%ld -> %d\n", s->id, k, st);
}

/*
 * A fixed-step Jacobi master over String connections, as a C master of a
 * network system does it: every instance steps from t to t + h, then each
 * output goes to its input (copied: an fmi2GetString result lives only
 * until the next call on that instance).
 */
static void cosim(double t0, double h, long n)
{
    fmi2Status st = fmi2OK;
    const char *who = "";
    long k;
    int i;

    for (k = 0; k < n && st == fmi2OK; k++) {
        char *values[MAX_WIRES];

        for (i = 0; i < MAX_SLOTS && st == fmi2OK; i++) {
            if (slots[i].c) {
                st = slots[i].fmi2DoStep(slots[i].c, t0 + k * h, h, fmi2True);
                who = slots[i].id;
            }
        }
        for (i = 0; i < nwires && st == fmi2OK; i++) {
            fmi2String v = NULL;

            st = wires[i].from->fmi2GetString(wires[i].from->c, &wires[i].out,
                                              1, &v);
            values[i] = strdup(v ? v : "");
            who = wires[i].from->id;
        }
        for (i = 0; i < nwires && st == fmi2OK; i++) {
            fmi2String v = values[i];

            st = wires[i].to->fmi2SetString(wires[i].to->c, &wires[i].in, 1,
                                            &v);
            who = wires[i].to->id;
        }
        if (st == fmi2OK) {
            i = nwires;
        }
        while (i-- > 0) {
            free(values[i]);
        }
    }
    printf("cosim steps=%ld -> %d%s%s\n", k, st, st ? " at " : "",
           st ? who : "");
}

static void state_cmd(Slot *s, const char *cmd, const Slot *from)
{
    fmi2Status st;

    if (!strcmp(cmd, "save")) {
        st = s->fmi2GetFMUstate(s->c, &s->state);
    } else if (!strcmp(cmd, "restore")) {
        st = s->fmi2SetFMUstate(s->c, s->state);
    } else if (!strcmp(cmd, "freestate")) {
        st = s->fmi2FreeFMUstate(s->c, &s->state);
        s->state = NULL;
    } else if (!strcmp(cmd, "serialize")) {
        st = s->fmi2SerializedFMUstateSize(s->c, s->state, &s->blob_size);
        free(s->blob);
        s->blob = malloc(s->blob_size ? s->blob_size : 1);
        if (st == fmi2OK) {
            st = s->fmi2SerializeFMUstate(s->c, s->state, s->blob,
                                          s->blob_size);
        }
        printf("serialize %s %zu bytes -> %d\n", s->id, s->blob_size, st);
        return;
    } else {
        st = s->fmi2DeSerializeFMUstate(s->c, from->blob, from->blob_size,
                                        &s->state);
    }
    printf("%s %s -> %d\n", cmd, s->id, st);
}

int main(int argc, char **argv)
{
    FILE *in = argc > 1 ? fopen(argv[1], "r") : stdin;
    char cmd[16], id[32], a[4096], b[256], c[256], d[4096];
    char resources[8300];
    char *line = NULL;
    size_t size = 0;
    int n;

    if (!in) {
        perror(argv[1]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (getline(&line, &size, in) >= 0) {
        line[strcspn(line, "\n")] = '\0';
        a[0] = b[0] = c[0] = d[0] = '\0';
        n = sscanf(line, "%15s %31s %4095s %255s %255s %4095[^\n]",
                   cmd, id, a, b, c, d);
        if (n < 2 || cmd[0] == '#') {
            continue;
        }
        if (!strcmp(cmd, "children")) {
            printf("children %d\n", qemu_children());
            continue;
        }
        if (!strcmp(cmd, "cosim")) {
            cosim(strtod(a, NULL), strtod(b, NULL), atol(c));
            continue;
        }
        if (!strcmp(cmd, "wire")) {
            if (nwires == MAX_WIRES) {
                fprintf(stderr, "fmi2_host: more than %d wires\n", MAX_WIRES);
                return 2;
            }
            wires[nwires++] = (Wire){ slot(id, 0), slot(b, 0),
                                      (fmi2ValueReference)atol(a),
                                      (fmi2ValueReference)atol(c) };
            printf("wire %s %s -> %s %s\n", id, a, b, c);
            continue;
        }
        Slot *s = slot(id, !strcmp(cmd, "load"));
        if (!strcmp(cmd, "load")) {
            snprintf(s->guid, sizeof(s->guid), "%s", c);
            if (load(s, a, b) < 0) {
                return 1;
            }
        } else if (!strcmp(cmd, "inst")) {
            if (b[0]) {
                snprintf(resources, sizeof(resources), "%s", b);
            } else {
                snprintf(resources, sizeof(resources), "file://%s/resources",
                         s->dir);
            }
            s->c = s->fmi2Instantiate(s->id, fmi2CoSimulation, s->guid,
                                      resources, &callbacks, fmi2False,
                                      atoi(a));
            printf("inst %s -> %s\n", s->id, s->c ? "ok" : "NULL");
        } else if (!strcmp(cmd, "setup")) {
            printf("setup %s -> %d\n", s->id, s->fmi2SetupExperiment(
                   s->c, fmi2False, 0, strtod(a, NULL), fmi2False, 0));
        } else if (!strcmp(cmd, "enter")) {
            printf("enter %s -> %d\n", s->id,
                   s->fmi2EnterInitializationMode(s->c));
        } else if (!strcmp(cmd, "exit")) {
            printf("exit %s -> %d\n", s->id,
                   s->fmi2ExitInitializationMode(s->c));
        } else if (!strcmp(cmd, "term")) {
            printf("term %s -> %d\n", s->id, s->fmi2Terminate(s->c));
        } else if (!strcmp(cmd, "reset")) {
            printf("reset %s -> %d\n", s->id, s->fmi2Reset(s->c));
        } else if (!strcmp(cmd, "free")) {
            s->fmi2FreeInstance(s->c);
            s->c = NULL;
            printf("free %s\n", s->id);
        } else if (!strcmp(cmd, "set")) {
            set(s, a[0], (fmi2ValueReference)atol(b), after(line, 4));
        } else if (!strcmp(cmd, "get")) {
            get(s, a[0], (fmi2ValueReference)atol(b));
        } else if (!strcmp(cmd, "step")) {
            printf("step %s -> %d\n", s->id, s->fmi2DoStep(
                   s->c, strtod(a, NULL), strtod(b, NULL), fmi2True));
        } else if (!strcmp(cmd, "null")) {
            fmi2ValueReference vr = (fmi2ValueReference)atol(a);

            printf("null %s -> %d %d %d %d\n", s->id,
                   s->fmi2SetReal(s->c, NULL, 1, NULL),
                   s->fmi2GetReal(s->c, &vr, 1, NULL),
                   s->fmi2SetString(s->c, &vr, 1, NULL),
                   s->fmi2GetString(s->c, &vr, 1, NULL));
        } else if (!strcmp(cmd, "run")) {
            run(s, strtod(a, NULL), strtod(b, NULL), atol(c));
        } else if (!strcmp(cmd, "save") || !strcmp(cmd, "restore") ||
                   !strcmp(cmd, "freestate") || !strcmp(cmd, "serialize") ||
                   !strcmp(cmd, "deserialize")) {
            state_cmd(s, cmd, a[0] ? slot(a, 0) : s);
        } else {
            fprintf(stderr, "fmi2_host: unknown command %s\n", cmd);
            return 2;
        }
    }
    free(line);
    return 0;
}

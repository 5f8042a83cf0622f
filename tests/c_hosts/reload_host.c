/*
 * reload_host: load an FMU's binary, run an instance, free it and unload
 * the binary, several times in one process, as FMI Library hosts do when
 * they import an FMU again.  For tests/test_memory_safety.py.
 *
 *   reload_host DIR MODEL GUID ROUNDS
 *
 * Prints "round N status S" per round (S: the worst status of its calls)
 * and exits 0 when every round could load and instantiate.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../fmu_src/loader/fmi2.h"
#include "host_log.h"

typedef struct Api {
#define FIELD(name, ret, params) ret (*name) params;
    FMI2_FORWARDED(FIELD)
#undef FIELD
} Api;

static int worst(int a, int b)
{
    return a > b ? a : b;
}

int main(int argc, char **argv)
{
    char lib[8192], resources[8192];
    int round, rounds, k, st;
    fmi2Component c;
    void *handle;
    Api api;

    if (argc != 5) {
        fprintf(stderr, "usage: reload_host DIR MODEL GUID ROUNDS\n");
        return 2;
    }
    snprintf(lib, sizeof(lib), "%s/binaries/linux64/%s.so", argv[1], argv[2]);
    snprintf(resources, sizeof(resources), "file://%s/resources", argv[1]);
    rounds = atoi(argv[4]);
    for (round = 0; round < rounds; round++) {
        handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            printf("round %d: %s\n", round, dlerror());
            return 1;
        }
#define BIND(name, ret, params) \
        api.name = (ret (*) params)dlsym(handle, #name); \
        if (!api.name) { \
            printf("round %d: no %s\n", round, #name); \
            return 1; \
        }
        FMI2_FORWARDED(BIND)
#undef BIND
        c = api.fmi2Instantiate("R", fmi2CoSimulation, argv[3], resources,
                                &callbacks, fmi2False, fmi2True);
        if (!c) {
            printf("round %d: fmi2Instantiate failed\n", round);
            return 1;
        }
        st = api.fmi2SetupExperiment(c, fmi2False, 0, 0, fmi2False, 0);
        st = worst(st, api.fmi2EnterInitializationMode(c));
        st = worst(st, api.fmi2ExitInitializationMode(c));
        for (k = 0; k < 10; k++) {
            st = worst(st, api.fmi2DoStep(c, k * 0.001, 0.001, fmi2True));
        }
        st = worst(st, api.fmi2Terminate(c));
        api.fmi2FreeInstance(c);
        printf("round %d status %d\n", round, st);
        dlclose(handle);
    }
    return 0;
}

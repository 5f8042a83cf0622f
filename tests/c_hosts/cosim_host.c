/*
 * cosim_host: run one FMU in libcosim through its C API, for the tests.
 *
 * libcosim (Open Simulation Platform, C++ over FMI Library) is a real
 * third-party master; its C API, libcosimc.so, ships in the libcosimpy
 * wheel.  No Python is started by this program: if the FMU runs, its
 * binary brought its own.
 *
 *   cosim_host FMU STOP_S STEP_S VR...   prints "VR=value" for each Real VR
 *
 * The few declarations below follow libcosimc's include/cosim.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int64_t cosim_time_point;
typedef int64_t cosim_duration;
typedef uint32_t cosim_value_reference;
typedef int cosim_slave_index;
typedef struct cosim_execution_s cosim_execution;
typedef struct cosim_slave_s cosim_slave;
typedef struct cosim_observer_s cosim_observer;

cosim_execution *cosim_execution_create(cosim_time_point start,
                                        cosim_duration step);
int cosim_execution_destroy(cosim_execution *execution);
cosim_slave *cosim_local_slave_create(const char *fmu_path,
                                      const char *instance_name);
int cosim_local_slave_destroy(cosim_slave *slave);
cosim_slave_index cosim_execution_add_slave(cosim_execution *execution,
                                            cosim_slave *slave);
int cosim_execution_simulate_until(cosim_execution *execution,
                                   cosim_time_point target);
cosim_observer *cosim_last_value_observer_create(void);
int cosim_observer_destroy(cosim_observer *observer);
int cosim_execution_add_observer(cosim_execution *execution,
                                 cosim_observer *observer);
int cosim_observer_slave_get_real(cosim_observer *observer,
                                  cosim_slave_index slave,
                                  const cosim_value_reference variables[],
                                  size_t nv, double values[]);
const char *cosim_last_error_message(void);

static int fail(const char *what)
{
    fprintf(stderr, "cosim_host: %s: %s\n", what, cosim_last_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    cosim_execution *execution;
    cosim_observer *observer;
    cosim_slave *slave;
    cosim_slave_index index;
    int i;

    if (argc < 5) {
        fprintf(stderr, "usage: cosim_host FMU STOP_S STEP_S VR...\n");
        return 2;
    }
    execution = cosim_execution_create(0, (cosim_duration)(atof(argv[3]) * 1e9));
    slave = cosim_local_slave_create(argv[1], "qemu");
    if (!execution || !slave) {
        return fail("create");
    }
    index = cosim_execution_add_slave(execution, slave);
    observer = cosim_last_value_observer_create();
    if (index < 0 || !observer ||
        cosim_execution_add_observer(execution, observer) < 0) {
        return fail("add");
    }
    if (cosim_execution_simulate_until(
            execution, (cosim_time_point)(atof(argv[2]) * 1e9)) < 0) {
        return fail("simulate");
    }
    for (i = 4; i < argc; i++) {
        cosim_value_reference vr = (cosim_value_reference)atol(argv[i]);
        double value;

        if (cosim_observer_slave_get_real(observer, index, &vr, 1, &value) < 0) {
            return fail("observe");
        }
        printf("%u=%.17g\n", vr, value);
    }
    cosim_execution_destroy(execution);
    cosim_observer_destroy(observer);
    cosim_local_slave_destroy(slave);
    return 0;
}

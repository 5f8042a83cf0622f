/*
 * The FMI 2.0 co-simulation interface, as the loader shim needs it.
 *
 * Written from the FMI 2.0.x standard (fmi-standard.org): the types of
 * fmi2TypesPlatform.h, the callback structure and the function types of
 * fmi2FunctionTypes.h.  The shim exports every function of the standard.
 */
#ifndef QEMUFMU_FMI2_H
#define QEMUFMU_FMI2_H

#include <stddef.h>

#define fmi2TypesPlatform "default"
#define fmi2Version "2.0"

typedef void *fmi2Component;
typedef void *fmi2ComponentEnvironment;
typedef void *fmi2FMUstate;
typedef unsigned int fmi2ValueReference;
typedef double fmi2Real;
typedef int fmi2Integer;
typedef int fmi2Boolean;
typedef char fmi2Char;
typedef const fmi2Char *fmi2String;
typedef char fmi2Byte;

#define fmi2True 1
#define fmi2False 0

typedef enum {
    fmi2OK, fmi2Warning, fmi2Discard, fmi2Error, fmi2Fatal, fmi2Pending
} fmi2Status;

typedef enum { fmi2ModelExchange, fmi2CoSimulation } fmi2Type;

typedef enum {
    fmi2DoStepStatus, fmi2PendingStatus, fmi2LastSuccessfulTime, fmi2Terminated
} fmi2StatusKind;

typedef void (*fmi2CallbackLogger)(fmi2ComponentEnvironment, fmi2String,
                                   fmi2Status, fmi2String, fmi2String, ...);
typedef void *(*fmi2CallbackAllocateMemory)(size_t, size_t);
typedef void (*fmi2CallbackFreeMemory)(void *);
typedef void (*fmi2StepFinished)(fmi2ComponentEnvironment, fmi2Status);

typedef struct {
    fmi2CallbackLogger logger;
    fmi2CallbackAllocateMemory allocateMemory;
    fmi2CallbackFreeMemory freeMemory;
    fmi2StepFinished stepFinished;
    fmi2ComponentEnvironment componentEnvironment;
} fmi2CallbackFunctions;

/*
 * Every function after fmi2GetVersion, in one table: a host binds them all
 * with it (tests/c_hosts/fmi2_host.c does).
 */
#define FMI2_FORWARDED(X) \
    X(fmi2Instantiate, fmi2Component, (fmi2String, fmi2Type, fmi2String, \
        fmi2String, const fmi2CallbackFunctions *, fmi2Boolean, fmi2Boolean)) \
    X(fmi2FreeInstance, void, (fmi2Component)) \
    X(fmi2SetDebugLogging, fmi2Status, (fmi2Component, fmi2Boolean, size_t, \
        const fmi2String[])) \
    X(fmi2SetupExperiment, fmi2Status, (fmi2Component, fmi2Boolean, fmi2Real, \
        fmi2Real, fmi2Boolean, fmi2Real)) \
    X(fmi2EnterInitializationMode, fmi2Status, (fmi2Component)) \
    X(fmi2ExitInitializationMode, fmi2Status, (fmi2Component)) \
    X(fmi2Terminate, fmi2Status, (fmi2Component)) \
    X(fmi2Reset, fmi2Status, (fmi2Component)) \
    X(fmi2GetReal, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, fmi2Real[])) \
    X(fmi2GetInteger, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, fmi2Integer[])) \
    X(fmi2GetBoolean, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, fmi2Boolean[])) \
    X(fmi2GetString, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, fmi2String[])) \
    X(fmi2SetReal, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, const fmi2Real[])) \
    X(fmi2SetInteger, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, const fmi2Integer[])) \
    X(fmi2SetBoolean, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, const fmi2Boolean[])) \
    X(fmi2SetString, fmi2Status, (fmi2Component, const fmi2ValueReference[], \
        size_t, const fmi2String[])) \
    X(fmi2GetFMUstate, fmi2Status, (fmi2Component, fmi2FMUstate *)) \
    X(fmi2SetFMUstate, fmi2Status, (fmi2Component, fmi2FMUstate)) \
    X(fmi2FreeFMUstate, fmi2Status, (fmi2Component, fmi2FMUstate *)) \
    X(fmi2SerializedFMUstateSize, fmi2Status, (fmi2Component, fmi2FMUstate, \
        size_t *)) \
    X(fmi2SerializeFMUstate, fmi2Status, (fmi2Component, fmi2FMUstate, \
        fmi2Byte[], size_t)) \
    X(fmi2DeSerializeFMUstate, fmi2Status, (fmi2Component, const fmi2Byte[], \
        size_t, fmi2FMUstate *)) \
    X(fmi2GetDirectionalDerivative, fmi2Status, (fmi2Component, \
        const fmi2ValueReference[], size_t, const fmi2ValueReference[], \
        size_t, const fmi2Real[], fmi2Real[])) \
    X(fmi2SetRealInputDerivatives, fmi2Status, (fmi2Component, \
        const fmi2ValueReference[], size_t, const fmi2Integer[], \
        const fmi2Real[])) \
    X(fmi2GetRealOutputDerivatives, fmi2Status, (fmi2Component, \
        const fmi2ValueReference[], size_t, const fmi2Integer[], fmi2Real[])) \
    X(fmi2DoStep, fmi2Status, (fmi2Component, fmi2Real, fmi2Real, \
        fmi2Boolean)) \
    X(fmi2CancelStep, fmi2Status, (fmi2Component)) \
    X(fmi2GetStatus, fmi2Status, (fmi2Component, const fmi2StatusKind, \
        fmi2Status *)) \
    X(fmi2GetRealStatus, fmi2Status, (fmi2Component, const fmi2StatusKind, \
        fmi2Real *)) \
    X(fmi2GetIntegerStatus, fmi2Status, (fmi2Component, const fmi2StatusKind, \
        fmi2Integer *)) \
    X(fmi2GetBooleanStatus, fmi2Status, (fmi2Component, const fmi2StatusKind, \
        fmi2Boolean *)) \
    X(fmi2GetStringStatus, fmi2Status, (fmi2Component, const fmi2StatusKind, \
        fmi2String *))

#endif

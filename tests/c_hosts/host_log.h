/*
 * host_log.h - the FMI callbacks our C test masters share: every message
 * to stderr as "[log NAME STATUS CATEGORY] text", memory from calloc/free.
 */
#ifndef HOST_LOG_H
#define HOST_LOG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../fmu_src/loader/fmi2.h"

static void logger(fmi2ComponentEnvironment env, fmi2String name,
                   fmi2Status status, fmi2String category,
                   fmi2String message, ...)
{
    va_list ap;

    (void)env;
    fprintf(stderr, "[log %s %d %s] ", name, status, category);
    va_start(ap, message);
    vfprintf(stderr, message, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const fmi2CallbackFunctions callbacks = {
    logger, calloc, free, NULL, NULL
};

#endif

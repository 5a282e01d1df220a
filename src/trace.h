/*
 * trace.h: launch timelines of the Marlin kernel, for tuning. Only in builds
 * configured with -DMARLIN_TRACE=ON; the default build has none of this.
 *
 * Thread 0 of every block of row chunk 0 stamps the GPU's global timer (ns)
 * at fixed points of a launch. The stamps of the first MARLIN_TRACE_LAUNCHES
 * kernel launches after marlin_trace_reset are kept (a marlin_matmul call is
 * one launch per row-chunk group), for the first MARLIN_TRACE_BLOCKS blocks.
 */
#pragma once

#include "marlin.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { MARLIN_TRACE_LAUNCHES = 16, MARLIN_TRACE_BLOCKS = 1024 };

/* Fields of a block's record: its SM, then the stamps, in launch order. */
enum {
    MARLIN_TRACE_SM,          /* %smid */
    MARLIN_TRACE_START,       /* first instruction */
    MARLIN_TRACE_WAITED,      /* griddepcontrol.wait returned (the previous kernel is done) */
    MARLIN_TRACE_FIRST_STAGE, /* the first stage's copies have landed */
    MARLIN_TRACE_LAST_FINISH, /* the last slice's k loop is done, its epilogue begins */
    MARLIN_TRACE_REDUCED,     /* its k-group sums are done (0 where a slice has one k-group) */
    MARLIN_TRACE_ARRIVED,     /* a partial slice: the block knows whether it is the last to arrive (else 0) */
    MARLIN_TRACE_END,         /* last instruction */
    MARLIN_TRACE_FIELDS
};

/* Forgets earlier launches: the next launch is recorded as launch 0. */
MARLIN_API marlin_status marlin_trace_reset(void);

/* Copies the records out (waits for the device first): stamps holds
 * MARLIN_TRACE_LAUNCHES x MARLIN_TRACE_BLOCKS x MARLIN_TRACE_FIELDS values,
 * grids the number of blocks of each launch (row chunk 0), *launches the
 * number of launches recorded (at most MARLIN_TRACE_LAUNCHES). */
MARLIN_API marlin_status marlin_trace_read(unsigned long long* stamps, int* grids, int* launches);

#ifdef __cplusplus
}
#endif

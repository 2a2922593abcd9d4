/* The CPU backend: OpenBLAS sgemm for GEMM, OpenMP loops for every other op. */
#ifndef LT_CPU_H
#define LT_CPU_H

#include "backend.h"

/* Creates the CPU backend with `threads` OpenMP threads (<= 0: OpenMP's
 * default). The caller frees it with lt_backend_free. */
enum lt_status lt_cpu_backend_new(int threads, lt_backend **out);

#endif

/* The OpenCL backend: every op as OpenCL C 1.2 kernels, GEMM through CLBlast,
 * on the device a spec names. */
#ifndef LT_CL_H
#define LT_CL_H

#include <stddef.h>

#include "backend.h"

/* One OpenCL device as `lltrain info` lists it. */
struct lt_cl_device_desc {
	int platform, device;  /* the P.D of --device opencl:P.D */
	char platform_name[128];
	char name[192];
	char version[96];      /* the device's OpenCL version string */
	const char *type;      /* "GPU", "CPU", "accelerator" or "other" */
	size_t mem_bytes, max_alloc_bytes;
	int compute_units;
};

/* Every device of every platform, up to max; *n is how many there are
 * (possibly more than max). Fails only when the OpenCL loader does. */
enum lt_status lt_cl_devices(struct lt_cl_device_desc *out, int max, int *n);

/* Opens the device named by spec: "opencl" (the first GPU of any platform,
 * else the first device), "opencl:P.D", "opencl:NAME" (the first device
 * whose name contains NAME, case-insensitive), or "opencl-gpu" (a GPU only,
 * for --device auto). */
enum lt_status lt_cl_backend_new(const char *spec, lt_backend **out);
/* "opencl" and "opencl-gpu" take GPU number `index` (modulo the GPUs
 * found) instead of the first: for ranks that share a node. */
void lt_cl_set_gpu_index(int index);

#endif

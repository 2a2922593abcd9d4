/* Finding OpenCL devices: the list `lltrain info` prints, and the device a
 * --device spec names. */
#include "config.h"
#include "cl.h"
#include "cl_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

static const char *device_type_name(cl_device_type t)
{
	if (t & CL_DEVICE_TYPE_GPU)
		return "GPU";
	if (t & CL_DEVICE_TYPE_CPU)
		return "CPU";
	if (t & CL_DEVICE_TYPE_ACCELERATOR)
		return "accelerator";
	return "other";
}

void lt_cl_describe_device(cl_platform_id p, cl_device_id d, struct lt_cl_device_desc *out)
{
	cl_device_type type = 0;
	cl_ulong mem = 0, max_alloc = 0;
	cl_uint cu = 0;
	memset(out, 0, sizeof *out);
	out->platform = out->device = -1;
	clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof out->platform_name - 1, out->platform_name,
			  NULL);
	clGetDeviceInfo(d, CL_DEVICE_NAME, sizeof out->name - 1, out->name, NULL);
	clGetDeviceInfo(d, CL_DEVICE_VERSION, sizeof out->version - 1, out->version, NULL);
	clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
	clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
	clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
	clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
	out->type = device_type_name(type);
	out->mem_bytes = (size_t)mem;
	out->max_alloc_bytes = (size_t)max_alloc;
	out->compute_units = (int)cu;
}

/* The platforms, or 0 of them when the loader finds none. */
static cl_uint platforms_of_loader(cl_platform_id *ids)
{
	cl_uint n = 0;
	if (clGetPlatformIDs(MAX_PLATFORMS, ids, &n) != CL_SUCCESS)
		return 0;
	return n < MAX_PLATFORMS ? n : MAX_PLATFORMS;
}

static cl_uint devices_of_platform(cl_platform_id p, cl_device_id *ids)
{
	cl_uint n = 0;
	if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, MAX_DEVICES, ids, &n) != CL_SUCCESS)
		return 0;
	return n < MAX_DEVICES ? n : MAX_DEVICES;
}

enum lt_status lt_cl_devices(struct lt_cl_device_desc *out, int max, int *n)
{
	cl_platform_id plats[MAX_PLATFORMS];
	cl_device_id devs[MAX_DEVICES];
	cl_uint np = platforms_of_loader(plats);
	*n = 0;
	for (cl_uint p = 0; p < np; p++) {
		cl_uint nd = devices_of_platform(plats[p], devs);
		for (cl_uint d = 0; d < nd; d++, (*n)++)
			if (*n < max) {
				lt_cl_describe_device(plats[p], devs[d], &out[*n]);
				out[*n].platform = (int)p;
				out[*n].device = (int)d;
			}
	}
	return LT_OK;
}

static int contains_ignoring_case(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; *hay; hay++) {
		size_t i = 0;
		while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
			i++;
		if (i == n)
			return 1;
	}
	return n == 0;
}

/* "P.D" as two numbers, or 0. */
static int parse_platform_device(const char *s, int *p, int *d)
{
	char *end;
	long a = strtol(s, &end, 10);
	if (end == s || *end != '.' || !isdigit((unsigned char)end[1]))
		return 0;
	long b = strtol(end + 1, &end, 10);
	if (*end || a < 0 || b < 0 || a > 1000 || b > 1000)
		return 0;
	*p = (int)a;
	*d = (int)b;
	return 1;
}

/* Writes "n platforms: NAME (GPU, CPU), ..." of what was found. */
static void summarize_found(char *out, size_t cap)
{
	struct lt_cl_device_desc list[32];
	int n = 0;
	lt_cl_devices(list, 32, &n);
	if (n == 0) {
		snprintf(out, cap, "the OpenCL loader found no platform with a device "
			 "(is an ICD such as pocl-opencl-icd or a GPU driver installed?)");
		return;
	}
	size_t len = (size_t)snprintf(out, cap, "found");
	for (int i = 0; i < n && i < 32 && len < cap; i++)
		len += (size_t)snprintf(out + len, cap - len, "%s %d.%d %s (%s)", i ? "," : "",
					list[i].platform, list[i].device, list[i].name, list[i].type);
}

static int gpu_index;

void lt_cl_set_gpu_index(int index)
{
	gpu_index = index > 0 ? index : 0;
}

/* How many GPUs the platforms have (at least 1, to divide by). */
static int count_gpus(cl_platform_id *plats, cl_uint np)
{
	cl_device_id devs[MAX_DEVICES];
	int n = 0;
	for (cl_uint p = 0; p < np; p++) {
		cl_uint nd = devices_of_platform(plats[p], devs);
		for (cl_uint d = 0; d < nd; d++) {
			cl_device_type type = 0;
			clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
			n += (type & CL_DEVICE_TYPE_GPU) != 0;
		}
	}
	return n > 0 ? n : 1;
}

enum lt_status lt_cl_pick_device(const char *spec, cl_platform_id *platform, cl_device_id *device)
{
	cl_platform_id plats[MAX_PLATFORMS];
	cl_device_id devs[MAX_DEVICES];
	cl_uint np = platforms_of_loader(plats);
	const char *arg = strchr(spec, ':') ? strchr(spec, ':') + 1 : NULL;
	int want_p = -1, want_d = -1, gpu_only = !strcmp(spec, "opencl-gpu");
	int by_index = arg && parse_platform_device(arg, &want_p, &want_d);
	/* plain "opencl": GPU number gpu_index among the GPUs (pass 0) */
	int skip = !arg ? gpu_index % count_gpus(plats, np) : 0;
	char found[768];

	/* Two passes: GPUs first, then any device (not for opencl-gpu, or P.D). */
	for (int pass = 0; pass < 2; pass++) {
		for (cl_uint p = 0; p < np; p++) {
			cl_uint nd = devices_of_platform(plats[p], devs);
			for (cl_uint d = 0; d < nd; d++) {
				cl_device_type type = 0;
				char name[256] = "";
				clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
				clGetDeviceInfo(devs[d], CL_DEVICE_NAME, sizeof name - 1, name, NULL);
				int match = by_index ? (int)p == want_p && (int)d == want_d
					: arg ? contains_ignoring_case(name, arg)
					: pass == 1 || ((type & CL_DEVICE_TYPE_GPU) && skip-- == 0);
				if (match) {
					*platform = plats[p];
					*device = devs[d];
					return LT_OK;
				}
			}
		}
		if (gpu_only || by_index || arg)
			break;
	}
	summarize_found(found, sizeof found);
	if (by_index)
		lt_errmsg_set("device '%s': no OpenCL device %d.%d; %s", spec, want_p, want_d, found);
	else if (arg)
		lt_errmsg_set("device '%s': no OpenCL device name contains '%s'; %s", spec, arg, found);
	else if (gpu_only)
		lt_errmsg_set("no OpenCL GPU; %s", found);
	else
		lt_errmsg_set("device '%s': no OpenCL device; %s", spec, found);
	return LT_ERR_NOTFOUND;
}

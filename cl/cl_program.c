/* Builds the embedded kernel programs for a device (each after bf16.cl), the
 * wgmma GEMM's through its PTX finished for sm_90a, through a binary cache
 * under $XDG_CACHE_HOME/lltrain (or ~/.cache/lltrain) keyed by device,
 * driver, options and source, so that a second start compiles nothing; and
 * small texts kept beside the binaries (the GEMM tile search's results). */
#include "config.h"
#include "cl_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "io/fs.h"

/* The file every program starts with (its bf16 rule and helpers). */
#define PRELUDE "bf16.cl"

const char *lt_cl_embedded_source(const char *file, size_t *len)
{
	for (const struct lt_embedded *e = lt_embedded_kernels; e->name; e++)
		if (!strcmp(e->name, file)) {
			*len = e->len;
			return e->text;
		}
	return NULL;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t fnv1a_str(uint64_t h, const char *s)
{
	return fnv1a(h, s, strlen(s) + 1);
}

/* The path of the cache file "KIND-HASH.EXT", the hash over the device,
 * its driver, key and src[len]; 0 when there is no cache directory. */
static int cache_path(cl_device_id dev, const char *kind, const char *ext, const char *key,
		      const char *src, size_t len, char *out, size_t cap)
{
	char name[256] = "", version[256] = "", driver[256] = "";
	cl_platform_id plat = NULL;
	char plat_version[256] = "";
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
	clGetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof version - 1, version, NULL);
	clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
	clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
	clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof plat_version - 1, plat_version, NULL);

	uint64_t h = 0xcbf29ce484222325ULL;
	h = fnv1a_str(h, name);
	h = fnv1a_str(h, version);
	h = fnv1a_str(h, driver);
	h = fnv1a_str(h, plat_version);
	h = fnv1a_str(h, key);
	h = fnv1a(h, src, len);
	int n;
	if (xdg && *xdg == '/')
		n = snprintf(out, cap, "%s/lltrain/%s-%016llx.%s", xdg, kind, (unsigned long long)h,
			     ext);
	else if (home && *home)
		n = snprintf(out, cap, "%s/.cache/lltrain/%s-%016llx.%s", home, kind,
			     (unsigned long long)h, ext);
	else
		return 0;
	return n > 0 && (size_t)n < cap;
}

/* The program from a cached binary, or NULL when there is none or the
 * driver refuses it. */
static cl_program program_from_cache(cl_context ctx, cl_device_id dev, const char *path,
				     const char *options)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	unsigned char *bin = NULL;
	long size = -1;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (bin = malloc((size_t)size)) && fread(bin, 1, (size_t)size, f) != (size_t)size) {
		free(bin);
		bin = NULL;
	}
	fclose(f);
	if (!bin)
		return NULL;
	size_t len = (size_t)size;
	const unsigned char *bins[1] = { bin };
	cl_int err, bin_status;
	cl_program p = clCreateProgramWithBinary(ctx, 1, &dev, &len, bins, &bin_status, &err);
	free(bin);
	if (err != CL_SUCCESS || bin_status != CL_SUCCESS)
		return NULL;
	if (clBuildProgram(p, 1, &dev, options, NULL, NULL) != CL_SUCCESS) {
		clReleaseProgram(p);
		return NULL;
	}
	return p;
}

/* Publishes n bytes under path, making its directory; failures only lose
 * the cache. */
static void cache_bytes(const char *path, const void *p, size_t n)
{
	char dir[LT_FS_PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	*strrchr(dir, '/') = '\0';
	if (lt_fs_make_dirs(dir) == LT_OK)
		lt_fs_publish_file(path, p, n);
	lt_errmsg_clear();
}

int lt_cl_cache_get(cl_device_id dev, const char *kind, const char *file, const char *key,
		    char *out, size_t cap)
{
	char path[LT_FS_PATH_MAX];
	size_t len = 0;
	const char *src = lt_cl_embedded_source(file, &len);
	LT_ASSERT(src && cap > 1);
	if (!cache_path(dev, kind, "txt", key, src, len, path, sizeof path))
		return 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(out, 1, cap - 1, f);
	fclose(f);
	out[n] = '\0';
	return n > 0;
}

void lt_cl_cache_put(cl_device_id dev, const char *kind, const char *file, const char *key,
		     const char *text)
{
	char path[LT_FS_PATH_MAX];
	size_t len = 0;
	const char *src = lt_cl_embedded_source(file, &len);
	LT_ASSERT(src);
	if (cache_path(dev, kind, "txt", key, src, len, path, sizeof path))
		cache_bytes(path, text, strlen(text));
}

/* Stores p's binary under path through lt_fs_publish_file (its temporary
 * is unique to the process, so that processes sharing the cache never
 * read half a file nor write into one another's). Failures only lose the
 * cache. */
static void cache_program(cl_program p, const char *path)
{
	size_t size = 0;
	if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
	    !size)
		return;
	unsigned char *bin = malloc(size);
	unsigned char *bins[1] = { bin };
	if (bin && clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS)
		cache_bytes(path, bin, size);
	free(bin);
}

/* The build log of p on dev, tabs and newlines kept, in errmsg. */
static void report_build_log(cl_program p, cl_device_id dev, const char *file, const char *options,
			     cl_int err)
{
	char name[256] = "", log[6144] = "";
	size_t len = 0;
	clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
	clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &len);
	lt_errmsg_set("kernel program %s (options '%s') failed to build on %s (OpenCL error %d); "
		      "build log:\n%s", file, options, name, (int)err, log);
}

/* Kernel files built after preludes of shared helpers, after PRELUDE:
 * { file, prelude, second prelude or NULL }. */
static const char *const preludes[][3] = {
	{ "gemm_mma.cl", "mma.cl", NULL },
	{ "gemm_bf16.cl", "mma.cl", NULL },
	{ "gemm_wgmma.cl", "mma.cl", "wgmma_ops.cl" },
	{ "attention_mma.cl", "mma.cl", NULL },
	{ "distill.cl", "ops.cl", NULL },
	{ "vxent.cl", "ops.cl", NULL },
};

/* Kernel files whose compiled PTX is finished for sm_90a (lt_cl_ptx_sm90a). */
static int needs_sm90a(const char *file)
{
	return !strcmp(file, "gemm_wgmma.cl");
}

static const char *embedded_or_empty(const char *file, size_t *len)
{
	*len = 0;
	if (!file)
		return "";
	const char *s = lt_cl_embedded_source(file, len);
	LT_ASSERT(s);
	return s;
}

/* The source of `file` as it is built: PRELUDE, its own preludes (if any),
 * then its own text; malloc'd, NULL when it cannot be allocated (*len says
 * its size). */
static char *program_source(const char *file, size_t *len)
{
	size_t n = 0, n0 = 0, np = 0, nq = 0;
	const char *src = lt_cl_embedded_source(file, &n), *pre = "", *pre2 = "";
	const char *first = lt_cl_embedded_source(PRELUDE, &n0);
	LT_ASSERT(src && first);
	for (size_t i = 0; i < sizeof preludes / sizeof preludes[0]; i++)
		if (!strcmp(preludes[i][0], file)) {
			pre = embedded_or_empty(preludes[i][1], &np);
			pre2 = embedded_or_empty(preludes[i][2], &nq);
		}
	*len = n0 + 1 + np + 1 + nq + 1 + n;
	char *all = malloc(*len + 1);
	if (all)
		snprintf(all, *len + 1, "%s\n%s\n%s\n%s", first, pre, pre2, src);
	return all;
}

#define WG_MARK "//LTWG:"
#define SM90 ".target sm_90"

char *lt_cl_ptx_sm90a(const char *ptx, size_t len)
{
	size_t n = strnlen(ptx, len), ml = strlen(WG_MARK), tl = strlen(SM90);
	char *out = malloc(n + 2), *w = out;
	int targets = 0;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		if (n - i >= ml && !memcmp(ptx + i, WG_MARK, ml)) {
			i += ml;
			continue;
		}
		if (n - i >= tl && !memcmp(ptx + i, SM90, tl) &&
		    (i + tl == n || ptx[i + tl] == '\n' || ptx[i + tl] == ',' ||
		     ptx[i + tl] == ' ' || ptx[i + tl] == '\r')) {
			if (targets++) {  /* a second target: refused (and out grows by one only) */
				free(out);
				return NULL;
			}
			memcpy(w, SM90 "a", tl + 1);
			w += tl + 1;
			i += tl;
			continue;
		}
		*w++ = ptx[i++];
	}
	*w = '\0';
	if (targets != 1) {
		free(out);
		return NULL;
	}
	return out;
}

/* The program of p's PTX finished by lt_cl_ptx_sm90a and built with options. */
static enum lt_status build_sm90a(cl_context ctx, cl_device_id dev, const char *file,
				  const char *options, cl_program p, cl_program *out)
{
	size_t size = 0;
	cl_int err = clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL);
	unsigned char *bin = err == CL_SUCCESS && size ? malloc(size) : NULL;
	unsigned char *bins[1] = { bin };
	char *ptx = NULL;
	if (bin && clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS)
		ptx = lt_cl_ptx_sm90a((const char *)bin, size);
	free(bin);
	if (!ptx) {
		lt_errmsg_set("kernel program %s: its compiled form is no PTX for sm_90", file);
		return LT_ERR_BACKEND;
	}
	const unsigned char *text[1] = { (const unsigned char *)ptx };
	size_t len = strlen(ptx) + 1;
	cl_int status;
	cl_program q = clCreateProgramWithBinary(ctx, 1, &dev, &len, text, &status, &err);
	free(ptx);
	if (err != CL_SUCCESS || status != CL_SUCCESS) {
		lt_errmsg_set("kernel program %s: its sm_90a PTX was refused (OpenCL error %d)", file,
			      (int)(err != CL_SUCCESS ? err : status));
		return LT_ERR_BACKEND;
	}
	if ((err = clBuildProgram(q, 1, &dev, options, NULL, NULL)) != CL_SUCCESS) {
		report_build_log(q, dev, file, options, err);
		clReleaseProgram(q);
		return LT_ERR_BACKEND;
	}
	*out = q;
	return LT_OK;
}

/* lt_cl_build_program of the source src[len]. */
static enum lt_status build_source(cl_context ctx, cl_device_id dev, const char *file,
				   const char *options, const char *src, size_t len,
				   cl_program *out)
{
	char path[LT_FS_PATH_MAX];
	cl_int err;
	int cached = cache_path(dev, "kernels", "bin", options, src, len, path, sizeof path);
	if (cached && (*out = program_from_cache(ctx, dev, path, options)))
		return LT_OK;

	cl_program p = clCreateProgramWithSource(ctx, 1, &src, &len, &err);
	if (err != CL_SUCCESS) {
		lt_errmsg_set("kernel program %s: clCreateProgramWithSource failed (OpenCL error %d)",
			      file, (int)err);
		return LT_ERR_BACKEND;
	}
	if ((err = clBuildProgram(p, 1, &dev, options, NULL, NULL)) != CL_SUCCESS) {
		report_build_log(p, dev, file, options, err);
		clReleaseProgram(p);
		return LT_ERR_BACKEND;
	}
	if (needs_sm90a(file)) {
		cl_program q;
		enum lt_status st = build_sm90a(ctx, dev, file, options, p, &q);
		clReleaseProgram(p);
		if (st != LT_OK)
			return st;
		p = q;
	}
	if (cached)
		cache_program(p, path);
	*out = p;
	return LT_OK;
}

enum lt_status lt_cl_build_program(cl_context ctx, cl_device_id dev, const char *file,
				   const char *options, cl_program *out)
{
	size_t len = 0;
	char *src = program_source(file, &len);
	*out = NULL;
	if (!src) {
		lt_errmsg_set("kernel program %s: cannot allocate its %zu bytes of source", file,
			      len);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = build_source(ctx, dev, file, options, src, len, out);
	free(src);
	return st;
}

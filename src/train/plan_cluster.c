/* The planner's cluster: read from a description ("8x24GiB@100TFLOPs,
 * 4xcpu@1.5TFLOPs") and its links ("10Gbit@50us"), or made from what the
 * ranks of a launch measured of themselves. */
#include "config.h"
#include "train/plan.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What a described CPU node has unless it says: cores and memory. */
#define CPU_CORES 16
#define CPU_MEM (64.0 * 1073741824.0)
#define CPU_SERIAL LT_PLAN_CPU_SERIAL
/* Links unless given: within a node PCIe-class 16 GB/s (a node's shared
 * memory is about as fast), and 10 Gbit/s Ethernet between nodes. */
#define WITHIN_BW 16e9
#define CPU_WITHIN_BW 4e9
#define WITHIN_LAT 5e-6
#define BETWEEN_BW 1.25e9
#define BETWEEN_LAT 50e-6

/* Where a description is being read: the whole text and the cursor. */
struct reader {
	const char *all, *p;
};

static enum lt_status bad(const struct reader *r, const char *expected)
{
	lt_errmsg_set("--devices '%s': at character %d ('%.12s'): expected %s", r->all,
		      (int)(r->p - r->all) + 1, *r->p ? r->p : "end", expected);
	return LT_ERR_CONFIG;
}

/* A positive number, into *v. */
static int read_number(struct reader *r, double *v)
{
	char *end;
	if (!isdigit((unsigned char)*r->p) && *r->p != '.')
		return 0;
	*v = strtod(r->p, &end);
	if (end == r->p || !(*v > 0) || !isfinite(*v))
		return 0;
	r->p = end;
	return 1;
}

/* A whole number n >= 1 followed by 'x', into *n; nothing read (0) when
 * the text there is not one. */
static int read_count(struct reader *r, int *n)
{
	const char *q = r->p;
	long v = 0;
	while (isdigit((unsigned char)*q) && v < 1000000)
		v = v * 10 + (*q++ - '0');
	if (q == r->p || (*q != 'x' && *q != 'X') || v < 1)
		return 0;
	*n = (int)v;
	r->p = q + 1;
	return 1;
}

/* A unit from the table after a number: its factor, 0 when none matches. */
static double read_unit(struct reader *r, const char *const *names, const double *factors)
{
	for (int i = 0; names[i]; i++) {
		size_t len = strlen(names[i]);
		if (strncasecmp(r->p, names[i], len) == 0) {
			r->p += len;
			return factors[i];
		}
	}
	return 0;
}

static const char *const mem_units[] = { "GiB", "GB", "MiB", "MB", "TiB", "TB", NULL };
static const double mem_factors[] = { 1073741824.0, 1e9, 1048576.0, 1e6, 1099511627776.0, 1e12 };

/* MEM: a number with GiB, GB, MiB, MB, TiB or TB. */
static enum lt_status read_mem(struct reader *r, double *bytes)
{
	double v, f;
	if (!read_number(r, &v))
		return bad(r, "a memory size such as 24GiB");
	if (!(f = read_unit(r, mem_units, mem_factors)))
		return bad(r, "a memory unit: GiB, GB, MiB, MB, TiB or TB");
	*bytes = v * f;
	return LT_OK;
}

static const char *const speed_units[] = { "TFLOPs", "TFLOP/s", "TFLOPS", "GFLOPs", "GFLOP/s",
					   "GFLOPS", "PFLOPs", "PFLOP/s", NULL };
static const double speed_factors[] = { 1e12, 1e12, 1e12, 1e9, 1e9, 1e9, 1e15, 1e15 };

/* '@' F32[/BF16] UNIT: the GEMM speeds, times the step's efficiency. */
static enum lt_status read_speed(struct reader *r, double eff, double *f32, double *bf16)
{
	double a, b = 0, f;
	if (*r->p != '@')
		return bad(r, "'@' and a speed such as @100TFLOPs");
	r->p++;
	if (!read_number(r, &a))
		return bad(r, "a speed such as 100TFLOPs (or 30/120TFLOPs for f32/bf16)");
	if (*r->p == '/') {
		r->p++;
		if (!read_number(r, &b))
			return bad(r, "the bf16 speed after '/'");
	}
	if (!(f = read_unit(r, speed_units, speed_factors)))
		return bad(r, "a speed unit: TFLOPs, GFLOPs or PFLOPs");
	*f32 = a * f * eff;
	*bf16 = (b > 0 ? b : a) * f * eff;
	return LT_OK;
}

/* cpu[CORES][:MEM]@SPEED: the node's CPU; SPEED is all its cores'. */
static enum lt_status read_cpu(struct reader *r, double eff, struct lt_plan_node *n)
{
	double f32, bf16;
	enum lt_status st;
	r->p += 3;
	n->cores = CPU_CORES;
	n->cpu_mem = CPU_MEM;
	if (isdigit((unsigned char)*r->p)) {
		long c = strtol(r->p, (char **)&r->p, 10);
		if (c < 1 || c > 4096)
			return bad(r, "a core count from 1 to 4096 after cpu");
		n->cores = (int)c;
	}
	if (*r->p == ':') {
		r->p++;
		if ((st = read_mem(r, &n->cpu_mem)) != LT_OK)
			return st;
	}
	if ((st = read_speed(r, eff, &f32, &bf16)) != LT_OK)
		return st;
	n->cpu_head_ratio = 1;
	n->core_f32 = f32 / n->cores;
	n->core_bf16 = bf16 / n->cores;
	n->serial = CPU_SERIAL;
	return LT_OK;
}

/* PART: [COUNT x] MEM @ SPEED or cpu...; into node n. */
static enum lt_status read_part(struct reader *r, double eff, struct lt_plan_node *n)
{
	int count = 1;
	if (strncasecmp(r->p, "cpu", 3) == 0) {
		if (n->cores)
			return bad(r, "one cpu part per node");
		return read_cpu(r, eff, n);
	}
	read_count(r, &count);
	if (n->gpus)
		return bad(r, "one kind of GPU per node");
	n->gpus = count;
	n->gpu_head_ratio = 1;
	enum lt_status st = read_mem(r, &n->gpu_mem);
	return st == LT_OK ? read_speed(r, eff, &n->gpu_f32, &n->gpu_bf16) : st;
}

enum lt_status lt_plan_cluster_parse(const char *spec, double efficiency,
				     struct lt_plan_cluster *out)
{
	struct reader r = { spec, spec };
	enum lt_status st;
	memset(out, 0, sizeof *out);
	out->within_bw = WITHIN_BW;
	out->within_lat = WITHIN_LAT;
	out->between_bw = BETWEEN_BW;
	out->between_lat = BETWEEN_LAT;
	do {
		struct lt_plan_node n = { 0 };
		int nodes = 1, count;
		const char *item = r.p;
		/* NODES x COUNT x MEM: two counts name nodes; one names the
		 * GPUs of one node (or the CPU nodes, before cpu). */
		if (read_count(&r, &count)) {
			const char *after = r.p;
			int inner, of_nodes = read_count(&r, &inner) ||
					      strncasecmp(after, "cpu", 3) == 0;
			nodes = of_nodes ? count : 1;
			r.p = of_nodes ? after : item;
		}
		do {
			if ((st = read_part(&r, efficiency, &n)) != LT_OK)
				return st;
		} while (*r.p == '+' && r.p++);
		if (*r.p && *r.p != ',')
			return bad(&r, "',' and the next item, or the end");
		if (out->n_nodes + nodes > LT_PLAN_MAX_NODES)
			return bad(&r, "at most 256 nodes");
		for (int i = 0; i < nodes; i++)
			out->node[out->n_nodes++] = n;
	} while (*r.p == ',' && r.p++);
	return LT_OK;
}

static const char *const link_units[] = { "Gbit/s", "Gbit", "Gb/s", "Mbit/s", "Mbit",
					  "GB/s", "GiB/s", "MB/s", NULL };
static const double link_factors[] = { 1.25e8, 1.25e8, 1.25e8, 1.25e5, 1.25e5,
				       1e9, 1073741824.0, 1e6 };
static const char *const lat_units[] = { "us", "ms", "ns", NULL };
static const double lat_factors[] = { 1e-6, 1e-3, 1e-9 };

enum lt_status lt_plan_link_parse(const char *spec, double *bw, double *lat)
{
	struct reader r = { spec, spec };
	double v, f;
	if (!read_number(&r, &v) || !(f = read_unit(&r, link_units, link_factors))) {
		lt_errmsg_set("link '%s': expected a bandwidth such as 10Gbit/s, 25Gbit or "
			      "12GB/s, optionally @ a latency such as @50us", spec);
		return LT_ERR_CONFIG;
	}
	*bw = v * f;
	if (*r.p == '@') {
		r.p++;
		if (!read_number(&r, &v) || !(f = read_unit(&r, lat_units, lat_factors)) || *r.p) {
			lt_errmsg_set("link '%s': expected a latency such as @50us after '@'", spec);
			return LT_ERR_CONFIG;
		}
		*lat = v * f;
	} else if (*r.p) {
		lt_errmsg_set("link '%s': unexpected '%s' after the bandwidth", spec, r.p);
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

/* Amdahl's law through a CPU rank's thread points: the serial share s
 * that best fits speed(t) = f1 t / (1 + s (t - 1)) (least squares of
 * 1/speed, which is linear in f1's inverse and s; CPU_SERIAL with fewer
 * than two points), and the one-thread speed f1 that puts the curve
 * through the step measured at the rank's own threads (the last point),
 * so that a noisy point elsewhere cannot move the speed of the launch as
 * it is. */
static void fit_threads(const struct lt_probe_rank *r, double *f1, double *serial)
{
	int n = r->n_thread_points;
	double s = CPU_SERIAL, t = r->threads > 0 ? r->threads : 1;
	if (n >= 2) {
		/* 1/speed(t) = a (1 - s) / t + a s, a = 1/f1: linear in x = 1/t */
		double sx = 0, sy = 0, sxx = 0, sxy = 0;
		for (int i = 0; i < n; i++) {
			double x = 1.0 / r->thread_n[i], y = 1.0 / r->thread_flops[i];
			sx += x, sy += y, sxx += x * x, sxy += x * y;
		}
		double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
		double icpt = (sy - slope * sx) / n, a = slope + icpt;  /* a (1 - s) + a s */
		if (a > 0)
			s = icpt / a;
	}
	*serial = s < 0 ? 0 : s > 1 ? 1 : s;
	*f1 = r->step_f32 * (1 + *serial * (t - 1)) / t;
}

/* The head's speed over a block's, as a rank measured them (1 when it
 * measured no head). */
static double head_ratio(const struct lt_probe_rank *r)
{
	return r->head_f32 > 0 && r->step_f32 > 0 ? r->head_f32 / r->step_f32 : 1;
}

/* A rank's figures into its node: GPUs' as the smallest of theirs; a
 * CPU rank's per-thread fit and its share of the node's memory. */
static void add_rank(const struct lt_probe_rank *r, struct lt_plan_node *n)
{
	if (r->gpu) {
		n->gpu_mem = n->gpus ? fmin(n->gpu_mem, r->mem) : r->mem;
		n->gpu_f32 = n->gpus ? fmin(n->gpu_f32, r->step_f32) : r->step_f32;
		double bf = r->step_bf16 > 0 ? r->step_bf16 : r->step_f32;
		n->gpu_bf16 = n->gpus ? fmin(n->gpu_bf16, bf) : bf;
		n->gpu_head_ratio = head_ratio(r);
		n->gpu_micro_s = fmax(n->gpu_micro_s, r->micro_s);
		n->gpu_micro_bf16_s = fmax(n->gpu_micro_bf16_s, r->micro_bf16_s);
		n->gpu_adamw = n->gpus ? fmin(n->gpu_adamw, r->adamw) : r->adamw;
		n->gpus++;
		return;
	}
	double f1, s;
	fit_threads(r, &f1, &s);
	if (!n->cpu_ranks || f1 < n->core_f32) {
		n->core_f32 = f1;
		n->core_bf16 = r->step_bf16 > 0 ? f1 * r->step_bf16 / r->step_f32 : f1;
		n->serial = s;
		n->cpu_head_ratio = head_ratio(r);
	}
	n->cpu_micro_s = fmax(n->cpu_micro_s, r->micro_s);
	n->cpu_micro_bf16_s = fmax(n->cpu_micro_bf16_s, r->micro_bf16_s);
	n->cpu_adamw = n->cpu_ranks ? fmin(n->cpu_adamw, r->adamw) : r->adamw;
	n->cpu_mem += r->mem;
	n->cpu_ranks++;
	n->cpu_threads = r->threads;
	n->cores = r->node_cores;
}

/* A rank's own speed as add_rank counts it into its node: a GPU's step,
 * a CPU rank's one-thread fit; f32 and bf16. */
static void own_speed(const struct lt_probe_rank *r, double *f32, double *bf16)
{
	double s;
	if (r->gpu) {
		*f32 = r->step_f32;
		*bf16 = r->step_bf16 > 0 ? r->step_bf16 : r->step_f32;
		return;
	}
	fit_threads(r, f32, &s);
	*bf16 = r->step_bf16 > 0 && r->step_f32 > 0 ? *f32 * r->step_bf16 / r->step_f32 : *f32;
}

/* Each rank's speed over its node's (out->rank_f32, rank_bf16): the
 * slowest of the ranks of its node, kind and device name over the
 * node's slowest of its kind. */
static enum lt_status rank_speeds(const struct lt_probe_rank *r, int n,
				  struct lt_plan_cluster *out)
{
	/* each rank's own figures once, not once a pair */
	double *own_f = malloc(2 * (size_t)n * sizeof *own_f), *own_b = own_f + n;
	if (!own_f) {
		lt_errmsg_set("the planner: no memory for %d ranks' speeds", n);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++)
		own_speed(&r[i], &own_f[i], &own_b[i]);
	for (int i = 0; i < n; i++) {
		const struct lt_plan_node *nd = &out->node[r[i].node];
		double f = INFINITY, b = INFINITY;
		for (int j = 0; j < n; j++)
			if (r[j].node == r[i].node && !r[j].gpu == !r[i].gpu &&
			    !strcmp(r[j].device, r[i].device))
				f = fmin(f, own_f[j]), b = fmin(b, own_b[j]);
		double node_f = r[i].gpu ? nd->gpu_f32 : nd->core_f32;
		double node_b = r[i].gpu ? nd->gpu_bf16 : nd->core_bf16;
		out->rank_f32[i] = node_f > 0 && f > 0 && isfinite(f) ? (float)(f / node_f) : 0;
		out->rank_bf16[i] = node_b > 0 && b > 0 && isfinite(b) ? (float)(b / node_b) : 0;
		if (!out->other_device && strcmp(r[i].device, r[0].device))
			out->other_device = i;
	}
	free(own_f);
	return LT_OK;
}

enum lt_status lt_plan_cluster_from_probe(const struct lt_probe_rank *r, int n,
					  const struct lt_probe_links *links,
					  struct lt_plan_cluster *out)
{
	memset(out, 0, sizeof *out);
	if (n > LT_PLAN_MAX_RANKS) {
		lt_errmsg_set("the planner takes at most %d ranks, not %d", LT_PLAN_MAX_RANKS, n);
		return LT_ERR_ARG;
	}
	out->launched = 1;
	out->n_ranks = n;
	for (int i = 0; i < n; i++) {
		if (r[i].node < 0 || r[i].node >= LT_PLAN_MAX_NODES) {
			lt_errmsg_set("rank %d: node %d is outside the planner's 0..%d", i,
				      r[i].node, LT_PLAN_MAX_NODES - 1);
			return LT_ERR_ARG;
		}
		if (r[i].node >= out->n_nodes)
			out->n_nodes = r[i].node + 1;
		out->rank_node[i] = (short)r[i].node;
		out->rank_gpu[i] = (unsigned char)(r[i].gpu != 0);
		add_rank(&r[i], &out->node[r[i].node]);
	}
	enum lt_status st = rank_speeds(r, n, out);
	if (st != LT_OK)
		return st;
	/* unmeasured (one rank a node): a GPU node's PCIe-class default, a
	 * CPU node's shared-memory sums as the probe measures them */
	int gpus = 0;
	for (int i = 0; i < n; i++)
		gpus += r[i].gpu != 0;
	out->within_bw = links->within_bw > 0 ? links->within_bw : gpus ? WITHIN_BW : CPU_WITHIN_BW;
	out->within_lat = links->within_lat > 0 ? links->within_lat : WITHIN_LAT;
	out->between_bw = links->between_bw > 0 ? links->between_bw : BETWEEN_BW;
	out->between_lat = links->between_lat > 0 ? links->between_lat : BETWEEN_LAT;
	return LT_OK;
}

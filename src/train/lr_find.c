/* A learning-rate range test's curve: the rising rates, the smoothed loss,
 * the stop at divergence, the suggestion and the JSON Lines. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* open_memstream under -std=c11 */
#endif
#include "train/lr_find.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lt_lr_find {
	struct lt_lr_find_config cfg;
	struct lt_lr_find_point *v;  /* [cfg.steps] */
	int n;
	double avg;                  /* the running average, before bias correction */
	double least;                /* the least smoothed loss so far (INFINITY: none) */
	enum lt_lr_find_end end;
};

struct lt_lr_find_config lt_lr_find_defaults(void)
{
	return (struct lt_lr_find_config){ .min_lr = 1e-6, .max_lr = 1, .steps = 200,
					   .smooth = 0.05, .diverge = 4 };
}

/* The first setting out of its range, said in lt_errmsg. */
static enum lt_status check_config(const struct lt_lr_find_config *c)
{
	if (!(c->min_lr > 0) || !isfinite(c->min_lr) || !(c->max_lr > c->min_lr) ||
	    !isfinite(c->max_lr)) {
		lt_errmsg_set("the rates %g to %g: expected 0 < min_lr < max_lr, both finite",
			      c->min_lr, c->max_lr);
		return LT_ERR_ARG;
	}
	if (c->steps < 10) {
		lt_errmsg_set("%d steps: expected at least 10", c->steps);
		return LT_ERR_ARG;
	}
	if (!(c->smooth > 0 && c->smooth < 1)) {
		lt_errmsg_set("smoothing %g: expected a weight in (0, 1)", c->smooth);
		return LT_ERR_ARG;
	}
	if (!(c->diverge > 1) || !isfinite(c->diverge)) {
		lt_errmsg_set("divergence factor %g: expected a finite number above 1", c->diverge);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

enum lt_status lt_lr_find_new(const struct lt_lr_find_config *cfg, lt_lr_find **out)
{
	*out = NULL;
	enum lt_status st = check_config(cfg);
	if (st != LT_OK)
		return st;
	lt_lr_find *f = calloc(1, sizeof *f);
	if (f)
		f->v = calloc((size_t)cfg->steps, sizeof *f->v);
	if (!f || !f->v) {
		free(f);
		lt_errmsg_set("cannot allocate a range test of %d steps", cfg->steps);
		return LT_ERR_NOMEM;
	}
	f->cfg = *cfg;
	f->least = INFINITY;
	f->end = LT_LR_FIND_RUNNING;
	*out = f;
	return LT_OK;
}

void lt_lr_find_free(lt_lr_find *f)
{
	if (!f)
		return;
	free(f->v);
	free(f);
}

double lt_lr_find_rate(const lt_lr_find *f, int i)
{
	const struct lt_lr_find_config *c = &f->cfg;
	return c->min_lr * pow(c->max_lr / c->min_lr, (double)(i - 1) / (double)(c->steps - 1));
}

int lt_lr_find_add(lt_lr_find *f, double lr, double loss)
{
	const struct lt_lr_find_config *c = &f->cfg;
	if (f->end != LT_LR_FIND_RUNNING || f->n >= c->steps)
		return 1;
	struct lt_lr_find_point *p = &f->v[f->n++];
	p->step = f->n;
	p->lr = lr;
	p->loss = loss;
	f->avg = (1 - c->smooth) * f->avg + c->smooth * loss;
	p->smoothed = isfinite(f->avg) ? f->avg / (1 - pow(1 - c->smooth, f->n)) : NAN;
	if (!isfinite(p->smoothed) || p->smoothed > c->diverge * f->least)
		f->end = LT_LR_FIND_DIVERGED;
	else if (f->n == c->steps)
		f->end = LT_LR_FIND_STEPS;
	if (p->smoothed < f->least)
		f->least = p->smoothed;
	return f->end != LT_LR_FIND_RUNNING;
}

void lt_lr_find_interrupt(lt_lr_find *f)
{
	if (f->end == LT_LR_FIND_RUNNING)
		f->end = LT_LR_FIND_INTERRUPTED;
}

const struct lt_lr_find_point *lt_lr_find_points(const lt_lr_find *f, int *n)
{
	*n = f->n;
	return f->v;
}

enum lt_lr_find_end lt_lr_find_end(const lt_lr_find *f)
{
	return f->end;
}

const char *lt_lr_find_end_name(enum lt_lr_find_end e)
{
	switch (e) {
	case LT_LR_FIND_RUNNING: return "running";
	case LT_LR_FIND_STEPS: return "steps";
	case LT_LR_FIND_DIVERGED: return "diverged";
	case LT_LR_FIND_INTERRUPTED: return "interrupted";
	}
	return "?";
}

/* The least-squares slope of the loss against ln(lr) over points [lo, hi]
 * (all finite). */
static double slope(const struct lt_lr_find_point *v, int lo, int hi)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0, k = hi - lo + 1;
	for (int i = lo; i <= hi; i++) {
		double x = log(v[i].lr), y = v[i].loss;
		sx += x, sy += y, sxx += x * x, sxy += x * y;
	}
	return (k * sxy - sx * sy) / (k * sxx - sx * sx);
}

enum lt_status lt_lr_find_suggest(const lt_lr_find *f, double *lr, int *at)
{
	const struct lt_lr_find_config *c = &f->cfg;
	int settle = c->steps / 10, h = c->steps / 20 > 2 ? c->steps / 20 : 2;
	int least = -1, best = -1;
	double steepest = 0;
	*lr = NAN;
	*at = -1;
	/* the least smoothed loss before any divergence: the descent ends there */
	for (int i = 0; i < f->n && isfinite(f->v[i].smoothed); i++)
		if (least < 0 || f->v[i].smoothed < f->v[least].smoothed)
			least = i;
	/* a fall within the noise is none */
	int fell = least > settle &&
		   f->v[least].smoothed < (1 - LT_LR_FIND_MIN_FALL) * f->v[settle].smoothed;
	for (int i = settle + h; fell && i + h <= least; i++) {
		double s = slope(f->v, i - h, i + h);
		if (s < steepest) {
			steepest = s;
			best = i;
		}
	}
	if (best < 0) {
		lt_errmsg_set("the smoothed loss fell by less than %g%% after the first %d of %d steps "
			      "(to %.4g at step %d, rate %g): raise max_lr or steps, or lower min_lr",
			      100 * LT_LR_FIND_MIN_FALL, settle, f->n,
			      least >= 0 ? f->v[least].smoothed : NAN, least + 1,
			      least >= 0 ? f->v[least].lr : c->min_lr);
		return LT_ERR_NUMERIC;
	}
	*at = best;
	*lr = fmax(f->v[best].lr * LT_LR_FIND_FRACTION, c->min_lr);
	return LT_OK;
}

/* v as JSON: "%.9g", or null when it is not finite. */
static void put_number(FILE *out, const char *name, double v, const char *after)
{
	if (isfinite(v))
		fprintf(out, "\"%s\": %.9g%s", name, v, after);
	else
		fprintf(out, "\"%s\": null%s", name, after);
}

enum lt_status lt_lr_find_jsonl(const lt_lr_find *f, double suggested, char **out)
{
	const struct lt_lr_find_config *c = &f->cfg;
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	*out = NULL;
	if (!m) {
		lt_errmsg_set("cannot open a memory stream for the range test's curve: %s",
			      strerror(errno));
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < f->n; i++) {
		fprintf(m, "{\"step\": %d, ", f->v[i].step);
		put_number(m, "lr", f->v[i].lr, ", ");
		put_number(m, "loss", f->v[i].loss, ", ");
		put_number(m, "smoothed", f->v[i].smoothed, "}\n");
	}
	fputc('{', m);
	put_number(m, "suggested_lr", suggested, ", ");
	fprintf(m, "\"stopped\": \"%s\", ", lt_lr_find_end_name(f->end));
	put_number(m, "min_lr", c->min_lr, ", ");
	put_number(m, "max_lr", c->max_lr, ", ");
	fprintf(m, "\"steps\": %d, ", c->steps);
	put_number(m, "smooth", c->smooth, ", ");
	put_number(m, "diverge", c->diverge, "}\n");
	if (fclose(m) != 0 || !buf) {
		free(buf);
		lt_errmsg_set("cannot write the range test's curve to memory: %s", strerror(errno));
		return LT_ERR_NOMEM;
	}
	*out = buf;
	return LT_OK;
}

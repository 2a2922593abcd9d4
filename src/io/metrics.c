/* Training progress: metrics.jsonl lines, TensorBoard's scalars of the
 * same numbers, and the human view on stdout. */
#include "config.h"
#include "io/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

struct lt_metrics {
	int fd;           /* appending */
	char *path;
	int tty;          /* stdout is a terminal: one refreshed line */
	int line_open;    /* the refreshed line is on screen, unterminated */
	int log_every;
	lt_tboard *tb;    /* RUN/tb's event file, or NULL */
};

enum lt_status lt_metrics_open(const char *path, int log_every, lt_metrics **out)
{
	struct lt_metrics *mt = calloc(1, sizeof *mt);
	if (!mt || !(mt->path = strdup(path))) {
		free(mt);
		lt_errmsg_set("cannot allocate the metrics writer");
		return LT_ERR_NOMEM;
	}
	mt->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	if (mt->fd < 0) {
		lt_errmsg_set("%s: cannot open for appending: %s", path, strerror(errno));
		free(mt->path);
		free(mt);
		return LT_ERR_IO;
	}
	mt->tty = isatty(STDOUT_FILENO);
	mt->log_every = log_every > 0 ? log_every : 1;
	*out = mt;
	return LT_OK;
}

enum lt_status lt_metrics_open_tboard(lt_metrics *mt, const char *dir, long step,
				      struct lt_tboard_notes *notes)
{
	lt_tboard_close(mt->tb);
	mt->tb = NULL;
	return lt_tboard_open(dir, step, notes, &mt->tb);
}

static void end_progress_line(lt_metrics *mt)
{
	if (mt->line_open) {
		fputc('\n', stdout);
		mt->line_open = 0;
	}
}

void lt_metrics_close(lt_metrics *mt)
{
	if (!mt)
		return;
	end_progress_line(mt);
	fflush(stdout);
	close(mt->fd);
	lt_tboard_close(mt->tb);
	free(mt->path);
	free(mt);
}

/* One logged number: its key in the JSON line, and the group of its
 * TensorBoard tag "GROUP/KEY" (NULL: not a scalar there). */
struct field {
	const char *group, *key;
	double v;         /* rounded as the line writes it (as_logged), or an integer */
	int integer;
};

/* The most fields of a line. */
#define MAX_FIELDS (24 + 1 + 2 * LT_METRICS_STAGES)

/* A line's fields in the order it writes them. */
struct fields {
	struct field v[MAX_FIELDS];
	int n;
};

/* v rounded to the 9 significant digits the JSON line writes: the value a
 * reader of metrics.jsonl gets back, which TensorBoard's float is then
 * rounded from too, so that the two agree exactly. */
static double as_logged(double v)
{
	char text[40];
	if (!isfinite(v))
		return v;
	snprintf(text, sizeof text, "%.9g", v);
	return strtod(text, NULL);
}

static void add_real(struct fields *f, const char *group, const char *key, double v)
{
	f->v[f->n++] = (struct field){ .group = group, .key = key, .v = as_logged(v) };
}

static void add_integer(struct fields *f, const char *group, const char *key, double v)
{
	f->v[f->n++] = (struct field){ .group = group, .key = key, .v = v, .integer = 1 };
}

/* The JSON object of f (NaN and Inf, which JSON lacks, become null). */
static json_t *fields_json(const struct fields *f)
{
	json_t *o = json_object();
	for (int i = 0; i < f->n; i++) {
		const struct field *x = &f->v[i];
		json_object_set_new(o, x->key, x->integer ? json_integer((json_int_t)x->v)
					       : isfinite(x->v) ? json_real(x->v) : json_null());
	}
	return o;
}

/* f's scalars as one TensorBoard event at step (nothing without one). */
static enum lt_status fields_tboard(lt_metrics *mt, long step, const struct fields *f)
{
	struct lt_tboard_scalar v[MAX_FIELDS];
	char tags[MAX_FIELDS][64];
	size_t n = 0;
	if (!mt->tb)
		return LT_OK;
	for (int i = 0; i < f->n; i++) {
		if (!f->v[i].group)
			continue;
		snprintf(tags[n], sizeof tags[n], "%s/%s", f->v[i].group, f->v[i].key);
		v[n] = (struct lt_tboard_scalar){ .tag = tags[n], .value = f->v[i].v };
		n++;
	}
	return lt_tboard_scalars(mt->tb, step, v, n);
}

/* Appends the n bytes of line; 0, or errno. A write that stops partway
 * (the disk filled, a file size limit) is cut back off a regular file, so
 * that the file keeps whole lines. */
static int append(lt_metrics *mt, const char *line, size_t n)
{
	struct stat sb;
	int regular = fstat(mt->fd, &sb) == 0 && S_ISREG(sb.st_mode);
	for (size_t done = 0; done < n;) {
		ssize_t w = write(mt->fd, line + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = w < 0 ? errno : EIO;
			/* a torn line that cannot be cut off stays; err says why */
			int cut = done && regular ? ftruncate(mt->fd, sb.st_size) : 0;
			(void)cut;
			return err;
		}
		done += (size_t)w;
	}
	return 0;
}

/* Appends obj as one line with one write, straight to the file, so a
 * killed run keeps every line it logged. Steals obj. */
static enum lt_status write_line(lt_metrics *mt, json_t *obj)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
		      : NULL;
	json_decref(obj);
	size_t n = s ? strlen(s) : 0;
	char *line = s ? realloc(s, n + 1) : NULL;
	if (!line) {
		free(s);
		lt_errmsg_set("%s: cannot format a metrics line", mt->path);
		return LT_ERR_NOMEM;
	}
	line[n] = '\n';
	int err = append(mt, line, n + 1);
	free(line);
	if (err) {
		lt_errmsg_set("%s: write failed: %s", mt->path, strerror(err));
		return LT_ERR_IO;
	}
	return LT_OK;
}

static void format_duration(double s, char *buf, size_t cap)
{
	if (!isfinite(s) || s < 0)
		snprintf(buf, cap, "?");
	else if (s < 3600)
		snprintf(buf, cap, "%d:%02d", (int)s / 60, (int)s % 60);
	else
		snprintf(buf, cap, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
}

static void show_step(lt_metrics *mt, const struct lt_step_metrics *s)
{
	char eta[32], comm[160] = "", kl[32] = "", line[480];
	double per_step = s->step > 0 ? s->elapsed / (double)s->step : 0;
	format_duration(per_step * (double)(s->total_steps - s->step), eta, sizeof eta);
	if (s->ranks > 1)
		snprintf(comm, sizeof comm, "  %d ranks, comm wait %.1f ms, sync %.1f ms", s->ranks,
			 s->comm_s * 1e3, s->sync_s * 1e3);
	if (s->distilled)
		snprintf(kl, sizeof kl, "  kl %.4f", s->kl);
	if (s->nodes > 1)
		snprintf(comm + strlen(comm), sizeof comm - strlen(comm),
			 ", between nodes %.2f MB, outer %.1f ms", s->xnode_bytes / 1e6,
			 s->outer_s * 1e3);
	if (s->stages > 1)
		snprintf(comm + strlen(comm), sizeof comm - strlen(comm),
			 "  %d stages, bubble %.1f%%", s->stages, 100 * s->bubble);
	snprintf(line, sizeof line,
		 "step %ld/%ld  loss %.4f%s  lr %.2e  grad norm %.3f  %.0f tok/s  %.2f TFLOP/s%s  ETA %s%s",
		 s->step, s->total_steps, s->loss, kl, s->lr, s->grad_norm, s->tokens_per_s, s->tflops,
		 comm, eta, s->skipped ? "  (skipped: non-finite loss)" : "");
	if (mt->tty) {
		/* \r then clear to the end of the line */
		printf("\r%s\033[K", line);
		mt->line_open = 1;
	} else if (s->step % mt->log_every == 0 || s->step == s->total_steps || s->skipped) {
		printf("%s\n", line);
	}
	fflush(stdout);
}

/* A step's fields: its scalars under train/, perf/, time/ and memory/. */
static void step_fields(const struct lt_step_metrics *s, struct fields *f)
{
	f->n = 0;
	add_integer(f, NULL, "step", (double)s->step);
	add_real(f, "train", "loss", s->loss);
	if (s->distilled)
		add_real(f, "train", "kl", s->kl);
	add_real(f, "train", "lr", s->lr);
	add_real(f, "train", "grad_norm", s->grad_norm);
	add_real(f, "perf", "tokens_per_s", s->tokens_per_s);
	add_real(f, "perf", "tflops", s->tflops);
	add_integer(f, NULL, "tokens", (double)s->tokens);
	add_real(f, NULL, "elapsed", s->elapsed);
	add_real(f, "time", "compute_s", s->compute_s);
	add_real(f, "time", "update_s", s->update_s);
	add_integer(f, "memory", "mem_bytes", (double)s->mem_bytes);
	add_integer(f, "memory", "mem_peak_bytes", (double)s->mem_peak_bytes);
	add_integer(f, "memory", "rss_bytes", (double)s->rss_bytes);
	add_integer(f, "memory", "rss_peak_bytes", (double)s->rss_peak_bytes);
	if (s->ranks > 1) {
		add_integer(f, NULL, "ranks", s->ranks);
		add_real(f, "time", "comm_s", s->comm_s);
		add_real(f, "time", "reduce_s", s->reduce_s);
		add_real(f, "time", "sync_s", s->sync_s);
	}
	if (s->nodes > 1) {
		add_integer(f, "dist", "xnode_bytes", s->xnode_bytes);
		add_real(f, "time", "outer_s", s->outer_s);
	}
	static const char *const compute[LT_METRICS_STAGES] = {
		"stage0_compute_s", "stage1_compute_s", "stage2_compute_s", "stage3_compute_s",
		"stage4_compute_s", "stage5_compute_s", "stage6_compute_s", "stage7_compute_s" };
	static const char *const wait[LT_METRICS_STAGES] = {
		"stage0_wait_s", "stage1_wait_s", "stage2_wait_s", "stage3_wait_s",
		"stage4_wait_s", "stage5_wait_s", "stage6_wait_s", "stage7_wait_s" };
	if (s->stages > 1)
		add_real(f, "pipeline", "bubble", s->bubble);
	for (int i = 0; s->stages > 1 && i < s->stages && i < LT_METRICS_STAGES; i++) {
		add_real(f, "pipeline", compute[i], s->stage_s[i]);
		add_real(f, "pipeline", wait[i], s->stage_s[s->stages + i]);
	}
}

enum lt_status lt_metrics_step(lt_metrics *mt, const struct lt_step_metrics *s)
{
	struct fields f;
	step_fields(s, &f);
	json_t *o = fields_json(&f);
	if (s->skipped)
		json_object_set_new(o, "skipped", json_true());
	show_step(mt, s);
	enum lt_status st = write_line(mt, o);
	return st == LT_OK ? fields_tboard(mt, s->step, &f) : st;
}

enum lt_status lt_metrics_eval(lt_metrics *mt, long step, double val_loss, double elapsed)
{
	struct fields f = { .n = 0 };
	add_integer(&f, NULL, "step", (double)step);
	add_real(&f, "eval", "val_loss", val_loss);
	add_real(&f, "eval", "val_ppl", exp(val_loss));
	add_real(&f, NULL, "elapsed", elapsed);
	lt_metrics_say(mt, "step %ld: validation loss %.4f, perplexity %.2f", step, val_loss,
		       exp(val_loss));
	enum lt_status st = write_line(mt, fields_json(&f));
	return st == LT_OK ? fields_tboard(mt, step, &f) : st;
}

enum lt_status lt_metrics_text(lt_metrics *mt, long step, const char *tag, const char *text)
{
	return mt && mt->tb ? lt_tboard_text(mt->tb, step, tag, text) : LT_OK;
}

void lt_metrics_say(lt_metrics *mt, const char *fmt, ...)
{
	va_list ap;
	if (mt)
		end_progress_line(mt);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

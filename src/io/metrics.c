/* Training progress: metrics.jsonl lines and the human view on stdout. */
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
	free(mt->path);
	free(mt);
}

/* JSON has no NaN or Inf: those become null. */
static json_t *json_number(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
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
	char eta[32], comm[80] = "", line[352];
	double per_step = s->step > 0 ? s->elapsed / (double)s->step : 0;
	format_duration(per_step * (double)(s->total_steps - s->step), eta, sizeof eta);
	if (s->ranks > 1)
		snprintf(comm, sizeof comm, "  %d ranks, comm wait %.1f ms, sync %.1f ms", s->ranks,
			 s->comm_s * 1e3, s->sync_s * 1e3);
	snprintf(line, sizeof line,
		 "step %ld/%ld  loss %.4f  lr %.2e  grad norm %.3f  %.0f tok/s  %.2f TFLOP/s%s  ETA %s%s",
		 s->step, s->total_steps, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->tflops, comm,
		 eta, s->skipped ? "  (skipped: non-finite loss)" : "");
	if (mt->tty) {
		/* \r then clear to the end of the line */
		printf("\r%s\033[K", line);
		mt->line_open = 1;
	} else if (s->step % mt->log_every == 0 || s->step == s->total_steps || s->skipped) {
		printf("%s\n", line);
	}
	fflush(stdout);
}

enum lt_status lt_metrics_step(lt_metrics *mt, const struct lt_step_metrics *s)
{
	json_t *o = json_object();
	json_object_set_new(o, "step", json_integer(s->step));
	json_object_set_new(o, "loss", json_number(s->loss));
	json_object_set_new(o, "lr", json_number(s->lr));
	json_object_set_new(o, "grad_norm", json_number(s->grad_norm));
	json_object_set_new(o, "tokens_per_s", json_number(s->tokens_per_s));
	json_object_set_new(o, "tflops", json_number(s->tflops));
	json_object_set_new(o, "tokens", json_integer(s->tokens));
	json_object_set_new(o, "elapsed", json_number(s->elapsed));
	json_object_set_new(o, "compute_s", json_number(s->compute_s));
	json_object_set_new(o, "update_s", json_number(s->update_s));
	if (s->ranks > 1) {
		json_object_set_new(o, "ranks", json_integer(s->ranks));
		json_object_set_new(o, "comm_s", json_number(s->comm_s));
		json_object_set_new(o, "reduce_s", json_number(s->reduce_s));
		json_object_set_new(o, "sync_s", json_number(s->sync_s));
	}
	if (s->skipped)
		json_object_set_new(o, "skipped", json_true());
	show_step(mt, s);
	return write_line(mt, o);
}

enum lt_status lt_metrics_eval(lt_metrics *mt, long step, double val_loss, double elapsed)
{
	json_t *o = json_object();
	json_object_set_new(o, "step", json_integer(step));
	json_object_set_new(o, "val_loss", json_number(val_loss));
	json_object_set_new(o, "val_ppl", json_number(exp(val_loss)));
	json_object_set_new(o, "elapsed", json_number(elapsed));
	lt_metrics_say(mt, "step %ld: validation loss %.4f, perplexity %.2f", step, val_loss,
		       exp(val_loss));
	return write_line(mt, o);
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

/* The run configuration (see conf.h), read and written by the table of
 * keys in conf_keys.c: reading and range checking of values, INI text
 * through inih, writing INI back out, and the command-line options that
 * set keys. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* open_memstream, strcasecmp under -std=c11 */
#endif
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "conf_impl.h"
#include "model.h"

_Static_assert(LT_CONF_LINE_MAX + 2 <= INI_MAX_LINE, "inih's line buffer holds a line");

/* Room for one error's place ("PATH:LINE: [s] k ="). */
#define ORIGIN_CAP (LT_CONF_PATH_MAX + 160)
/* A configuration file is a few kilobytes; this bounds what is read of one. */
#define CONF_FILE_MAX (1 << 20)

/* ------------------------------------------------------- reading values */

static void *field_of(struct lt_conf *c, const struct lt_conf_key *k)
{
	return (char *)c + k->offset;
}

static const void *const_field_of(const struct lt_conf *c, const struct lt_conf_key *k)
{
	return (const char *)c + k->offset;
}

static int within(const struct lt_conf_key *k, double v)
{
	int above = k->open_min ? v > k->min : v >= k->min;
	int below = k->open_max ? v < k->max : v <= k->max;
	return above && below;
}

/* "[1, 65536]", "(0, 10]" */
static void format_range(const struct lt_conf_key *k, char *buf, size_t cap)
{
	if (k->type == LT_CONF_INT64 && k->max >= LT_CONF_SEED_MAX)
		snprintf(buf, cap, "[%.0f, %" PRIu64 "]", k->min, UINT64_MAX);
	else if (k->type == LT_CONF_INT || k->type == LT_CONF_INT64)
		snprintf(buf, cap, "[%.0f, %.0f]", k->min, k->max);
	else
		snprintf(buf, cap, "%c%.15g, %.15g%c", k->open_min ? '(' : '[', k->min, k->max,
			 k->open_max ? ')' : ']');
}

const char *lt_conf_type_name(enum lt_conf_type t)
{
	switch (t) {
	case LT_CONF_INT: return "int";
	case LT_CONF_INT64: return "int64";
	case LT_CONF_FLOAT: return "float";
	case LT_CONF_DOUBLE: return "double";
	case LT_CONF_BOOL: return "bool";
	case LT_CONF_STRING: return "string";
	case LT_CONF_ENUM: return "enum";
	}
	return "?";
}

void lt_conf_range(const struct lt_conf_key *k, char *buf, size_t cap)
{
	size_t n = 0;
	switch (k->type) {
	case LT_CONF_BOOL:
		snprintf(buf, cap, "true|false");
		break;
	case LT_CONF_ENUM:
		buf[0] = '\0';
		for (int i = 0; k->choices[i] && n < cap; i++)
			n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "|" : "",
					      k->choices[i]);
		break;
	case LT_CONF_STRING:
		snprintf(buf, cap, "%s", k->min > 0 ? "non-empty text" : "text");
		break;
	default:
		format_range(k, buf, cap);
		n = strlen(buf);
		if (k->takes_auto && n < cap)
			snprintf(buf + n, cap - n, "|auto");
		break;
	}
}

/* The longest text a string key can hold so that its INI line still fits. */
static size_t string_cap(const struct lt_conf_key *k)
{
	size_t line = LT_CONF_LINE_MAX - strlen(k->name) - 3; /* "name = value" */
	return k->size - 1 < line ? k->size - 1 : line;
}

/* What a key's values must be, for error messages: "an integer in [1, 8]". */
static void describe_expected(const struct lt_conf_key *k, char *buf, size_t cap)
{
	char range[96];
	size_t n;
	switch (k->type) {
	case LT_CONF_INT:
	case LT_CONF_INT64:
		format_range(k, range, sizeof range);
		snprintf(buf, cap, "an integer in %s%s", range, k->takes_auto ? " or auto" : "");
		break;
	case LT_CONF_FLOAT:
	case LT_CONF_DOUBLE:
		format_range(k, range, sizeof range);
		snprintf(buf, cap, "a number in %s%s", range, k->takes_auto ? " or auto" : "");
		break;
	case LT_CONF_BOOL:
		snprintf(buf, cap, "a boolean (true, false, yes, no, on, off, 1 or 0)");
		break;
	case LT_CONF_ENUM:
		n = (size_t)snprintf(buf, cap, "one of");
		for (int i = 0; k->choices[i] && n < cap; i++)
			n += (size_t)snprintf(buf + n, cap - n, "%s %s", i == 0 ? "" :
					      k->choices[i + 1] ? "," : " or", k->choices[i]);
		break;
	case LT_CONF_STRING:
		snprintf(buf, cap, "%stext of at most %zu bytes, without control characters, "
			 "spaces at either end, or ';' at the start or after a space",
			 k->min > 0 ? "non-empty " : "", string_cap(k));
		break;
	}
}

static enum lt_status refuse(const struct lt_conf_key *k, const char *what, const char *text)
{
	char expected[256];
	describe_expected(k, expected, sizeof expected);
	lt_errmsg_set("%s '%s': expected %s", what, text, expected);
	return LT_ERR_CONFIG;
}

/* strtol, strtoull and strtod skip leading spaces and accept a sign; a
 * value must start with a digit, a sign or a dot, and be used up whole. */
static int starts_like_number(const char *s)
{
	return isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.';
}

static int parse_signed(const char *s, long *out)
{
	char *end;
	if (!starts_like_number(s))
		return 0;
	errno = 0;
	*out = strtol(s, &end, 10);
	return *end == '\0' && errno == 0 && end != s;
}

static int parse_unsigned64(const char *s, uint64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)s[0]) && s[0] != '+')
		return 0;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	*out = (uint64_t)v;
	return *end == '\0' && errno == 0 && end != s;
}

static int parse_real(const char *s, double *out)
{
	char *end;
	if (!starts_like_number(s))
		return 0;
	errno = 0;
	*out = strtod(s, &end);
	return *end == '\0' && errno == 0 && end != s;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
			*out = !strcasecmp(s, yes[i]);
			return 1;
		}
	}
	return 0;
}

/* Text that an INI line carries unchanged: inih strips spaces at either
 * end of a value and cuts it at a ';' that follows a space (or starts it). */
static int survives_ini(const char *s)
{
	size_t n = strlen(s);
	if (n && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1]) || s[0] == ';'))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (iscntrl((unsigned char)s[i]))
			return 0;
		if (s[i] == ';' && i > 0 && isspace((unsigned char)s[i - 1]))
			return 0;
	}
	return 1;
}

/* Reads text into key k of c; on a bad value c is unchanged and lt_errmsg
 * says "WHAT 'TEXT': expected ...". */
static enum lt_status set_value(struct lt_conf *c, const struct lt_conf_key *k, const char *text,
				const char *what)
{
	void *p = field_of(c, k);
	long l;
	uint64_t u;
	double d;
	float f;
	int b;

	switch (k->type) {
	case LT_CONF_INT:
		if (k->takes_auto && !strcasecmp(text, "auto"))
			l = LT_CONF_AUTO;
		else if (!parse_signed(text, &l) || !within(k, (double)l))
			return refuse(k, what, text);
		if (k->size == sizeof(int)) {
			int i = (int)l;
			memcpy(p, &i, sizeof i);
		} else {
			LT_ASSERT(k->size == sizeof(long));
			memcpy(p, &l, sizeof l);
		}
		break;
	case LT_CONF_INT64:
		LT_ASSERT(k->size == sizeof(uint64_t));
		if (!parse_unsigned64(text, &u) || (double)u < k->min ||
		    (k->max < LT_CONF_SEED_MAX && (double)u > k->max))
			return refuse(k, what, text);
		memcpy(p, &u, sizeof u);
		break;
	case LT_CONF_FLOAT:
		LT_ASSERT(k->size == sizeof(float));
		if (k->takes_auto && !strcasecmp(text, "auto"))
			f = NAN;
		/* the range holds for the float that is kept, not just the text */
		else if (!parse_real(text, &d) || !within(k, d) || !within(k, (double)(f = (float)d)))
			return refuse(k, what, text);
		memcpy(p, &f, sizeof f);
		break;
	case LT_CONF_DOUBLE:
		LT_ASSERT(k->size == sizeof(double));
		if (!parse_real(text, &d) || !within(k, d))
			return refuse(k, what, text);
		memcpy(p, &d, sizeof d);
		break;
	case LT_CONF_BOOL:
		LT_ASSERT(k->size == sizeof(int));
		if (!parse_bool(text, &b))
			return refuse(k, what, text);
		memcpy(p, &b, sizeof b);
		break;
	case LT_CONF_ENUM:
		LT_ASSERT(k->size == sizeof(int));
		for (b = 0; k->choices[b] && strcasecmp(k->choices[b], text); b++)
			;
		if (!k->choices[b])
			return refuse(k, what, text);
		memcpy(p, &b, sizeof b);
		break;
	case LT_CONF_STRING:
		if (strlen(text) > string_cap(k) || strlen(text) < (size_t)k->min ||
		    !survives_ini(text))
			return refuse(k, what, text);
		/* zero-filled, so equal configs are equal byte for byte */
		memset(p, 0, k->size);
		memcpy(p, text, strlen(text));
		break;
	}
	c->train.optim.total_steps = c->train.steps;
	return LT_OK;
}

enum lt_status lt_conf_set(struct lt_conf *c, const char *dotted, const char *value,
			   const char *origin)
{
	char section[32], unknown[512];
	const char *dot = strchr(dotted, '.');
	const struct lt_conf_key *k = NULL;
	if (!origin)
		origin = dotted;
	if (dot && (size_t)(dot - dotted) < sizeof section) {
		memcpy(section, dotted, (size_t)(dot - dotted));
		section[dot - dotted] = '\0';
		k = lt_conf_find(section, dot + 1);
	} else {
		snprintf(section, sizeof section, "?");
	}
	if (!k) {
		lt_conf_describe_unknown(section, unknown, sizeof unknown);
		lt_errmsg_set("%s: %s", origin, unknown);
		return LT_ERR_CONFIG;
	}
	return set_value(c, k, value, origin);
}

void lt_conf_defaults(struct lt_conf *c)
{
	memset(c, 0, sizeof *c);
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++) {
		enum lt_status st = set_value(c, k, k->def, k->name);
		LT_ASSERT(st == LT_OK);
	}
}

/* ------------------------------------------------------------ INI text */

/* One parse of INI text: the reader hands inih one line at a time, so the
 * line number of each call of the handler is known. */
struct ini_parse {
	struct lt_conf conf;      /* the copy that the text applies to */
	const char *origin;       /* the path, or "preset NAME" */
	const char *pos;          /* the reader's place in the text */
	int line;                 /* lines handed to inih so far */
	int error_line;           /* the first line that lltrain refused; 0 = none */
	enum lt_status st;
};

static void __attribute__((format(printf, 2, 3))) refuse_line(struct ini_parse *ps,
							      const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	if (ps->error_line)
		return; /* the first error is the one reported */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	lt_errmsg_set("%s:%d: %s", ps->origin, ps->line, msg);
	ps->error_line = ps->line;
	ps->st = LT_ERR_CONFIG;
}

/* A "[name]" line names a known section (checked here, where empty
 * sections are seen too, since inih calls the handler for keys only). */
static void check_section_line(struct ini_parse *ps, const char *line, size_t len)
{
	const char *close;
	if (len == 0 || line[0] != '[')
		return;
	close = memchr(line, ']', len);
	if (close && !lt_conf_is_section(line + 1, (size_t)(close - line - 1)))
		refuse_line(ps, "[%.*s]: unknown section (expected model, train, data, run, dist or distill)",
			    (int)(close - line - 1), line + 1);
}

/* inih's reader: the next line of the text into str (num bytes), without
 * its indentation (and a UTF-8 byte order mark on the first line), so
 * that inih never takes an indented line for the continuation of the
 * value above it. */
static char *read_line(char *str, int num, void *stream)
{
	struct ini_parse *ps = stream;
	const char *nl, *start;
	size_t len, chars, n;

	if (!*ps->pos)
		return NULL;
	nl = strchr(ps->pos, '\n');
	len = nl ? (size_t)(nl - ps->pos) + 1 : strlen(ps->pos);
	chars = nl ? len - 1 : len;
	ps->line++;
	if (chars > LT_CONF_LINE_MAX || len > (size_t)num - 1)
		refuse_line(ps, "the line is %zu characters long; at most %d fit", chars,
			    LT_CONF_LINE_MAX);
	start = ps->pos;
	if (ps->line == 1 && chars >= 3 && !memcmp(start, "\xEF\xBB\xBF", 3))
		start += 3;
	while (*start == ' ' || *start == '\t')
		start++;
	n = len - (size_t)(start - ps->pos);
	if (n > (size_t)num - 1)
		n = (size_t)num - 1;
	check_section_line(ps, start, nl ? (size_t)(nl - start) : n);
	memcpy(str, start, n);
	str[n] = '\0';
	ps->pos += len;
	return str;
}

static int handle_key(void *user, const char *section, const char *name, const char *value)
{
	struct ini_parse *ps = user;
	char what[ORIGIN_CAP], unknown[512];
	const struct lt_conf_key *k;

	if (ps->error_line)
		return 1; /* the result is discarded; the first error stands */
	if (!section[0]) {
		refuse_line(ps, "%s: a key before any [section]", name);
		return 1;
	}
	k = lt_conf_find(section, name);
	if (!k) {
		lt_conf_describe_unknown(section, unknown, sizeof unknown);
		refuse_line(ps, "[%s] %s: %s", section, name, unknown);
		return 1;
	}
	snprintf(what, sizeof what, "%s:%d: [%s] %s =", ps->origin, ps->line, section, name);
	if (set_value(&ps->conf, k, value, what) != LT_OK) {
		ps->error_line = ps->line;
		ps->st = LT_ERR_CONFIG;
	}
	return 1;
}

enum lt_status lt_conf_apply_string(struct lt_conf *c, const char *text, const char *origin)
{
	struct ini_parse *ps = malloc(sizeof *ps);
	int bad;
	enum lt_status st;

	if (!ps) {
		lt_errmsg_set("%s: cannot allocate %zu bytes to read it", origin, sizeof *ps);
		return LT_ERR_NOMEM;
	}
	*ps = (struct ini_parse){ .conf = *c, .origin = origin, .pos = text };
	bad = ini_parse_stream(read_line, ps, handle_key, ps);
	st = ps->st;
	/* inih's own complaints (no '=', no ']') come without a message */
	if (bad > 0 && (!ps->error_line || bad < ps->error_line)) {
		lt_errmsg_set("%s:%d: expected [section], key = value, or a comment (; or #)",
			      origin, bad);
		st = LT_ERR_CONFIG;
	} else if (bad < 0) {
		lt_errmsg_set("%s: cannot allocate memory to read it", origin);
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK)
		*c = ps->conf;
	free(ps);
	return st;
}

enum lt_status lt_conf_apply_file(struct lt_conf *c, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	size_t len = 0, cap = 0, got;
	enum lt_status st = LT_OK;

	if (!f) {
		lt_errmsg_set("%s: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	do {
		if (len > CONF_FILE_MAX) {
			lt_errmsg_set("%s: more than %d bytes; expected a configuration of a few "
				      "kilobytes", path, CONF_FILE_MAX);
			st = LT_ERR_CONFIG;
			break;
		}
		if (cap - len < 4096) {
			char *grown = realloc(text, cap ? 2 * cap : 8192);
			if (!grown) {
				lt_errmsg_set("%s: cannot allocate %zu bytes to read it", path,
					      2 * cap);
				st = LT_ERR_NOMEM;
				break;
			}
			text = grown;
			cap = cap ? 2 * cap : 8192;
		}
		got = fread(text + len, 1, cap - len - 1, f);
		len += got;
	} while (got > 0);
	if (st == LT_OK && ferror(f)) {
		lt_errmsg_set("%s: %s", path, strerror(errno));
		st = LT_ERR_IO;
	}
	fclose(f);
	if (st == LT_OK) {
		const char *nul = memchr(text, '\0', len);
		text[len] = '\0';
		if (nul) {
			lt_errmsg_set("%s: byte %zu is NUL; expected text", path,
				      (size_t)(nul - text));
			st = LT_ERR_CONFIG;
		}
	}
	if (st == LT_OK)
		st = lt_conf_apply_string(c, text, path);
	free(text);
	return st;
}

/* ---------------------------------------------------------------- check */

/* Tensor parallelism: the model splits over dist.tp ranks, and the modes
 * that need a whole model on one rank are refused. */
static enum lt_status check_tensor_parallel(const struct lt_conf *c)
{
	const char *with = c->train.lora_rank > 0 ? "train.lora_rank > 0 (LoRA)"
			   : c->distill.teacher[0] ? "distill.teacher (distillation)"
			   : c->dist.sync == LT_SYNC_LOCAL ? "dist.sync = local (local SGD)" : NULL;
	if (c->dist.tp == 1)
		return LT_OK;
	if (with) {
		lt_errmsg_set("dist.tp = %d with %s: not supported together; use dist.tp = 1",
			      c->dist.tp, with);
		return LT_ERR_CONFIG;
	}
	return lt_model_tp_check(&c->model, c->dist.tp);
}

/* Pipeline parallelism: stages of whole blocks, enough micro-batches to
 * fill them, and the modes not yet built over stages refused. */
static enum lt_status check_pipeline(const struct lt_conf *c)
{
	int pp = c->dist.pp;
	const char *with = c->dist.zero == 3 ? "dist.zero = 3 (ZeRO 3)"
			   : c->train.lora_rank > 0 ? "train.lora_rank > 0 (LoRA)"
			   : c->distill.teacher[0] ? "distill.teacher (distillation)"
			   : c->dist.sync == LT_SYNC_LOCAL ? "dist.sync = local (local SGD)" : NULL;
	if (pp == 1)
		return LT_OK;
	if (with) {
		lt_errmsg_set("dist.pp = %d with %s: not supported together; use dist.pp = 1", pp,
			      with);
		return LT_ERR_CONFIG;
	}
	if (c->train.grad_accum < pp) {
		lt_errmsg_set("dist.pp = %d with train.grad_accum = %d: the pipeline needs at least "
			      "one micro-batch per stage", pp, c->train.grad_accum);
		return LT_ERR_CONFIG;
	}
	enum lt_status st = lt_model_pp_check(&c->model, pp);
	int *layers = malloc((size_t)pp * sizeof *layers);
	if (st == LT_OK && !layers) {
		lt_errmsg_set("cannot allocate the stages' table");
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK)
		st = lt_conf_pp_layers(c, layers);
	free(layers);
	return st;
}

enum lt_status lt_conf_pp_layers(const struct lt_conf *c, int *layers)
{
	const char *at = c->dist.pp_layers;
	int pp = c->dist.pp, sum = 0, n = 0;
	for (int s = 0; s < pp; s++)
		layers[s] = 0;
	if (!at[0])
		return LT_OK;
	for (;;) {
		char *end;
		long v = strtol(at, &end, 10);
		if (end == at || v < 1 || v > c->model.n_layers || (*end && *end != ',') || n == pp) {
			lt_errmsg_set("dist.pp_layers = \"%s\": expected dist.pp = %d counts of blocks, "
				      "each 1 or more, separated by commas", c->dist.pp_layers, pp);
			return LT_ERR_CONFIG;
		}
		layers[n++] = (int)v;
		sum += (int)v;
		if (!*end)
			break;
		at = end + 1;
	}
	if (n != pp || sum != c->model.n_layers) {
		lt_errmsg_set("dist.pp_layers = \"%s\": %d stage%s of %d blocks in all; the model has "
			      "%d layers over dist.pp = %d stages", c->dist.pp_layers, n,
			      n == 1 ? "" : "s", sum, c->model.n_layers, pp);
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

enum lt_status lt_conf_check(const struct lt_conf *c)
{
	const struct lt_conf_train *t = &c->train;
	enum lt_status st = lt_model_config_check(&c->model);
	if (st != LT_OK)
		return st;
	if (t->seq > c->model.max_seq) {
		lt_errmsg_set("train.seq = %d exceeds model.max_seq = %d; lower train.seq or raise "
			      "model.max_seq", t->seq, c->model.max_seq);
		return LT_ERR_CONFIG;
	}
	if ((long long)t->batch * t->seq > INT_MAX) {
		lt_errmsg_set("train.batch x train.seq = %lld tokens: at most %d fit in a "
			      "micro-batch", (long long)t->batch * t->seq, INT_MAX);
		return LT_ERR_CONFIG;
	}
	if (t->micro_batch > 0 && ((long long)t->batch * t->grad_accum) % t->micro_batch) {
		lt_errmsg_set("train.micro_batch = %d does not divide the step's train.batch x "
			      "train.grad_accum = %lld sequences", t->micro_batch,
			      (long long)t->batch * t->grad_accum);
		return LT_ERR_CONFIG;
	}
	if (t->optim.min_lr > t->optim.lr) {
		lt_errmsg_set("train.min_lr = %g exceeds train.lr = %g: the decay would raise the "
			      "rate; lower train.min_lr", t->optim.min_lr, t->optim.lr);
		return LT_ERR_CONFIG;
	}
	if (t->optim.total_steps != t->steps) {
		lt_errmsg_set("train.optim.total_steps = %d differs from train.steps = %d",
			      t->optim.total_steps, t->steps);
		return LT_ERR_CONFIG;
	}
	if (c->dist.round_seconds > 0 && c->dist.sync != LT_SYNC_LOCAL) {
		lt_errmsg_set("dist.round_seconds = %g with dist.sync = step: rounds of wall time "
			      "are local SGD's; use dist.sync = local", c->dist.round_seconds);
		return LT_ERR_CONFIG;
	}
	if (c->dist.round_seconds > 0 && c->dist.deterministic) {
		lt_errmsg_set("dist.round_seconds = %g with dist.deterministic: the clock decides "
			      "each node's steps, so no two runs repeat; use dist.local_steps",
			      c->dist.round_seconds);
		return LT_ERR_CONFIG;
	}
	if (c->dist.zero == 3 && c->dist.sync == LT_SYNC_LOCAL) {
		lt_errmsg_set("dist.sync = local with dist.zero = 3: the outer step moves each "
			      "node's whole parameters, which stage 3 shards; use dist.zero <= 2");
		return LT_ERR_CONFIG;
	}
	if (c->dist.zero == 3 && t->lora_rank > 0) {
		lt_errmsg_set("dist.zero = 3 with train.lora_rank = %d: LoRA trains only the "
			      "adapters, which stage 2 already shards; use dist.zero <= 2",
			      t->lora_rank);
		return LT_ERR_CONFIG;
	}
	if ((st = check_tensor_parallel(c)) != LT_OK || (st = check_pipeline(c)) != LT_OK)
		return st;
	struct lt_lora lora;
	return lt_conf_lora(c, &lora);
}

enum lt_status lt_conf_lora(const struct lt_conf *c, struct lt_lora *out)
{
	static const char *const names[LT_LORA_TARGETS] = { "q", "k", "v", "o", "gate", "up",
							    "down" };
	const char *p = c->train.lora_targets;
	*out = (struct lt_lora){ .rank = c->train.lora_rank, .alpha = c->train.lora_alpha,
				 .dropout = c->train.lora_dropout, .base = c->train.lora_base };
	enum lt_dtype type = lt_lora_base_type(out->base, c->train.precision);
	if (out->base != LT_LORA_BASE_AUTO && out->rank <= 0) {
		lt_errmsg_set("train.lora_base = %s needs train.lora_rank > 0: only a LoRA run has a "
			      "frozen base", lt_dtype_name(type));
		return LT_ERR_CONFIG;
	}
	if (lt_dtype_is_block(type) && (c->model.dim % LT_QBLOCK || c->model.ffn_dim % LT_QBLOCK)) {
		int dim = c->model.dim % LT_QBLOCK != 0;
		lt_errmsg_set("train.lora_base = %s: model.%s = %d is not a multiple of %d, the "
			      "width of a block, which each quantized matrix's input must be",
			      lt_dtype_name(type), dim ? "dim" : "ffn_dim",
			      dim ? c->model.dim : c->model.ffn_dim, LT_QBLOCK);
		return LT_ERR_CONFIG;
	}
	while (*p) {
		size_t n = strcspn(p, ",");
		int t = 0;
		while (t < LT_LORA_TARGETS && (strlen(names[t]) != n || strncmp(p, names[t], n)))
			t++;
		if (t == LT_LORA_TARGETS || (out->targets >> t & 1u)) {
			lt_errmsg_set("train.lora_targets = '%s': '%.*s' is %s (expected a comma list "
				      "of q, k, v, o, gate, up, down)", c->train.lora_targets, (int)n,
				      p, t == LT_LORA_TARGETS ? "not a target" : "named twice");
			return LT_ERR_CONFIG;
		}
		out->targets |= 1u << t;
		p += n + (p[n] == ',');
	}
	if (out->rank > 0 && !out->targets) {
		lt_errmsg_set("train.lora_rank = %d with train.lora_targets empty: name at least one "
			      "of q, k, v, o, gate, up, down", out->rank);
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

/* --------------------------------------------------------------- writing */

/* The shortest "%.Ng" text of v that reads back (through parse_real and,
 * for a float, the cast) to the same bits. */
static void format_real(double v, int is_float, char *buf, size_t cap)
{
	for (int digits = is_float ? 6 : 15; digits <= 17; digits++) {
		double back;
		snprintf(buf, cap, "%.*g", digits, v);
		if (!parse_real(buf, &back))
			continue;
		if (is_float) {
			float a = (float)back, b = (float)v;
			if (!memcmp(&a, &b, sizeof a))
				return;
		} else if (!memcmp(&back, &v, sizeof v)) {
			return;
		}
	}
}

void lt_conf_format(const struct lt_conf *c, const struct lt_conf_key *k, char *buf, size_t cap)
{
	const void *p = const_field_of(c, k);
	int i;
	long l;
	uint64_t u;
	float f;
	double d;

	switch (k->type) {
	case LT_CONF_INT:
		if (k->size == sizeof(int)) {
			memcpy(&i, p, sizeof i);
			l = i;
		} else {
			memcpy(&l, p, sizeof l);
		}
		if (k->takes_auto && l == LT_CONF_AUTO)
			snprintf(buf, cap, "auto");
		else
			snprintf(buf, cap, "%ld", l);
		break;
	case LT_CONF_INT64:
		memcpy(&u, p, sizeof u);
		snprintf(buf, cap, "%" PRIu64, u);
		break;
	case LT_CONF_FLOAT:
		memcpy(&f, p, sizeof f);
		if (k->takes_auto && isnan(f))
			snprintf(buf, cap, "auto");
		else
			format_real((double)f, 1, buf, cap);
		break;
	case LT_CONF_DOUBLE:
		memcpy(&d, p, sizeof d);
		format_real(d, 0, buf, cap);
		break;
	case LT_CONF_BOOL:
		memcpy(&i, p, sizeof i);
		snprintf(buf, cap, "%s", i ? "true" : "false");
		break;
	case LT_CONF_ENUM:
		memcpy(&i, p, sizeof i);
		snprintf(buf, cap, "%d", i); /* out of range: refused when read back */
		for (int j = 0; k->choices[j]; j++)
			if (j == i)
				snprintf(buf, cap, "%s", k->choices[j]);
		break;
	case LT_CONF_STRING:
		snprintf(buf, cap, "%.*s", (int)strnlen(p, k->size), (const char *)p);
		break;
	}
}

enum lt_status lt_conf_write(const struct lt_conf *c, FILE *f)
{
	char value[LT_CONF_VALUE_CAP];
	const char *section = "";

	fprintf(f, "; lltrain configuration: every key, as lltrain.conf(5) describes them.\n");
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++) {
		if (strcmp(section, k->section)) {
			section = k->section;
			fprintf(f, "\n; %s\n[%s]\n", lt_conf_section_doc(section), section);
		}
		lt_conf_format(c, k, value, sizeof value);
		fprintf(f, "%s =%s%s\n", k->name, value[0] ? " " : "", value);
	}
	if (fflush(f) != 0 || ferror(f)) {
		lt_errmsg_set("cannot write the configuration: %s", strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

enum lt_status lt_conf_to_string(const struct lt_conf *c, char **out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	enum lt_status st;

	*out = NULL;
	if (!f) {
		lt_errmsg_set("cannot open a memory stream for the configuration: %s",
			      strerror(errno));
		return LT_ERR_NOMEM;
	}
	st = lt_conf_write(c, f);
	if (fclose(f) != 0 && st == LT_OK) {
		lt_errmsg_set("cannot write the configuration to memory: %s", strerror(errno));
		st = LT_ERR_NOMEM;
	}
	if (st != LT_OK) {
		free(buf);
		return st;
	}
	*out = buf;
	return LT_OK;
}

/* ------------------------------------------------------- command line */

enum arg_kind { ARG_PRESET, ARG_CONFIG, ARG_KEY };

/* One config option found in argv: its kind, "--name" and value. */
struct conf_arg {
	enum arg_kind kind;
	char option[64];
	const char *value;
};

/* Classifies "--preset", "--config", "--a.b" (each with or without
 * "=VALUE"); 0 for any other argument. */
static int classify(const char *arg, struct conf_arg *a)
{
	const char *body = arg + 2, *eq;
	size_t len;
	if (strncmp(arg, "--", 2) || !body[0])
		return 0;
	eq = strchr(body, '=');
	len = eq ? (size_t)(eq - body) : strlen(body);
	if (len == 6 && !strncmp(body, "preset", len))
		a->kind = ARG_PRESET;
	else if (len == 6 && !strncmp(body, "config", len))
		a->kind = ARG_CONFIG;
	else if (memchr(body, '.', len))
		a->kind = ARG_KEY;
	else
		return 0;
	snprintf(a->option, sizeof a->option, "--%.*s", (int)len, body);
	a->value = eq ? eq + 1 : NULL;
	return 1;
}

static enum lt_status apply_one(struct lt_conf *c, const struct conf_arg *a)
{
	char names[96];
	enum lt_status st;
	switch (a->kind) {
	case ARG_PRESET:
		st = lt_conf_apply_preset(c, a->value);
		if (st != LT_OK) {
			lt_conf_list_presets(names, sizeof names);
			lt_errmsg_set("--preset '%s': unknown (expected %s)", a->value, names);
			return LT_ERR_ARG;
		}
		return LT_OK;
	case ARG_CONFIG:
		return lt_conf_apply_file(c, a->value);
	case ARG_KEY:
		st = lt_conf_set(c, a->option + 2, a->value, a->option);
		return st == LT_OK ? LT_OK : LT_ERR_ARG;
	}
	return LT_OK;
}

enum lt_status lt_conf_apply_args(struct lt_conf *c, int *argc, char **argv)
{
	int n = *argc, found = 0, kept = 1;
	struct conf_arg *args = calloc((size_t)n + 1, sizeof *args);
	char *taken = calloc((size_t)n + 1, 1);
	struct lt_conf work = *c;
	enum lt_status st = LT_OK;

	if (!args || !taken) {
		lt_errmsg_set("cannot allocate room for %d arguments", n);
		st = LT_ERR_NOMEM;
		goto out;
	}
	for (int i = 1; i < n && strcmp(argv[i], "--"); i++) {
		struct conf_arg *a = &args[found];
		if (!classify(argv[i], a))
			continue;
		taken[i] = 1;
		if (!a->value) {
			if (i + 1 >= n) {
				lt_errmsg_set("%s: expected %s after it", a->option,
					      a->kind == ARG_PRESET ? "a preset name" :
					      a->kind == ARG_CONFIG ? "a file" : "a value");
				st = LT_ERR_ARG;
				goto out;
			}
			a->value = argv[++i];
			taken[i] = 1;
		}
		found++;
	}
	for (enum arg_kind kind = ARG_PRESET; kind <= ARG_KEY && st == LT_OK; kind++)
		for (int j = 0; j < found && st == LT_OK; j++)
			if (args[j].kind == kind)
				st = apply_one(&work, &args[j]);
	if (st != LT_OK)
		goto out;
	for (int i = 1; i < n; i++)
		if (!taken[i])
			argv[kept++] = argv[i];
	if (n > 0) {
		argv[kept] = NULL;
		*argc = kept;
	}
	*c = work;
out:
	free(args);
	free(taken);
	return st;
}

/* ------------------------------------------------------- number options */

enum lt_status lt_parse_long(const char *origin, const char *text, long min, long max, long *out)
{
	long v;
	if (!parse_signed(text, &v) || v < min || v > max) {
		lt_errmsg_set("%s '%s': expected an integer in [%ld, %ld]", origin, text, min, max);
		return LT_ERR_ARG;
	}
	*out = v;
	return LT_OK;
}

enum lt_status lt_parse_double(const char *origin, const char *text, double min, double max,
			       double *out)
{
	double v;
	if (!parse_real(text, &v) || !(v >= min && v <= max)) {
		lt_errmsg_set("%s '%s': expected a number in [%.15g, %.15g]", origin, text, min,
			      max);
		return LT_ERR_ARG;
	}
	*out = v;
	return LT_OK;
}

/* Tests of the configuration: the defaults and each preset against the
 * values they must hold, INI files over them, precedence of presets, files
 * and options, an exact write/read round trip of every key, each bad input
 * refused with its file:line, key and expected range, the command-line
 * options taken out of argv, the cross-key checks, and the number parsers. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdtemp under -std=c11 */
#endif
#include "conf.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embed.h"
#include "tap.h"

static char dir[4096];
static char made[40][4200];
static int n_made;

/* Writes text to dir/name (remembered for removal); returns the path. */
static const char *write_ini(const char *name, const char *text)
{
	char *path = made[n_made < 39 ? n_made++ : 39];
	snprintf(path, sizeof made[0], "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		tap_diag("cannot write %s", path);
	return path;
}

static int contains(const char *s, const char *part)
{
	return strstr(s, part) != NULL;
}

/* The bytes of one key's field in two configs are the same. */
static int same_field(const struct lt_conf *a, const struct lt_conf *b, const struct lt_conf_key *k)
{
	return !memcmp((const char *)a + k->offset, (const char *)b + k->offset, k->size);
}

/* The keys whose fields differ, listed into buf; 0 when none do. */
static int differing_keys(const struct lt_conf *a, const struct lt_conf *b, char *buf, size_t cap)
{
	int n = 0;
	size_t len = 0;
	buf[0] = '\0';
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++) {
		if (same_field(a, b, k))
			continue;
		n++;
		if (len < cap)
			len += (size_t)snprintf(buf + len, cap - len, " %s.%s", k->section,
						k->name);
	}
	return n;
}

static void check_defaults(void)
{
	struct lt_conf d, t;
	char diff[512];
	lt_conf_defaults(&d);
	t = d;
	tap_ok(lt_conf_apply_preset(&t, "tiny") == LT_OK &&
	       differing_keys(&d, &t, diff, sizeof diff) == 0,
	       "the defaults are the tiny preset's model and batch shape (differing:%s)", diff);
	/* the values of the specification, one by one */
	const struct lt_model_config *m = &d.model;
	tap_ok(m->vocab_size == 4096 && m->dim == 192 && m->n_layers == 4 && m->n_heads == 6 &&
	       m->n_kv_heads == 6 && m->ffn_dim == 512 && m->max_seq == 128 && m->tied == 1 &&
	       m->rope_theta == 10000.0f && m->norm_eps == 1e-5f && d.train.batch == 16 &&
	       d.train.seq == 128, "the default model is dim 192, 4 layers, 6 heads, tied");
	const struct lt_conf_train *tr = &d.train;
	tap_ok(tr->grad_accum == 1 && tr->steps == 600 && tr->max_minutes == 5.0 &&
	       tr->optim.lr == 2e-3f && tr->optim.min_lr == 2e-4f && tr->optim.warmup_steps == 50 &&
	       tr->optim.schedule == LT_SCHED_COSINE && tr->optim.beta1 == 0.9f &&
	       tr->optim.beta2 == 0.95f && tr->optim.eps == 1e-8f &&
	       tr->optim.weight_decay == 0.1f && tr->optim.grad_clip == 1.0f && tr->seed == 1 &&
	       tr->max_bad_steps == 10 && tr->optim.total_steps == 600,
	       "the [train] defaults are those specified, total_steps = steps");
	tap_ok(!strcmp(d.data.dir, "") && !strcmp(d.data.corpus, "/usr/share/games/fortunes") &&
	       !strcmp(d.data.doc_separator, "%") && d.data.vocab_size == 0 &&
	       d.data.val_fraction == 0.05 && d.data.shard_tokens == 100000000L,
	       "the [data] defaults are those specified");
	const struct lt_conf_run *r = &d.run;
	tap_ok(!strcmp(r->dir, "runs/default") && !strcmp(r->device, "cpu") && r->threads == 0 &&
	       r->log_every == 50 && r->eval_every == 200 && r->eval_batches == 16 &&
	       r->sample_every == 0 && r->sample_tokens == 200 && r->checkpoint_every == 200 &&
	       r->keep_checkpoints == 3 && r->tensorboard == 1,
	       "the [run] defaults are those specified");
	tap_ok(lt_conf_check(&d) == LT_OK, "the defaults pass lt_conf_check ('%s')",
	       lt_conf_check(&d) == LT_OK ? "" : lt_errmsg());
}

struct preset_values {
	const char *name;
	int vocab, dim, layers, heads, kv, ffn, max_seq, tied, batch, seq;
};

static void check_presets(void)
{
	static const struct preset_values want[] = {
		{ "tiny", 4096, 192, 4, 6, 6, 512, 128, 1, 16, 128 },
		{ "15M", 32000, 288, 6, 6, 6, 768, 256, 1, 8, 256 },
		{ "110M", 32000, 768, 12, 12, 12, 2048, 1024, 1, 8, 1024 },
		{ "1B", 32000, 2048, 22, 32, 4, 5632, 2048, 0, 4, 2048 },
		{ "7B", 32000, 4096, 32, 32, 32, 11008, 4096, 0, 1, 4096 },
	};
	const char *const *names = lt_conf_preset_names();
	int in_order = 1, n = 0;
	for (; names[n]; n++)
		if (n >= 5 || strcmp(names[n], want[n].name))
			in_order = 0;
	tap_ok(in_order && n == 5, "the preset names are tiny, 15M, 110M, 1B, 7B in size order");
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct preset_values *w = &want[i];
		struct lt_conf c;
		lt_conf_defaults(&c);
		c.train.optim.lr = 0.5f; /* a key no preset sets stays */
		enum lt_status st = lt_conf_apply_preset(&c, w->name);
		const struct lt_model_config *m = &c.model;
		tap_ok(st == LT_OK && m->vocab_size == w->vocab && m->dim == w->dim &&
		       m->n_layers == w->layers && m->n_heads == w->heads &&
		       m->n_kv_heads == w->kv && m->ffn_dim == w->ffn && m->max_seq == w->max_seq &&
		       m->tied == w->tied && m->rope_theta == 10000.0f && m->norm_eps == 1e-5f &&
		       c.train.batch == w->batch && c.train.seq == w->seq &&
		       c.train.optim.lr == 0.5f,
		       "preset %s has its shape and batch %d x seq %d, other keys untouched",
		       w->name, w->batch, w->seq);
		c.train.optim.lr = 2e-3f;
		const char *recognised = lt_conf_preset_of(&c);
		tap_ok(lt_conf_check(&c) == LT_OK && recognised && !strcmp(recognised, w->name),
		       "preset %s passes lt_conf_check and is recognised", w->name);
	}
	int all_named = 1;
	for (const struct lt_embedded *e = lt_embedded_presets; e->name; e++) {
		int found = 0;
		for (int i = 0; names[i]; i++)
			found |= strlen(e->name) == strlen(names[i]) + 5 &&
				 !strncmp(e->name, names[i], strlen(names[i]));
		all_named &= found;
	}
	tap_ok(all_named, "every embedded data/presets file is a named preset");

	struct lt_conf c, before;
	lt_conf_defaults(&c);
	tap_ok(lt_conf_apply_preset(&c, "15m") == LT_OK && c.model.dim == 288,
	       "preset names are case-insensitive");
	c.train.batch = 1;
	const char *same = lt_conf_preset_of(&c);
	c.model.n_layers = 5;
	const char *other = lt_conf_preset_of(&c);
	tap_ok(same && !strcmp(same, "15M") && !other,
	       "a preset's model is recognised whatever the batch, not with another layer count");
	lt_conf_defaults(&c);
	before = c;
	enum lt_status st = lt_conf_apply_preset(&c, "huge");
	tap_ok(st == LT_ERR_NOTFOUND && contains(lt_errmsg(), "'huge'") &&
	       contains(lt_errmsg(), "tiny, 15M, 110M, 1B or 7B") && !memcmp(&c, &before, sizeof c),
	       "an unknown preset is refused with the names: '%s'", lt_errmsg());
}

static void check_file_over_defaults(void)
{
	const char *path = write_ini("over.ini",
		"; a comment\n"
		"# another\n"
		"\n"
		"[train]\n"
		"  lr = 0.01   ; inline comment\n"
		"\tbatch=4\n"
		"  ; an indented comment\n"
		"schedule = LINEAR\n"
		"steps = 1000\n"
		"[model]\n"
		"tied = off\n"
		"n_layers = 2\n"
		"[data]\n"
		"  doc_separator =\n"
		"  corpus = /srv/text=a:b#c\n"
		"[run]\n"
		"device = opencl:0.1\n");
	struct lt_conf c, d;
	lt_conf_defaults(&c);
	lt_conf_defaults(&d);
	enum lt_status st = lt_conf_apply_file(&c, path);
	tap_ok(st == LT_OK, "an INI file with comments, spaces and indented keys is read ('%s')",
	       st == LT_OK ? "" : lt_errmsg());
	tap_ok(c.train.optim.lr == 0.01f && c.train.batch == 4 &&
	       c.train.optim.schedule == LT_SCHED_LINEAR && c.train.steps == 1000 &&
	       c.train.optim.total_steps == 1000 && c.model.tied == 0 && c.model.n_layers == 2 &&
	       !strcmp(c.data.doc_separator, "") && !strcmp(c.data.corpus, "/srv/text=a:b#c") &&
	       !strcmp(c.run.device, "opencl:0.1"),
	       "its keys are set, total_steps follows steps");
	tap_ok(c.model.dim == d.model.dim && c.train.seq == d.train.seq &&
	       c.train.optim.min_lr == d.train.optim.min_lr && !strcmp(c.run.dir, d.run.dir),
	       "the keys it does not name keep their values");
}

static void check_precedence(void)
{
	const char *path = write_ini("prec.ini", "[train]\nbatch = 5\nlr = 0.003\n"
				     "[model]\nn_layers = 3\n");
	const char *second = write_ini("prec2.ini", "[model]\nn_layers = 7\n");
	char a0[] = "train", a1[] = "--train.batch=3", a2[] = "--config", a4[] = "--preset",
	     a5[] = "15M", a6[] = "corpus.txt", a7[4300];
	snprintf(a7, sizeof a7, "--config=%s", second);
	char *argv[] = { a0, a1, a2, (char *)path, a4, a5, a6, a7, NULL };
	int argc = 8;
	struct lt_conf c;
	lt_conf_defaults(&c);
	enum lt_status st = lt_conf_apply_args(&c, &argc, argv);
	tap_ok(st == LT_OK && c.model.dim == 288 && c.model.vocab_size == 32000,
	       "--preset applies under later files and options, wherever it stands ('%s')",
	       st == LT_OK ? "" : lt_errmsg());
	tap_ok(c.train.optim.lr == 0.003f && c.model.n_layers == 7,
	       "--config files apply over the preset, in their order (n_layers %d)",
	       c.model.n_layers);
	tap_ok(c.train.batch == 3, "--section.key wins over files and presets (batch %d)",
	       c.train.batch);
	tap_ok(argc == 2 && !strcmp(argv[0], "train") && !strcmp(argv[1], "corpus.txt") &&
	       argv[2] == NULL, "only the other arguments stay in argv");
}

/* Values away from every default and at the edges of ranges, for each key. */
static void set_unusual_values(struct lt_conf *c)
{
	static const char *const texts[][2] = {
		{ "model.vocab_size", "16777216" }, { "model.dim", "65536" },
		{ "model.n_layers", "1" }, { "model.n_heads", "1024" }, { "model.n_kv_heads", "3" },
		{ "model.head_dim", "65536" },
		{ "model.ffn_dim", "1048576" }, { "model.max_seq", "7" }, { "model.tied", "no" },
		{ "train.batch", "65536" }, { "train.seq", "1048576" }, { "train.grad_accum", "9" },
		{ "train.steps", "1000000000" }, { "train.warmup_steps", "0" },
		{ "train.schedule", "constant" }, { "train.max_bad_steps", "1" },
		{ "train.matmul", "tf32" }, { "train.recompute", "block" },
		{ "train.precision", "bf16" }, { "train.init", "/models/x y;z" },
		{ "model.rope_scaling", "llama3" }, { "model.rope_factor", "1" },
		{ "model.rope_low_freq_factor", "3" }, { "model.rope_high_freq_factor", "1000000" },
		{ "model.rope_original_max_seq", "1" },
		{ "train.lora_rank", "65536" }, { "train.lora_targets", "down,q" },
		{ "train.lora_base", "q4_0" },
		{ "data.dir", "/tmp/a b/c;d" }, { "data.corpus", "x=y: #z" },
		{ "data.doc_separator", "" }, { "data.vocab_size", "16777216" },
		{ "data.shard_tokens", "1000000000000" }, { "run.dir", "r" },
		{ "run.device", "opencl:1.2" }, { "run.threads", "4096" }, { "run.log_every", "1" },
		{ "run.eval_every", "0" }, { "run.eval_batches", "1000000" },
		{ "run.sample_every", "1000000000" }, { "run.sample_tokens", "1" },
		{ "run.checkpoint_every", "0" }, { "run.keep_checkpoints", "1000000" },
		{ "run.tensorboard", "off" },
		{ "train.seed", "18446744073709551615" }, { "dist.zero", "2" }, { "dist.tp", "4096" },
		{ "dist.pp", "4096" }, { "dist.pp_layers", "1,2,3" }, { "dist.pp_ahead", "64" },
		{ "dist.balance", "auto" }, { "dist.balance_every", "0" },
		{ "dist.deterministic", "yes" },
		{ "dist.exchange", "mpi" },
		{ "distill.teacher", "/runs/t e;a=cher" }, { "distill.alpha", "1" },
		{ "dist.sync", "local" }, { "dist.local_steps", "1000000" },
		{ "dist.outer_overlap", "yes" }, { "dist.outer_dtype", "bf16" },
		{ "train.micro_batch", "auto" },
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
		if (lt_conf_set(c, texts[i][0], texts[i][1], texts[i][0]) != LT_OK)
			tap_diag("setting %s: %s", texts[i][0], lt_errmsg());
	/* floats and doubles whose shortest text needs every digit */
	c->model.rope_theta = nextafterf(10000.0f, 1e9f);
	c->model.norm_eps = FLT_MIN / 3; /* subnormal */
	c->train.optim.lr = nextafterf(0.1f, 0.0f);
	c->train.optim.min_lr = 0.0f;
	c->train.optim.beta1 = nextafterf(1.0f, 0.0f);
	c->train.optim.beta2 = 1.0f / 3.0f;
	c->train.optim.eps = 1e-30f;
	c->train.optim.weight_decay = 10.0f;
	c->train.optim.grad_clip = 123456.789f;
	c->train.lora_alpha = nextafterf(16.0f, 0.0f);
	c->train.lora_dropout = nextafterf(1.0f, 0.0f);
	c->train.max_minutes = 0.1 + 0.2;
	c->data.val_fraction = 1.0 / 3.0;
	c->dist.comm_timeout = 86400.0 / 7.0;
	c->distill.temperature = nextafterf(2.0f, 0.0f);
	c->dist.outer_lr = 1.0 / 3.0;
	c->dist.round_seconds = 1.0 / 3.0;
	c->dist.outer_momentum = nextafter(1.0, 0.0);
	c->run.mem_limit = 1.0 / 7.0;
}

static void check_round_trip(void)
{
	struct lt_conf c, back, back2;
	char diff[1024], *text = NULL;
	lt_conf_defaults(&c);
	set_unusual_values(&c);
	lt_conf_defaults(&back);
	lt_conf_defaults(&back2);
	int n_keys = 0, n_changed = 0;
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++, n_keys++)
		n_changed += !same_field(&c, &back, k);
	tap_ok(n_changed == n_keys, "the round-trip config differs from the defaults in all %d "
	       "of %d keys", n_changed, n_keys);

	const char *path = write_ini("written.ini", "");
	FILE *f = fopen(path, "w");
	enum lt_status st = f ? lt_conf_write(&c, f) : LT_ERR_IO;
	if (f)
		fclose(f);
	if (st == LT_OK)
		st = lt_conf_apply_file(&back, path);
	tap_ok(st == LT_OK && differing_keys(&c, &back, diff, sizeof diff) == 0 &&
	       back.train.optim.total_steps == c.train.steps,
	       "lt_conf_write then lt_conf_apply_file gives every key back bit for bit "
	       "(%s; differing:%s)", st == LT_OK ? "read" : lt_errmsg(), diff);

	st = lt_conf_to_string(&c, &text);
	if (st == LT_OK)
		st = lt_conf_apply_string(&back2, text, "memory");
	tap_ok(st == LT_OK && differing_keys(&c, &back2, diff, sizeof diff) == 0,
	       "lt_conf_to_string then lt_conf_apply_string too (differing:%s)", diff);
	int sections = text && contains(text, "\n[model]\n") && contains(text, "\n[train]\n") &&
		       contains(text, "\n[data]\n") && contains(text, "\n[run]\n");
	int lines = 0, too_long = 0, comments = 0;
	for (char *p = text; p && *p;) {
		char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		lines++;
		too_long += len > LT_CONF_LINE_MAX;
		comments += len > 0 && p[0] == ';';
		p = nl ? nl + 1 : p + len;
	}
	tap_ok(sections && comments >= 5 && !too_long && lines >= n_keys + 8,
	       "the text has the four sections, a comment over each, and short lines");
	free(text);

	/* the default config reads back the same from its text */
	struct lt_conf d, d2;
	lt_conf_defaults(&d);
	d2 = c;
	text = NULL;
	st = lt_conf_to_string(&d, &text);
	if (st == LT_OK)
		st = lt_conf_apply_string(&d2, text, "defaults");
	tap_ok(st == LT_OK && differing_keys(&d, &d2, diff, sizeof diff) == 0 &&
	       text && contains(text, "\nlr = 0.002\n") && contains(text, "\neps = 1e-08\n") &&
	       contains(text, "\ndir =\n"),
	       "the defaults' text overwrites every key, in the shortest exact form "
	       "(differing:%s)", diff);
	free(text);
}

/* An INI text that must be refused, with the parts its message must hold. */
struct bad_ini {
	const char *what, *text;
	const char *line, *part1, *part2;
};

static void check_bad_files(void)
{
	static const struct bad_ini cases[] = {
		{ "an unknown section", "[train]\nbatch = 4\n[modle]\n", ":3:", "[modle]",
		  "unknown section (expected model, train, data, run, dist or distill)" },
		{ "an unknown key", "[train]\nbacth = 4\n", ":2:", "[train] bacth", "unknown key" },
		{ "text for an integer", "[train]\n\nbatch = abc\n", ":3:", "[train] batch = 'abc'",
		  "expected an integer in [1, 65536]" },
		{ "a fraction for an integer", "[model]\ndim = 1.5\n", ":2:", "[model] dim = '1.5'",
		  "expected an integer in [1, 65536]" },
		{ "a word for a boolean", "[model]\ntied = maybe\n", ":2:",
		  "[model] tied = 'maybe'",
		  "expected a boolean (true, false, yes, no, on, off, 1 or 0)" },
		{ "an integer out of range", "; c\n[train]\nbatch = 65537\n", ":3:",
		  "[train] batch = '65537'", "expected an integer in [1, 65536]" },
		{ "a zero learning rate", "[train]\nlr = 0\n", ":2:", "[train] lr = '0'",
		  "expected a number in (0, 10]" },
		{ "a beta of 1", "[train]\nbeta2 = 1\n", ":2:", "[train] beta2 = '1'",
		  "expected a number in [0, 1)" },
		{ "a value past a float's range", "[train]\neps = 1e-50\n", ":2:",
		  "[train] eps = '1e-50'", "expected a number in (0, 1]" },
		{ "not a number", "[data]\nval_fraction = nan\n", ":2:", "val_fraction = 'nan'",
		  "expected a number in [0, 0.5]" },
		{ "a negative seed", "[train]\nseed = -1\n", ":2:", "[train] seed = '-1'",
		  "expected an integer in [0, 18446744073709551615]" },
		{ "a bad schedule", "[train]\nschedule = cosin\n", ":2:", "schedule = 'cosin'",
		  "expected one of cosine, linear or constant" },
		{ "an empty run directory", "[run]\ndir =\n", ":2:", "[run] dir = ''",
		  "non-empty text" },
		{ "a line that is not INI", "[train]\nbatch 4\n", ":2:",
		  "expected [section], key = value", "comment" },
		{ "a key before any section", "batch = 4\n", ":1:", "batch",
		  "before any [section]" },
		{ "the first of two errors", "[train]\nbatch = 0\nseq = 0\n", ":2:",
		  "[train] batch = '0'", "[1, 65536]" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char name[32], place[4300];
		snprintf(name, sizeof name, "bad%zu.ini", i);
		const char *path = write_ini(name, cases[i].text);
		snprintf(place, sizeof place, "%s%s", path, cases[i].line);
		struct lt_conf c, before;
		lt_conf_defaults(&c);
		before = c;
		lt_errmsg_clear();
		enum lt_status st = lt_conf_apply_file(&c, path);
		tap_ok(st == LT_ERR_CONFIG && !strncmp(lt_errmsg(), place, strlen(place)) &&
		       contains(lt_errmsg(), cases[i].part1) &&
		       contains(lt_errmsg(), cases[i].part2) &&
		       !memcmp(&c, &before, sizeof c),
		       "%s is refused naming file:line, key and what was expected: '%s'",
		       cases[i].what, lt_errmsg());
	}

	struct lt_conf c, before;
	lt_conf_defaults(&c);
	before = c;
	const char *partly = write_ini("partly.ini", "[train]\nbatch = 2\nlr = 0.01\nsteps = x\n");
	enum lt_status st = lt_conf_apply_file(&c, partly);
	tap_ok(st == LT_ERR_CONFIG && !memcmp(&c, &before, sizeof c) &&
	       contains(lt_errmsg(), ":4:"),
	       "a file with one bad line changes nothing, not even its good lines");

	char longline[400];
	snprintf(longline, sizeof longline, "[data]\ncorpus = /%0250d\n", 0);
	const char *lpath = write_ini("long.ini", longline);
	st = lt_conf_apply_file(&c, lpath);
	tap_ok(st == LT_ERR_CONFIG &&
	       contains(lt_errmsg(), ":2: the line is 260 characters long") &&
	       contains(lt_errmsg(), "198"), "a line too long for inih is refused: '%s'",
	       lt_errmsg());

	char missing[4200];
	snprintf(missing, sizeof missing, "%s/absent.ini", dir);
	st = lt_conf_apply_file(&c, missing);
	tap_ok(st == LT_ERR_IO && contains(lt_errmsg(), missing) &&
	       contains(lt_errmsg(), "No such file or directory"),
	       "a missing file is named: '%s'", lt_errmsg());
}

/* train.lr = auto: NAN in the struct, "auto" in the text, both ways. */
static void check_lr_auto(void)
{
	struct lt_conf c, back;
	char value[64], *text = NULL;
	lt_conf_defaults(&c);
	lt_conf_defaults(&back);
	enum lt_status st = lt_conf_set(&c, "train.lr", "auto", "--train.lr");
	lt_conf_format(&c, lt_conf_find("train", "lr"), value, sizeof value);
	if (st == LT_OK)
		st = lt_conf_to_string(&c, &text);
	if (st == LT_OK)
		st = lt_conf_apply_string(&back, text, "memory");
	tap_ok(st == LT_OK && isnan(c.train.optim.lr) && !strcmp(value, "auto") &&
	       contains(text, "\nlr = auto\n") && isnan(back.train.optim.lr) &&
	       lt_conf_check(&c) == LT_OK,
	       "train.lr = auto is NAN, written back as auto and read again (%s)",
	       st == LT_OK ? value : lt_errmsg());
	free(text);
	st = lt_conf_set(&c, "train.lr", "0", "--train.lr");
	tap_ok(st == LT_ERR_CONFIG &&
	       !strcmp(lt_errmsg(), "--train.lr '0': expected a number in (0, 10] or auto"),
	       "a bad train.lr says auto is allowed: '%s'", lt_errmsg());
	st = lt_conf_set(&c, "train.min_lr", "auto", "--train.min_lr");
	tap_ok(st == LT_ERR_CONFIG && !contains(lt_errmsg(), "or auto"),
	       "a key without auto refuses it: '%s'", lt_errmsg());
}

static void check_set(void)
{
	struct lt_conf c, before;
	lt_conf_defaults(&c);
	before = c;
	enum lt_status st = lt_conf_set(&c, "train.batch", "0", "--train.batch");
	tap_ok(st == LT_ERR_CONFIG &&
	       !strcmp(lt_errmsg(), "--train.batch '0': expected an integer in [1, 65536]") &&
	       !memcmp(&c, &before, sizeof c), "a bad option value names the option: '%s'",
	       lt_errmsg());
	st = lt_conf_set(&c, "model.dimm", "3", "--model.dimm");
	tap_ok(st == LT_ERR_CONFIG && contains(lt_errmsg(), "--model.dimm: unknown key") &&
	       contains(lt_errmsg(), "dim,"),
	       "an unknown option key lists the section's keys: '%s'", lt_errmsg());
	st = lt_conf_set(&c, "nosection", "3", NULL);
	tap_ok(st == LT_ERR_CONFIG && contains(lt_errmsg(), "nosection: unknown section"),
	       "a name without a section is refused: '%s'", lt_errmsg());
	st = lt_conf_set(&c, "data.doc_separator", "a ;b", "--data.doc_separator");
	tap_ok(st == LT_ERR_CONFIG && contains(lt_errmsg(), "'a ;b': expected"),
	       "text that an INI line cannot carry is refused: '%s'", lt_errmsg());
	st = lt_conf_set(&c, "train.steps", "77", "--train.steps");
	tap_ok(st == LT_OK && c.train.steps == 77 && c.train.optim.total_steps == 77,
	       "setting train.steps sets the schedule's total_steps");
	st = lt_conf_set(&c, "train.seed", "18446744073709551616", "--train.seed");
	tap_ok(st == LT_ERR_CONFIG && contains(lt_errmsg(), "[0, 18446744073709551615]"),
	       "a seed past 2^64 - 1 is refused: '%s'", lt_errmsg());
	check_lr_auto();
}

static void check_apply_args(void)
{
	char a0[] = "train", a1[] = "--resume", a2[] = "auto", a3[] = "--train.lr=0.01",
	     a4[] = "--run.dir", a5[] = "somewhere", a6[] = "-x", a7[] = "--preset=1B",
	     a8[] = "--", a9[] = "--train.batch=2", a10[] = "file.txt";
	char *argv[] = { a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, NULL };
	int argc = 11;
	struct lt_conf c;
	lt_conf_defaults(&c);
	enum lt_status st = lt_conf_apply_args(&c, &argc, argv);
	tap_ok(st == LT_OK && c.train.optim.lr == 0.01f && !strcmp(c.run.dir, "somewhere") &&
	       c.model.dim == 2048 && c.train.batch == 4,
	       "the = and the separate forms apply; nothing after -- does");
	tap_ok(argc == 7 && argv[0] == a0 && argv[1] == a1 && argv[2] == a2 && argv[3] == a6 &&
	       argv[4] == a8 && argv[5] == a9 && argv[6] == a10 && argv[7] == NULL,
	       "the other arguments stay, in order, with -- and what follows it (argc %d)", argc);

	char b1[] = "--train.lr";
	char *argv2[] = { a0, b1, NULL };
	argc = 2;
	st = lt_conf_apply_args(&c, &argc, argv2);
	tap_ok(st == LT_ERR_ARG && !strcmp(lt_errmsg(), "--train.lr: expected a value after it") &&
	       argc == 2, "an option without its value is a usage error: '%s'", lt_errmsg());

	char c1[] = "--preset", c2[] = "huge";
	char *argv3[] = { a0, c1, c2, NULL };
	argc = 3;
	st = lt_conf_apply_args(&c, &argc, argv3);
	tap_ok(st == LT_ERR_ARG &&
	       !strcmp(lt_errmsg(), "--preset 'huge': unknown (expected tiny, 15M, 110M, 1B or 7B)"),
	       "an unknown --preset is a usage error naming the choices: '%s'", lt_errmsg());

	struct lt_conf before = c;
	char d1[] = "--train.lr=0.5", d2[] = "--train.beta1", d3[] = "1.5";
	char *argv4[] = { a0, d1, d2, d3, NULL };
	argc = 4;
	st = lt_conf_apply_args(&c, &argc, argv4);
	tap_ok(st == LT_ERR_ARG && !strcmp(lt_errmsg(), "--train.beta1 '1.5': expected a number "
	       "in [0, 1)") && !memcmp(&c, &before, sizeof c) && argc == 4,
	       "a bad option value is a usage error and changes nothing: '%s'", lt_errmsg());

	const char *bad = write_ini("args_bad.ini", "[train]\nwarmup_steps = -1\n");
	char e1[4300];
	snprintf(e1, sizeof e1, "--config=%s", bad);
	char *argv5[] = { a0, e1, NULL };
	argc = 2;
	st = lt_conf_apply_args(&c, &argc, argv5);
	tap_ok(st == LT_ERR_CONFIG && contains(lt_errmsg(), bad) && contains(lt_errmsg(), ":2:") &&
	       contains(lt_errmsg(), "[0, 1000000000]"),
	       "a bad --config file is bad input, its own message: '%s'", lt_errmsg());
}

static void check_cross_keys(void)
{
	struct lt_conf c;
	lt_conf_defaults(&c);
	c.train.seq = 256;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG &&
	       contains(lt_errmsg(), "train.seq = 256 exceeds model.max_seq = 128"),
	       "seq > max_seq is refused: '%s'", lt_errmsg());
	lt_conf_defaults(&c);
	c.model.dim = 200;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG &&
	       contains(lt_errmsg(), "model.dim = 200 is not divisible by model.n_heads = 6"),
	       "dim not divisible by n_heads is refused: '%s'", lt_errmsg());
	lt_conf_defaults(&c);
	c.train.optim.min_lr = 0.01f;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG && contains(lt_errmsg(), "train.min_lr") &&
	       contains(lt_errmsg(), "exceeds train.lr"), "min_lr > lr is refused: '%s'",
	       lt_errmsg());
	lt_conf_defaults(&c);
	c.train.steps = 10;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG && contains(lt_errmsg(), "total_steps = 600"),
	       "steps changed behind the setters is caught: '%s'", lt_errmsg());
	lt_conf_defaults(&c);
	c.train.batch = 65536;
	c.model.max_seq = c.train.seq = 65536;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG && contains(lt_errmsg(), "4294967296 tokens"),
	       "a micro-batch beyond an int of tokens is refused: '%s'", lt_errmsg());
	lt_conf_defaults(&c);
	c.dist.round_seconds = 30;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG &&
	       contains(lt_errmsg(), "dist.round_seconds = 30 with dist.sync = step"),
	       "rounds of seconds without local SGD are refused: '%s'", lt_errmsg());
	c.dist.sync = LT_SYNC_LOCAL;
	c.dist.deterministic = 1;
	tap_ok(lt_conf_check(&c) == LT_ERR_CONFIG &&
	       contains(lt_errmsg(), "dist.round_seconds = 30 with dist.deterministic"),
	       "rounds of seconds with --deterministic are refused: '%s'", lt_errmsg());
	c.dist.deterministic = 0;
	tap_ok(lt_conf_check(&c) == LT_OK, "rounds of seconds with local SGD pass: '%s'",
	       lt_conf_check(&c) == LT_OK ? "" : lt_errmsg());
}

static void check_number_parsers(void)
{
	long l = 0;
	double d = 0;
	tap_ok(lt_parse_long("--steps", "42", 1, 100, &l) == LT_OK && l == 42 &&
	       lt_parse_long("--n", "-3", -5, 5, &l) == LT_OK && l == -3,
	       "lt_parse_long reads integers in range");
	int bad = 0;
	const char *texts[] = { "many", "", "4x", " 4", "1.0", "101", "0", "99999999999999999999" };
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		char want[128];
		snprintf(want, sizeof want, "--steps '%s': expected an integer in [1, 100]",
			 texts[i]);
		l = 7;
		if (lt_parse_long("--steps", texts[i], 1, 100, &l) != LT_ERR_ARG ||
		    strcmp(lt_errmsg(), want) || l != 7) {
			tap_diag("'%s' gave '%s'", texts[i], lt_errmsg());
			bad++;
		}
	}
	tap_ok(!bad, "lt_parse_long refuses text, trailing junk, spaces, fractions, range");
	tap_ok(lt_parse_double("--temperature", "0.25", 0, 2, &d) == LT_OK && d == 0.25 &&
	       lt_parse_double("--x", "1e-3", 0, 1, &d) == LT_OK && d == 1e-3,
	       "lt_parse_double reads numbers in range");
	tap_ok(lt_parse_double("--temperature", "-1", 0, 2, &d) == LT_ERR_ARG &&
	       !strcmp(lt_errmsg(), "--temperature '-1': expected a number in [0, 2]") &&
	       lt_parse_double("--top-p", "nan", 0, 1, &d) == LT_ERR_ARG &&
	       lt_parse_double("--top-p", "0.5x", 0, 1, &d) == LT_ERR_ARG,
	       "lt_parse_double refuses out of range, NaN and junk: '%s'", lt_errmsg());
}

/* An integer key that takes auto keeps it apart from its numbers; one
 * that does not, and the number auto stands for, are refused. */
static void check_integer_auto(void)
{
	struct lt_conf c;
	char text[32];
	const struct lt_conf_key *k = lt_conf_find("train", "micro_batch");
	lt_conf_defaults(&c);
	enum lt_status a = lt_conf_set(&c, "train.micro_batch", "AUTO", NULL);
	int is_auto = c.train.micro_batch == LT_CONF_AUTO;
	lt_conf_format(&c, k, text, sizeof text);
	enum lt_status n = lt_conf_set(&c, "train.micro_batch", "8", NULL);
	tap_ok(a == LT_OK && is_auto && !strcmp(text, "auto") && n == LT_OK &&
	       c.train.micro_batch == 8, "train.micro_batch takes auto, written back as '%s', "
	       "and numbers", text);
	tap_ok(lt_conf_set(&c, "train.micro_batch", "-1", "--train.micro_batch") == LT_ERR_CONFIG &&
	       strstr(lt_errmsg(), "an integer in [0, 65536] or auto") &&
	       lt_conf_set(&c, "train.batch", "auto", "--train.batch") == LT_ERR_CONFIG &&
	       c.train.micro_batch == 8, "auto's stand-in -1, and auto for train.batch, are "
	       "refused: '%s'", lt_errmsg());
}

static void check_key_table(void)
{
	int ok = 1, n = 0;
	struct lt_conf d, back;
	lt_conf_defaults(&d);
	lt_conf_defaults(&back);
	set_unusual_values(&back);
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++, n++) {
		char value[1200], dotted[64];
		lt_conf_format(&d, k, value, sizeof value);
		snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->name);
		if (lt_conf_find(k->section, k->name) != k || !k->doc || !k->doc[0] ||
		    lt_conf_set(&back, dotted, value, NULL) != LT_OK) {
			tap_diag("key %s", dotted);
			ok = 0;
		}
	}
	char diff[512];
	tap_ok(ok && n == 80 && lt_conf_find("train", "nothing") == NULL &&
	       differing_keys(&d, &back, diff, sizeof diff) == 0,
	       "the table has 80 keys, each found by name, with a doc line, and each "
	       "formatted value sets it back (differing:%s)", diff);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof dir, "%s/lltrain-conf.XXXXXX", tmp);
	if (!mkdtemp(dir)) {
		printf("Bail out! cannot make a temporary directory\n");
		return 1;
	}
	tap_plan(83);
	check_defaults();
	check_presets();
	check_file_over_defaults();
	check_precedence();
	check_round_trip();
	check_bad_files();
	check_set();
	check_apply_args();
	check_cross_keys();
	check_number_parsers();
	check_key_table();
	check_integer_auto();
	for (int i = 0; i < n_made; i++)
		unlink(made[i]);
	int removed = rmdir(dir) == 0;
	tap_ok(removed, "the temporary files are all removed");
	return tap_done();
}

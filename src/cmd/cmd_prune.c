/* lltrain prune: measures the importance of every attention head group,
 * MLP channel and block of a checkpoint on windows of its training data,
 * keeps the most important (by the fractions given) and writes the smaller
 * model as a Hugging Face directory that train --init continues from. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backend.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "io/fs.h"
#include "model.h"
#include "prune.h"
#include "text/data.h"

struct prune_args {
	double heads, ffn, layers;
	const char *data, *out, *scores, *device;
	long batches, batch, seq, threads;
	int force;
};

/* What one pruning holds; freed by free_session. */
struct session {
	struct lt_cmd_checkpoint ck;
	char data_path[LT_CMD_PATH_CAP + 32];
	lt_data *data;
	struct lt_prune_scores scores;
	struct lt_prune_plan plan;
	lt_model *pruned;
	int32_t *tokens, *targets;
};

#define ARG(f) LT_CMD_FIELD(struct prune_args, f)

static const struct lt_cmd_option prune_options[] = {
	{ .name = "heads-keep", .kind = LT_CMD_REAL, ARG(heads), .min = 0, .max = 1, .arg = "F",
	  .help = "the fraction of kv heads to keep, each with its query\n"
		  "heads (default 1)" },
	{ .name = "ffn-keep", .kind = LT_CMD_REAL, ARG(ffn), .min = 0, .max = 1, .arg = "F",
	  .help = "the fraction of MLP channels to keep (default 1)" },
	{ .name = "layers-keep", .kind = LT_CMD_REAL, ARG(layers), .min = 0, .max = 1, .arg = "F",
	  .help = "the fraction of blocks to keep (default 1)" },
	{ .name = "out", .kind = LT_CMD_TEXT, ARG(out), .arg = "DIR",
	  .help = "the Hugging Face directory to write (default pruned)" },
	{ .name = "force", .kind = LT_CMD_FLAG, ARG(force),
	  .help = "write into an existing directory that has files" },
	{ .name = "data", .kind = LT_CMD_TEXT, ARG(data), .arg = "DIR",
	  .help = "a prepared data directory whose training windows\n"
		  "calibrate (default: the config's data.dir, else\n"
		  "RUN_DIR/data)" },
	{ .name = "batches", .kind = LT_CMD_LONG, ARG(batches), .min = 1, .max = 1 << 20, .arg = "N",
	  .help = "calibration batches (default 8)" },
	{ .name = "batch", .kind = LT_CMD_LONG, ARG(batch), .min = 1, .max = 1 << 20, .arg = "N",
	  .help = "windows per batch (default: train.batch)" },
	{ .name = "seq", .kind = LT_CMD_LONG, ARG(seq), .min = 2, .max = 1 << 24, .arg = "N",
	  .help = "tokens per window (default: train.seq)" },
	{ .name = "scores", .kind = LT_CMD_TEXT, ARG(scores), .arg = "FILE",
	  .help = "also write the importance measured, as JSON" },
	{ .name = "device", .kind = LT_CMD_TEXT, ARG(device), .arg = "DEV",
	  .help = "cpu (default), opencl[:P.D|:NAME] or auto" },
	{ .name = "threads", .kind = LT_CMD_LONG, ARG(threads), .min = 1, .max = 4096, .arg = "N",
	  .help = "CPU threads (default: OpenMP's choice)" },
	{ .name = NULL },
};

/* Each fraction in (0, 1]; 0, or 2 after saying which is not. */
static int check_prune_args(const void *args)
{
	const struct prune_args *a = args;
	const struct { const char *name; double v; } f[] = {
		{ "heads-keep", a->heads }, { "ffn-keep", a->ffn }, { "layers-keep", a->layers },
	};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
		if (!(f[i].v > 0.0)) {
			fprintf(stderr, "lltrain prune: --%s %g: expected a fraction in (0, 1]\n",
				f[i].name, f[i].v);
			return 2;
		}
	return 0;
}

static const struct lt_cmd_usage prune_usage = {
	.cmd = "prune",
	.head = "usage: lltrain prune [--heads-keep F] [--ffn-keep F] [--layers-keep F]\n"
		"                     [--out DIR] [OPTIONS] CHECKPOINT_OR_RUN_DIR\n\n"
		"Measures how much each kv head (with its query heads), MLP channel and\n"
		"block of a checkpoint's model matters on windows of its training data,\n"
		"from the activations of forward passes, keeps the most important in\n"
		"the fractions given and writes the smaller model as a Hugging Face\n"
		"directory, which train --init continues from (distilling from the\n"
		"unpruned model: --distill.teacher).\n\n",
	.options = prune_options,
	.column = 21,
	.check = check_prune_args,
	.operands = &lt_cmd_checkpoint_operand,
};

/* The importance over `batches` batches of training windows (the same
 * windows for any run: they are drawn from a fixed seed). */
static enum lt_status measure(struct session *s, int B, int T, long batches)
{
	lt_model *m = s->ck.model;
	enum lt_status st = lt_model_plan(m, B, T);
	s->tokens = malloc((size_t)B * T * sizeof *s->tokens);
	s->targets = malloc((size_t)B * T * sizeof *s->targets);
	if (st == LT_OK && (!s->tokens || !s->targets)) {
		lt_errmsg_set("cannot allocate batches of %d x %d tokens", B, T);
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK)
		st = lt_prune_scores_new(&s->ck.conf.model, &s->scores);
	for (long i = 0; i < batches && st == LT_OK; i++) {
		double loss;
		long n;
		st = lt_data_train_batch(s->data, 0x7072756e65ULL, (uint64_t)i * (uint64_t)B, B, T,
					 s->tokens, s->targets);
		if (st == LT_OK)
			st = lt_model_forward(m, s->tokens, s->targets, 0.0f, &loss, &n);
		if (st == LT_OK)
			st = lt_prune_measure(m, s->targets, &s->scores);
		if (st != LT_OK)
			lt_errmsg_prefix("%s: calibration batch %ld", s->data_path, i);
	}
	return st;
}

static json_t *doubles_json(const double *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_real(v[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* The importance and what the plan keeps, as JSON: per block its score,
 * its kv heads' and channels' scores (sums over the calibration tokens). */
static enum lt_status write_scores(const struct session *s, const char *path)
{
	const struct lt_prune_scores *sc = &s->scores;
	json_t *root = json_object(), *blocks = json_array();
	int bad = !root || !blocks || json_object_set_new(root, "tokens", json_integer(sc->tokens)) ||
		  json_object_set(root, "blocks", blocks);
	double *groups = malloc((size_t)sc->n_kv_heads * sizeof *groups);
	for (int l = 0; !bad && groups && l < sc->n_layers; l++) {
		for (int k = 0; k < sc->n_kv_heads; k++)
			groups[k] = lt_prune_group_score(sc, l, k);
		json_t *b = json_pack("{s:f, s:o*, s:o*, s:o*}", "block", sc->block[l],
				      "heads", doubles_json(sc->head + (size_t)l * sc->n_heads,
							    (size_t)sc->n_heads),
				      "kv_heads", doubles_json(groups, (size_t)sc->n_kv_heads),
				      "channels", doubles_json(sc->channel + (size_t)l * sc->ffn_dim,
							       (size_t)sc->ffn_dim));
		bad = !b || json_array_append_new(blocks, b);
	}
	char *text = bad || !groups ? NULL : json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
	free(groups);
	json_decref(blocks);
	json_decref(root);
	if (!text) {
		lt_errmsg_set("%s: out of memory writing the importance", path);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_fs_publish_file(path, text, strlen(text));
	free(text);
	return st;
}

/* The pruned model on the CPU, with the kept weights. */
static enum lt_status build_pruned(struct session *s, const struct prune_args *a)
{
	struct lt_prune_keep keep = { a->heads, a->ffn, a->layers };
	enum lt_status st = lt_prune_plan_new(&s->ck.conf.model, &s->scores, &keep, &s->plan);
	if (st == LT_OK)
		st = lt_model_new(s->ck.be, &s->plan.shape, &s->pruned);
	return st == LT_OK ? lt_prune_copy(s->ck.model, &s->plan, s->pruned) : st;
}

static void print_pruned(const struct session *s, const char *out)
{
	const struct lt_model_config *c = &s->ck.conf.model, *p = &s->plan.shape;
	printf("pruned %s (step %ld) on %ld tokens of %s to %s:\n", s->ck.dir, s->ck.state.step,
	       s->scores.tokens, s->data_path, out);
	printf("  blocks    %d of %d:", p->n_layers, c->n_layers);
	for (int j = 0; j < p->n_layers; j++)
		printf(" %d", s->plan.layers[j]);
	printf("\n  kv heads  %d of %d per block (query heads %d of %d, each %d wide)\n",
	       p->n_kv_heads, c->n_kv_heads, p->n_heads, c->n_heads, lt_model_config_head_dim(p));
	printf("  channels  %d of %d per block\n", p->ffn_dim, c->ffn_dim);
	printf("  parameters %zu of %zu (%.1f%%)\n", lt_model_config_params(p),
	       lt_model_config_params(c),
	       100.0 * (double)lt_model_config_params(p) / (double)lt_model_config_params(c));
}

static void free_session(struct session *s)
{
	lt_model_free(s->pruned);
	lt_prune_plan_free(&s->plan);
	lt_prune_scores_free(&s->scores);
	lt_data_close(s->data);
	free(s->tokens);
	free(s->targets);
	lt_cmd_checkpoint_free(&s->ck);
}

/* The pruned model under the checkpoint's config with the new shape, as
 * a Hugging Face directory. */
static enum lt_status write_pruned(struct session *s, const char *out, int force)
{
	struct lt_cmd_checkpoint view = s->ck;
	view.conf.model = s->plan.shape;
	view.model = s->pruned;
	return lt_cmd_export_hf(&view, out, force);
}

int lt_cmd_prune(int argc, char **argv)
{
	struct prune_args a = { .heads = 1, .ffn = 1, .layers = 1, .out = "pruned",
				.device = "cpu", .batches = 8 };
	struct session s;
	int rc = lt_cmd_parse(argc, argv, &prune_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	memset(&s, 0, sizeof s);
	enum lt_status st = lt_cmd_checkpoint_load(&s.ck, argv[optind], 1, "prune", a.device,
						    (int)a.threads);
	if (st == LT_OK)
		st = lt_model_merge_lora(s.ck.model);  /* adapters folded in, as export does */
	int B = a.batch ? (int)a.batch : s.ck.conf.train.batch;
	int T = a.seq ? (int)a.seq : s.ck.conf.train.seq;
	if (st == LT_OK && T > s.ck.conf.model.max_seq) {
		lt_errmsg_set("--seq %d exceeds the model's context of %d tokens", T,
			      s.ck.conf.model.max_seq);
		st = LT_ERR_ARG;
	}
	if (st == LT_OK)
		st = lt_cmd_checkpoint_data(&s.ck, a.data, s.data_path, sizeof s.data_path);
	if (st == LT_OK)
		st = lt_data_open(s.data_path, (int)lt_tokenizer_vocab_size(s.ck.tok), &s.data);
	if (st == LT_OK)
		st = measure(&s, B, T, a.batches);
	if (st == LT_OK)
		st = build_pruned(&s, &a);
	if (st == LT_OK && a.scores)
		st = write_scores(&s, a.scores);
	if (st == LT_OK)
		st = write_pruned(&s, a.out, a.force);
	if (st == LT_OK)
		print_pruned(&s, a.out);
	else
		lt_report("prune", st);
	free_session(&s);
	return st == LT_OK ? 0 : 1;
}

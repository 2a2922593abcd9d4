/* dump_logits: prints, as JSON, the logits lltrain computes for one
 * sequence of token ids with a checkpoint's weights (or a GGUF file's) on
 * the CPU, one row of V numbers per position, for comparison with other
 * implementations.
 *
 * usage: dump_logits CHECKPOINT_OR_RUN_DIR ID [ID ...]
 *        dump_logits --gguf FILE ID [ID ...]
 *        dump_logits --init PATH ID [ID ...]   (what train --init imports:
 *        a Hugging Face model directory, a GGUF file, a checkpoint) */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/checkpoint.h"
#include "io/gguf_model.h"
#include "io/import.h"
#include "conf.h"
#include "model.h"

#define PATH_CAP (LT_CONF_PATH_MAX + 128)

/* What one run holds; freed by free_all. */
struct dump {
	char ckpt[PATH_CAP];
	struct lt_ckpt_state state;
	struct lt_conf conf;
	struct lt_model_config cfg;   /* the model's, from either source */
	lt_backend *be;
	lt_model *model;
	int32_t *tokens, *targets;
	float *logits;
};

/* The ids argv[0..n) into d->tokens, each checked against the vocabulary. */
static enum lt_status parse_ids(struct dump *d, char **argv, int n)
{
	if (n > d->cfg.max_seq) {
		lt_errmsg_set("%d ids: more than the model's max_seq %d", n, d->cfg.max_seq);
		return LT_ERR_ARG;
	}
	d->tokens = malloc((size_t)n * sizeof *d->tokens);
	d->targets = malloc((size_t)n * sizeof *d->targets);
	if (!d->tokens || !d->targets) {
		lt_errmsg_set("cannot allocate %d ids", n);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++) {
		long id;
		char origin[32];
		snprintf(origin, sizeof origin, "id %d", i + 1);
		if (lt_parse_long(origin, argv[i], 0, d->cfg.vocab_size - 1, &id) != LT_OK)
			return LT_ERR_ARG;
		d->tokens[i] = (int32_t)id;
		d->targets[i] = -1; /* no loss wanted */
	}
	return LT_OK;
}

/* The model of path as train --init takes it. */
static enum lt_status import(struct dump *d, const char *path)
{
	enum lt_status st;
	lt_conf_defaults(&d->conf);
	d->cfg = d->conf.model;
	if ((st = lt_import_config(path, &d->cfg)) != LT_OK ||
	    (st = lt_backend_new("cpu", 0, &d->be)) != LT_OK ||
	    (st = lt_model_new(d->be, &d->cfg, &d->model)) != LT_OK)
		return st;
	return lt_import_weights(path, d->model);
}

static enum lt_status load(struct dump *d, const char *path)
{
	enum lt_status st = lt_checkpoint_open(path, d->ckpt, sizeof d->ckpt, &d->state, &d->conf,
					       NULL);
	if (st != LT_OK)
		return st;
	struct lt_lora lora;  /* a LoRA run's adapters are applied, not merged */
	d->cfg = d->conf.model;
	if ((st = lt_conf_lora(&d->conf, &lora)) != LT_OK ||
	    (st = lt_backend_new("cpu", 0, &d->be)) != LT_OK ||
	    (st = lt_model_new_adapted(d->be, &d->cfg, &lora, LT_PRECISION_FP32,
				       &d->model)) != LT_OK)
		return st;
	return lt_checkpoint_load_model(d->ckpt, d->model);
}

static enum lt_status load_gguf(struct dump *d, const char *path)
{
	enum lt_status st = lt_gguf_model_config(path, &d->cfg);
	if (st != LT_OK ||
	    (st = lt_backend_new("cpu", 0, &d->be)) != LT_OK ||
	    (st = lt_model_new(d->be, &d->cfg, &d->model)) != LT_OK)
		return st;
	return lt_gguf_model_load(path, d->model);
}

/* logits[n, V] of one forward pass over d->tokens. */
static enum lt_status forward(struct dump *d, int n)
{
	size_t V = (size_t)d->cfg.vocab_size;
	double loss;
	long count;
	enum lt_status st;
	if ((st = lt_model_plan(d->model, 1, n)) != LT_OK ||
	    (st = lt_model_forward(d->model, d->tokens, d->targets, 0.0f, &loss, &count)) != LT_OK)
		return st;
	if (!(d->logits = malloc((size_t)n * V * sizeof *d->logits))) {
		lt_errmsg_set("cannot allocate %zu logits", (size_t)n * V);
		return LT_ERR_NOMEM;
	}
	return lt_model_read_logits(d->model, 0, n, d->logits);
}

static void print_logits(const struct dump *d, int n)
{
	size_t V = (size_t)d->cfg.vocab_size;
	printf("[");
	for (int t = 0; t < n; t++) {
		printf("%s[", t ? ",\n " : "");
		for (size_t v = 0; v < V; v++)
			printf("%s%.9g", v ? ", " : "", (double)d->logits[(size_t)t * V + v]);
		printf("]");
	}
	printf("]\n");
}

static void free_all(struct dump *d)
{
	lt_model_free(d->model);
	lt_backend_free(d->be);
	lt_ckpt_state_free(&d->state);
	free(d->tokens);
	free(d->targets);
	free(d->logits);
}

int main(int argc, char **argv)
{
	struct dump d;
	enum lt_status st;
	int gguf = argc > 1 && strcmp(argv[1], "--gguf") == 0;
	int init = argc > 1 && strcmp(argv[1], "--init") == 0;
	int n = argc - 2 - gguf - init;

	if (n < 1) {
		fprintf(stderr, "usage: dump_logits CHECKPOINT_OR_RUN_DIR ID [ID ...]\n"
				"       dump_logits --gguf FILE ID [ID ...]\n"
				"       dump_logits --init PATH ID [ID ...]\n");
		return 2;
	}
	memset(&d, 0, sizeof d);
	st = gguf ? load_gguf(&d, argv[2]) : init ? import(&d, argv[2]) : load(&d, argv[1]);
	if (st == LT_OK && (st = parse_ids(&d, argv + 2 + gguf + init, n)) == LT_OK)
		st = forward(&d, n);
	if (st == LT_OK)
		print_logits(&d, n);
	else
		fprintf(stderr, "dump_logits: %s\n",
			lt_errmsg()[0] ? lt_errmsg() : lt_status_str(st));
	free_all(&d);
	return st == LT_OK ? 0 : 1;
}

/* The sample a run prints at its cadence (see train_sample.h). */
#include "config.h"
#include "train/train_sample.h"

#include <stdlib.h>

#include "text/sample.h"

enum lt_status lt_train_sample(lt_model *m, const lt_tokenizer *tok, lt_metrics *mt,
			       const struct lt_conf *c, long step)
{
	int n = c->run.sample_tokens < c->model.max_seq - 1 ? c->run.sample_tokens : c->model.max_seq - 1;
	if (n <= 0)
		return LT_OK;
	int32_t prompt = lt_tokenizer_eot_id(tok), *out;
	if (prompt < 0) {
		/* chat data may come with a tokenizer that has none */
		lt_metrics_say(mt, "no sample at step %ld: the tokenizer has no %s to start "
			       "one from", step, LT_TOKENIZER_EOT);
		return LT_OK;
	}
	if (!(out = malloc((size_t)n * sizeof *out))) {
		lt_errmsg_set("cannot allocate %d sample tokens", n);
		return LT_ERR_NOMEM;
	}
	struct lt_sample_opts so = { .temperature = 0.8f, .top_k = 40, .top_p = 0.95f,
				     .seed = c->train.seed + (uint64_t)step,
				     /* an imported model may have rows past the tokenizer's ids */
				     .n_ids = (int)lt_tokenizer_vocab_size(tok) };
	int got = 0;
	char *text = NULL;
	size_t len;
	enum lt_status st = lt_sample_generate(m, &prompt, 1, n, -1, &so, out, &got);
	if (st == LT_OK)
		st = lt_tokenizer_decode(tok, out, (size_t)got, &text, &len);
	if (st == LT_OK)
		lt_metrics_say(mt, "--- sample at step %ld (%d tokens, temperature 0.8, "
			       "top-k 40, top-p 0.95) ---\n%s\n---", step, got, text);
	if (st == LT_OK)
		st = lt_metrics_text(mt, step, "sample", text);
	free(text);
	free(out);
	return st;
}

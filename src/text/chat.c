/* Chat templates: ChatML, Llama 2 and Llama 3 conversations rendered into
 * token ids with a trained mark on each (see chat.h). */
#include "config.h"
#include "text/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The special tokens a template uses, in the order of enum special. */
enum special { IM_START, IM_END, BOS2, EOS2, BOT3, HEAD_START, HEAD_END, EOT3, N_SPECIAL };

static const char *const special_text[N_SPECIAL] = {
	"<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>", "<|start_header_id|>",
	"<|end_header_id|>", "<|eot_id|>",
};

struct lt_chat {
	enum lt_chat_template t;
	int32_t id[N_SPECIAL];
};

static const char *const template_names[] = { "chatml", "llama2", "llama3" };
static const char *const role_names[] = { "system", "user", "assistant" };

void lt_chat_tokens_free(struct lt_chat_tokens *t)
{
	free(t->ids);
	free(t->trained);
	memset(t, 0, sizeof *t);
}

enum lt_status lt_chat_template_parse(const char *name, enum lt_chat_template *out)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, template_names[i])) {
			*out = (enum lt_chat_template)i;
			return LT_OK;
		}
	lt_errmsg_set("chat template '%s': expected chatml, llama2 or llama3", name);
	return LT_ERR_ARG;
}

const char *lt_chat_template_name(enum lt_chat_template t)
{
	return template_names[t];
}

int lt_chat_role_parse(const char *name)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, role_names[i]))
			return i;
	return -1;
}

static int32_t special_id(const lt_tokenizer *tok, enum special s)
{
	return lt_tokenizer_token_id(tok, special_text[s], strlen(special_text[s]));
}

enum lt_status lt_chat_detect(const lt_tokenizer *tok, enum lt_chat_template *out)
{
	if (special_id(tok, IM_START) >= 0)
		*out = LT_CHAT_CHATML;
	else if (special_id(tok, HEAD_START) >= 0)
		*out = LT_CHAT_LLAMA3;
	else if (special_id(tok, BOS2) >= 0)
		*out = LT_CHAT_LLAMA2;
	else {
		lt_errmsg_set("the tokenizer has none of <|im_start|>, <|start_header_id|> and <s>, "
			      "so no chat template fits it");
		return LT_ERR_NOTFOUND;
	}
	return LT_OK;
}

/* The special tokens each template needs. */
static int needs(enum lt_chat_template t, enum special s)
{
	switch (t) {
	case LT_CHAT_CHATML:
		return s == IM_START || s == IM_END;
	case LT_CHAT_LLAMA2:
		return s == BOS2 || s == EOS2;
	case LT_CHAT_LLAMA3:
		return s == BOT3 || s == HEAD_START || s == HEAD_END || s == EOT3;
	}
	return 0;
}

enum lt_status lt_chat_new(const lt_tokenizer *tok, enum lt_chat_template t, lt_chat **out)
{
	lt_chat *c;
	*out = NULL;
	if (!(c = calloc(1, sizeof *c))) {
		lt_errmsg_set("cannot allocate a chat template");
		return LT_ERR_NOMEM;
	}
	c->t = t;
	for (int s = 0; s < N_SPECIAL; s++) {
		c->id[s] = special_id(tok, (enum special)s);
		if (needs(t, (enum special)s) && c->id[s] < 0) {
			lt_errmsg_set("template %s needs the special token %s, which the tokenizer "
				      "lacks", template_names[t], special_text[s]);
			free(c);
			return LT_ERR_FORMAT;
		}
	}
	*out = c;
	return LT_OK;
}

void lt_chat_free(lt_chat *c)
{
	free(c);
}

enum lt_chat_template lt_chat_template_of(const lt_chat *c)
{
	return c->t;
}

int32_t lt_chat_end_id(const lt_chat *c)
{
	return c->id[c->t == LT_CHAT_CHATML ? IM_END : c->t == LT_CHAT_LLAMA2 ? EOS2 : EOT3];
}

/* ------------------------------------------------------------ rendering */

/* Room for `more` tokens in out. */
static enum lt_status reserve(struct lt_chat_tokens *out, size_t more)
{
	if (out->n + more <= out->cap)
		return LT_OK;
	size_t cap = out->cap ? out->cap : 256;
	while (cap < out->n + more)
		cap *= 2;
	int32_t *ids = realloc(out->ids, cap * sizeof *ids);
	if (ids)
		out->ids = ids;
	uint8_t *trained = ids ? realloc(out->trained, cap) : NULL;
	if (!trained) {
		lt_errmsg_set("cannot allocate %zu tokens for a conversation", cap);
		return LT_ERR_NOMEM;
	}
	out->trained = trained;
	out->cap = cap;
	return LT_OK;
}

static enum lt_status put_id(struct lt_chat_tokens *out, int32_t id, int trained)
{
	enum lt_status st = reserve(out, 1);
	if (st == LT_OK) {
		out->ids[out->n] = id;
		out->trained[out->n++] = (uint8_t)trained;
	}
	return st;
}

/* A text piece through the tokenizer (scratch holds its ids on the way). */
static enum lt_status put_text(struct lt_chat_tokens *out, lt_tokenizer *tok, const char *text,
			       size_t len, int trained, lt_ids *scratch)
{
	scratch->n = 0;
	enum lt_status st = len ? lt_tokenizer_encode(tok, text, len, scratch) : LT_OK;
	if (st == LT_OK)
		st = reserve(out, scratch->n);
	for (size_t i = 0; st == LT_OK && i < scratch->n; i++) {
		out->ids[out->n] = scratch->v[i];
		out->trained[out->n++] = (uint8_t)trained;
	}
	return st;
}

static int is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* text[0..*len) without white space at either end: its new start. */
static const char *strip(const char *text, size_t *len)
{
	while (*len > 0 && is_space(*text)) {
		text++;
		(*len)--;
	}
	while (*len > 0 && is_space(text[*len - 1]))
		(*len)--;
	return text;
}

/* A growable string for the pieces that join several parts. */
struct buf {
	char *p;
	size_t n, cap;
};

static enum lt_status buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = (b->n + n + 1) * 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			lt_errmsg_set("cannot allocate %zu bytes for a conversation", cap);
			return LT_ERR_NOMEM;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
	return LT_OK;
}

#define ADD(b, s) buf_add((b), (s), strlen(s))

static enum lt_status render_chatml(const lt_chat *c, lt_tokenizer *tok,
				    const struct lt_chat_message *m, int n,
				    struct lt_chat_tokens *out, lt_ids *scratch)
{
	enum lt_status st = LT_OK;
	for (int i = 0; i < n && st == LT_OK; i++) {
		int answer = m[i].role == LT_CHAT_ASSISTANT;
		char head[32];
		snprintf(head, sizeof head, "%s\n", role_names[m[i].role]);
		if ((st = put_id(out, c->id[IM_START], 0)) == LT_OK &&
		    (st = put_text(out, tok, head, strlen(head), 0, scratch)) == LT_OK &&
		    (st = put_text(out, tok, m[i].content, m[i].len, answer, scratch)) == LT_OK &&
		    (st = put_id(out, c->id[IM_END], answer)) == LT_OK)
			st = put_text(out, tok, "\n", 1, 0, scratch);
	}
	return st;
}

static enum lt_status render_llama3(const lt_chat *c, lt_tokenizer *tok,
				    const struct lt_chat_message *m, int n,
				    struct lt_chat_tokens *out, lt_ids *scratch)
{
	enum lt_status st = put_id(out, c->id[BOT3], 0);
	for (int i = 0; i < n && st == LT_OK; i++) {
		int answer = m[i].role == LT_CHAT_ASSISTANT;
		const char *role = role_names[m[i].role];
		size_t len = m[i].len;
		const char *text = strip(m[i].content, &len);
		if ((st = put_id(out, c->id[HEAD_START], 0)) == LT_OK &&
		    (st = put_text(out, tok, role, strlen(role), 0, scratch)) == LT_OK &&
		    (st = put_id(out, c->id[HEAD_END], 0)) == LT_OK &&
		    (st = put_text(out, tok, "\n\n", 2, 0, scratch)) == LT_OK &&
		    (st = put_text(out, tok, text, len, answer, scratch)) == LT_OK)
			st = put_id(out, c->id[EOT3], answer);
	}
	return st;
}

/* One Llama 2 user turn: <s>[INST] CONTENT [/INST], the system block
 * (when sys) inside the first one's content before stripping. */
static enum lt_status llama2_user(const lt_chat *c, lt_tokenizer *tok,
				  const struct lt_chat_message *sys,
				  const struct lt_chat_message *user, struct lt_chat_tokens *out,
				  lt_ids *scratch, struct buf *b)
{
	enum lt_status st = LT_OK;
	b->n = 0;
	if (sys && ((st = ADD(b, "<<SYS>>\n")) != LT_OK ||
		    (st = buf_add(b, sys->content, sys->len)) != LT_OK ||
		    (st = ADD(b, "\n<</SYS>>\n\n")) != LT_OK))
		return st;
	if ((st = buf_add(b, user->content, user->len)) != LT_OK)
		return st;
	size_t len = b->n;
	const char *text = strip(b->p, &len);
	struct buf line = { 0 };
	if ((st = ADD(&line, "[INST] ")) == LT_OK && (st = buf_add(&line, text, len)) == LT_OK &&
	    (st = ADD(&line, " [/INST]")) == LT_OK && (st = put_id(out, c->id[BOS2], 0)) == LT_OK)
		st = put_text(out, tok, line.p, line.n, 0, scratch);
	free(line.p);
	return st;
}

static enum lt_status render_llama2(const lt_chat *c, lt_tokenizer *tok,
				    const struct lt_chat_message *m, int n,
				    struct lt_chat_tokens *out, lt_ids *scratch)
{
	const struct lt_chat_message *sys = NULL;
	struct buf b = { 0 };
	enum lt_status st = LT_OK;
	int i = 0;
	if (n > 0 && m[0].role == LT_CHAT_SYSTEM) {
		sys = &m[0];
		i = 1;
		if (n < 2 || m[1].role != LT_CHAT_USER) {
			lt_errmsg_set("template llama2 puts the system message into the first user "
				      "message: expected a user message after it");
			return LT_ERR_ARG;
		}
	}
	for (; i < n && st == LT_OK; i++) {
		if (m[i].role == LT_CHAT_SYSTEM) {
			lt_errmsg_set("template llama2 takes a system message only first, found one "
				      "as message %d", i + 1);
			st = LT_ERR_ARG;
		} else if (m[i].role == LT_CHAT_USER) {
			st = llama2_user(c, tok, sys, &m[i], out, scratch, &b);
			sys = NULL;
		} else {
			size_t len = m[i].len;
			const char *text = strip(m[i].content, &len);
			b.n = 0;
			if ((st = ADD(&b, " ")) == LT_OK && (st = buf_add(&b, text, len)) == LT_OK &&
			    (st = ADD(&b, " ")) == LT_OK &&
			    (st = put_text(out, tok, b.p, b.n, 1, scratch)) == LT_OK)
				st = put_id(out, c->id[EOS2], 1);
		}
	}
	free(b.p);
	return st;
}

enum lt_status lt_chat_render(const lt_chat *c, lt_tokenizer *tok, const struct lt_chat_message *msgs,
			      int n, struct lt_chat_tokens *out)
{
	lt_ids scratch = { 0 };
	enum lt_status st;
	out->n = 0;
	switch (c->t) {
	case LT_CHAT_CHATML:
		st = render_chatml(c, tok, msgs, n, out, &scratch);
		break;
	case LT_CHAT_LLAMA2:
		st = render_llama2(c, tok, msgs, n, out, &scratch);
		break;
	default:
		st = render_llama3(c, tok, msgs, n, out, &scratch);
		break;
	}
	lt_ids_free(&scratch);
	return st;
}

enum lt_status lt_chat_render_prompt(const lt_chat *c, lt_tokenizer *tok,
				     const struct lt_chat_message *msgs, int n,
				     struct lt_chat_tokens *out)
{
	lt_ids scratch = { 0 };
	enum lt_status st = lt_chat_render(c, tok, msgs, n, out);
	if (st == LT_OK && c->t == LT_CHAT_CHATML) {
		if ((st = put_id(out, c->id[IM_START], 0)) == LT_OK)
			st = put_text(out, tok, "assistant\n", 10, 0, &scratch);
	} else if (st == LT_OK && c->t == LT_CHAT_LLAMA3) {
		if ((st = put_id(out, c->id[HEAD_START], 0)) == LT_OK &&
		    (st = put_text(out, tok, "assistant", 9, 0, &scratch)) == LT_OK &&
		    (st = put_id(out, c->id[HEAD_END], 0)) == LT_OK)
			st = put_text(out, tok, "\n\n", 2, 0, &scratch);
	}
	for (size_t i = 0; i < out->n; i++)
		out->trained[i] = 0;
	lt_ids_free(&scratch);
	return st;
}

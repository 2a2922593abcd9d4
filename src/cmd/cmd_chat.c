/* lltrain chat: a conversation with a checkpoint's model in its chat template, either
 * one answer to --message (for scripts) or an interactive session on the terminal, each
 * answer generated with the KV-cached decoder until the template's end of turn, the cache
 * kept from turn to turn so that a turn runs only its new tokens. */
#include "config.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "cmd/cmd.h"
#include "text/chat.h"
#include "text/sample.h"
#include "text/tokenizer.h"

struct chat_args {
	const char *message, *system, *template_name, *device;
	long max_tokens, top_k, seed, threads;
	double temperature, top_p;
};

/* The conversation so far; its contents are malloc'd copies. */
struct chat_session {
	struct lt_cmd_checkpoint ck;
	lt_chat *chat;
	struct lt_chat_message *msgs;
	int n, cap;
	struct lt_chat_tokens prompt;
	int32_t *seq;              /* the prompt, then the answer's tokens */
	struct lt_sample_session cache;  /* the KV cache the turns share */
	long turns;
};

#define ARG(f) LT_CMD_FIELD(struct chat_args, f)

static const struct lt_cmd_option chat_options[] = {
	{ .name = "message", .kind = LT_CMD_TEXT, ARG(message), .arg = "TEXT",
	  .help = "answer this one user message and exit (default:\n"
		  "an interactive session on standard input)" },
	{ .name = "system", .kind = LT_CMD_TEXT, ARG(system), .arg = "TEXT",
	  .help = "a system message that opens the conversation" },
	{ .name = "template", .kind = LT_CMD_TEXT, ARG(template_name), .arg = "NAME",
	  .help = "chatml, llama2 or llama3 (default: the one the\n"
		  "tokenizer's special tokens point to)" },
	{ .name = "max-tokens", .kind = LT_CMD_LONG, ARG(max_tokens), .min = 1, .max = 1L << 30,
	  .arg = "N", .help = "new tokens per answer at most (default 256)" },
	{ .name = "temperature", .kind = LT_CMD_REAL, ARG(temperature), .min = 0, .max = 100,
	  .arg = "X", .help = "0 picks the most likely token (default 0.7)" },
	{ .name = "top-k", .kind = LT_CMD_LONG, ARG(top_k), .min = 0, .max = 1L << 30, .arg = "N",
	  .help = "draw from the N most likely tokens; 0 = all (default 40)" },
	{ .name = "top-p", .kind = LT_CMD_REAL, ARG(top_p), .min = 0, .max = 1, .arg = "X",
	  .help = "then from the smallest set holding X of the\n"
		  "probability; 1 = all (default 0.95)" },
	{ .name = "seed", .kind = LT_CMD_LONG, ARG(seed), .min = 0, .max = LONG_MAX, .arg = "N",
	  .help = "random seed (default 1); answer i uses N + i" },
	{ .name = "device", .kind = LT_CMD_TEXT, ARG(device), .arg = "DEV",
	  .help = "cpu (default), opencl[:P.D|:NAME] or auto" },
	{ .name = "threads", .kind = LT_CMD_LONG, ARG(threads), .min = 1, .max = 4096, .arg = "N",
	  .help = "CPU threads (default: OpenMP's choice)" },
	{ .name = NULL },
};

/* A --template is one of the three; 0, or 2 after saying what it is not. */
static int check_chat_args(const void *args)
{
	const struct chat_args *a = args;
	enum lt_chat_template t;
	if (a->template_name && lt_chat_template_parse(a->template_name, &t) != LT_OK) {
		fprintf(stderr, "lltrain chat: --template %s: expected chatml, llama2 or llama3\n",
			a->template_name);
		return 2;
	}
	return 0;
}

static const struct lt_cmd_usage chat_usage = {
	.cmd = "chat",
	.head = "usage: lltrain chat [OPTIONS] CHECKPOINT_OR_RUN_DIR\n\n"
		"Talks with a checkpoint's model (or the newest valid one of a run\n"
		"directory) in its chat template. With --message, prints the answer to\n"
		"that one message; otherwise reads one user message per line of standard\n"
		"input and prints each answer (/reset forgets the conversation, /quit or\n"
		"the end of input ends it).\n\n",
	.options = chat_options,
	.column = 23,
	.check = check_chat_args,
	.operands = &lt_cmd_checkpoint_operand,
};

/* Appends a message (its content copied) to the conversation. */
static enum lt_status add_message(struct chat_session *s, enum lt_chat_role role,
				  const char *text, size_t len)
{
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 8;
		struct lt_chat_message *m = realloc(s->msgs, (size_t)cap * sizeof *m);
		if (!m) {
			lt_errmsg_set("cannot allocate a conversation of %d messages", cap);
			return LT_ERR_NOMEM;
		}
		s->msgs = m;
		s->cap = cap;
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		lt_errmsg_set("cannot allocate %zu bytes for a message", len + 1);
		return LT_ERR_NOMEM;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	s->msgs[s->n++] = (struct lt_chat_message){ .role = role, .content = copy, .len = len };
	return LT_OK;
}

/* Forgets every message after the first `keep`. */
static void drop_messages_from(struct chat_session *s, int keep)
{
	while (s->n > keep)
		free((char *)s->msgs[--s->n].content);
}

/* Drops the oldest exchange after the system message (a user message and the answer
 * after it); 0 when there is none to drop. */
static int drop_oldest_exchange(struct chat_session *s)
{
	int first = s->n > 0 && s->msgs[0].role == LT_CHAT_SYSTEM;
	int end = first + 1;
	while (end < s->n && s->msgs[end].role != LT_CHAT_USER)
		end++;
	if (end >= s->n)  /* only the message being answered is left */
		return 0;
	for (int i = first; i < end; i++)
		free((char *)s->msgs[i].content);
	memmove(s->msgs + first, s->msgs + end, (size_t)(s->n - end) * sizeof *s->msgs);
	s->n -= end - first;
	return 1;
}

/* Renders the prompt for the next answer, dropping the oldest exchanges until it leaves
 * room for at least one new token; *max_new gets the room left, at most --max-tokens. */
static enum lt_status render_fitting(struct chat_session *s, const struct chat_args *a,
				     int *max_new)
{
	int ctx = s->ck.conf.model.max_seq;
	for (;;) {
		enum lt_status st = lt_chat_render_prompt(s->chat, s->ck.tok, s->msgs, s->n,
							  &s->prompt);
		if (st != LT_OK)
			return st;
		if (s->prompt.n < (size_t)ctx) {
			long room = ctx - (long)s->prompt.n;
			*max_new = (int)(room < a->max_tokens ? room : a->max_tokens);
			return LT_OK;
		}
		if (!drop_oldest_exchange(s)) {
			lt_errmsg_set("the message makes a prompt of %zu tokens, which leaves no room "
				      "in the model's context of %d tokens", s->prompt.n, ctx);
			return LT_ERR_ARG;
		}
	}
}

/* Answers the conversation's last (user) message: generates, prints the answer and adds it
 * to the conversation. */
static enum lt_status answer(struct chat_session *s, const struct chat_args *a)
{
	int max_new = 0, got = 0;
	enum lt_status st = render_fitting(s, a, &max_new);
	if (st != LT_OK)
		return st;
	size_t n = s->prompt.n;
	memcpy(s->seq, s->prompt.ids, n * sizeof *s->seq);
	struct lt_sample_opts o = { .temperature = (float)a->temperature, .top_k = (int)a->top_k,
				    .top_p = (float)a->top_p,
				    .seed = (uint64_t)a->seed + (uint64_t)s->turns++ };
	st = lt_sample_continue(s->ck.model, &s->cache, s->seq, (int)n, max_new,
				lt_chat_end_id(s->chat), &o, s->seq + n, &got);
	char *text = NULL;
	size_t len = 0;
	if (st == LT_OK)
		st = lt_tokenizer_decode(s->ck.tok, s->seq + n, (size_t)got, &text, &len);
	if (st != LT_OK)
		return st;
	size_t skip = 0;  /* llama2's answers start after a space */
	while (skip < len && (text[skip] == ' ' || text[skip] == '\n'))
		skip++;
	fwrite(text + skip, 1, len - skip, stdout);
	putchar('\n');
	fflush(stdout);
	st = add_message(s, LT_CHAT_ASSISTANT, text + skip, len - skip);
	free(text);
	return st;
}

/* One user message from the command line: its answer; the exit status. */
static int answer_once(struct chat_session *s, const struct chat_args *a)
{
	enum lt_status st = add_message(s, LT_CHAT_USER, a->message, strlen(a->message));
	if (st == LT_OK)
		st = answer(s, a);
	if (st != LT_OK) {
		lt_report("chat", st);
		return 1;
	}
	return 0;
}

/* The interactive session: a user message per line of standard input. A message that
 * cannot be answered is reported and forgotten; the session goes on. */
static int converse(struct chat_session *s, const struct chat_args *a)
{
	int keep = s->n, tty = isatty(STDIN_FILENO);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	if (tty)
		fprintf(stderr, "lltrain chat: template %s; /reset forgets, /quit ends\n",
			lt_chat_template_name(lt_chat_template_of(s->chat)));
	for (;;) {
		if (tty)
			fputs("> ", stderr);
		if ((len = getline(&line, &cap, stdin)) < 0)
			break;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!strcmp(line, "/quit"))
			break;
		if (!strcmp(line, "/reset")) {
			drop_messages_from(s, keep);
			continue;
		}
		if (len == 0)
			continue;
		enum lt_status st = add_message(s, LT_CHAT_USER, line, (size_t)len);
		if (st == LT_OK)
			st = answer(s, a);
		if (st != LT_OK) {
			lt_report("chat", st);
			if (st == LT_ERR_NOMEM || st == LT_ERR_BACKEND)
				break;
			/* the unanswered message goes (older exchanges may have gone before it) */
			if (s->n > keep && s->msgs[s->n - 1].role == LT_CHAT_USER)
				drop_messages_from(s, s->n - 1);
		}
	}
	free(line);
	return 0;
}

/* The template: --template, else the one the tokenizer points to. */
static enum lt_status open_template(struct chat_session *s, const struct chat_args *a)
{
	enum lt_chat_template t;
	enum lt_status st = a->template_name ? lt_chat_template_parse(a->template_name, &t)
					     : lt_chat_detect(s->ck.tok, &t);
	if (st != LT_OK)
		return st;
	return lt_chat_new(s->ck.tok, t, &s->chat);
}

static void free_session(struct chat_session *s)
{
	drop_messages_from(s, 0);
	free(s->msgs);
	lt_chat_tokens_free(&s->prompt);
	lt_chat_free(s->chat);
	free(s->seq);
	if (s->ck.model)
		lt_sample_session_end(s->ck.model, &s->cache);
	lt_cmd_checkpoint_free(&s->ck);
}

int lt_cmd_chat(int argc, char **argv)
{
	struct chat_args a = { .device = "cpu", .max_tokens = 256, .top_k = 40, .seed = 1,
			       .temperature = 0.7, .top_p = 0.95 };
	struct chat_session s;
	int rc = lt_cmd_parse(argc, argv, &chat_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	memset(&s, 0, sizeof s);
	enum lt_status st = lt_cmd_checkpoint_load(&s.ck, argv[optind], 1, "chat", a.device,
						    (int)a.threads);
	if (st == LT_OK)
		st = open_template(&s, &a);
	if (st == LT_OK && !(s.seq = malloc((size_t)s.ck.conf.model.max_seq * sizeof *s.seq))) {
		lt_errmsg_set("cannot allocate %d tokens", s.ck.conf.model.max_seq);
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK && a.system)
		st = add_message(&s, LT_CHAT_SYSTEM, a.system, strlen(a.system));
	if (st != LT_OK) {
		lt_report("chat", st);
		rc = 1;
	} else {
		double t0 = lt_seconds();
		rc = a.message ? answer_once(&s, &a) : converse(&s, &a);
		if (a.message)
			fprintf(stderr, "answered in %.2f s\n", lt_seconds() - t0);
	}
	free_session(&s);
	return rc;
}

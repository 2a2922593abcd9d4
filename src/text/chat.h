/* Chat templates: a conversation rendered into token ids the way a chat
 * model was trained to read it, each token marked trained or not.
 *
 * Three templates, as the models' own tokenizer configurations write them:
 *
 *   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n   for every message
 *   llama2  <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ANSWER </s>
 *           then <s>[INST] USER [/INST] ANSWER </s> for each later turn;
 *           user and answer contents stripped of surrounding white space,
 *           the system block only in the first turn
 *   llama3  <|begin_of_text|> then, for every message,
 *           <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
 *           with CONTENT stripped of surrounding white space
 *
 * Special tokens go in by id; the text between them is encoded by the
 * tokenizer, cut where a role's header ends and its content begins, so
 * that no token spans the two. The assistant's content and the token that
 * ends its turn (<|im_end|>, </s>, <|eot_id|>) are trained; everything
 * else is not.
 *
 * Ownership: an lt_chat is the caller's, released with lt_chat_free (which
 * accepts NULL); it borrows nothing. A struct lt_chat_tokens is the
 * caller's struct, zero-initialised, grown by lt_chat_render and released
 * with lt_chat_tokens_free. */
#ifndef LT_CHAT_H
#define LT_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "text/tokenizer.h"

enum lt_chat_template { LT_CHAT_CHATML, LT_CHAT_LLAMA2, LT_CHAT_LLAMA3 };
enum lt_chat_role { LT_CHAT_SYSTEM, LT_CHAT_USER, LT_CHAT_ASSISTANT };

struct lt_chat_message {
	enum lt_chat_role role;
	const char *content;
	size_t len;
};

/* The ids of a rendered conversation and, for each, 1 when it is trained. */
struct lt_chat_tokens {
	int32_t *ids;
	uint8_t *trained;
	size_t n, cap;
};

void lt_chat_tokens_free(struct lt_chat_tokens *t);

typedef struct lt_chat lt_chat;

/* "chatml", "llama2" or "llama3"; anything else is LT_ERR_ARG naming the
 * three. */
enum lt_status lt_chat_template_parse(const char *name, enum lt_chat_template *out);
const char *lt_chat_template_name(enum lt_chat_template t);
/* "system", "user" or "assistant"; -1 for anything else. */
int lt_chat_role_parse(const char *name);

/* The template a tokenizer's special tokens point to: chatml where it has
 * <|im_start|>, else llama3 where it has <|start_header_id|>, else llama2
 * where it has <s>; LT_ERR_NOTFOUND when it has none of them. */
enum lt_status lt_chat_detect(const lt_tokenizer *tok, enum lt_chat_template *out);

/* The template bound to tok's ids of its special tokens; a token the
 * tokenizer lacks is LT_ERR_FORMAT "template T needs the special token X,
 * which the tokenizer lacks". */
enum lt_status lt_chat_new(const lt_tokenizer *tok, enum lt_chat_template t, lt_chat **out);
void lt_chat_free(lt_chat *c);
enum lt_chat_template lt_chat_template_of(const lt_chat *c);
/* The id that ends an assistant turn: <|im_end|>, </s> or <|eot_id|>. */
int32_t lt_chat_end_id(const lt_chat *c);

/* Renders msgs[0..n) into out (emptied first). llama2 takes a system
 * message only first and before a user message (else LT_ERR_ARG saying
 * so). tok encodes the text pieces, so one thread at a time. */
enum lt_status lt_chat_render(const lt_chat *c, lt_tokenizer *tok, const struct lt_chat_message *msgs,
			      int n, struct lt_chat_tokens *out);

/* The prompt that asks the model for the assistant's next turn: msgs[0..n) rendered as
 * lt_chat_render does (the last one the user's), then the opening of an assistant turn
 * (chatml: <|im_start|>assistant\n; llama3: its assistant header; llama2: nothing, the
 * answer follows [/INST]). Nothing of it is marked trained. */
enum lt_status lt_chat_render_prompt(const lt_chat *c, lt_tokenizer *tok,
				     const struct lt_chat_message *msgs, int n,
				     struct lt_chat_tokens *out);

#endif

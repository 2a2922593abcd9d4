/* Private to data preparation: what its two parts share. prepare_corpus.c
 * lists the input files and reads them into documents in blocks;
 * prepare.c trains or loads the tokenizer, encodes the documents into
 * shards, writes prepare.json and puts the output in place. prepare.h is
 * the one public contract.
 *
 * Ownership: a struct lt_corpus owns its files' paths until
 * lt_corpus_free and borrows its name from the options; the strings that
 * lt_prepare_copy_string returns are the caller's. */
#ifndef LT_PREPARE_IMPL_H
#define LT_PREPARE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "text/prepare.h"
#include "text/tokenizer.h"

/* Files are read this much at a time unless the options say otherwise. */
#define LT_PREPARE_READ_BLOCK ((size_t)1 << 20)

/* A copy of s in new memory; NULL (with the error set) when memory is out. */
char *lt_prepare_copy_string(const char *s);

/* Document (or example) i goes to validation when floor((i+1) f) >
 * floor(i f); a fraction f needs lt_prepare_documents_needed(f) of them
 * for one to be held out. */
int lt_prepare_is_validation(double f, uint64_t i);
uint64_t lt_prepare_documents_needed(double f);

/* ---------------------------------------------------------- the corpus */

struct lt_corpus_file {
	char *path;
	uint64_t bytes, docs;
};

struct lt_corpus {
	struct lt_corpus_file *files;
	int n, cap;
	const char *name;     /* for messages: the input, or the first of them */
	int more_inputs;      /* inputs beyond the first */
};

void lt_corpus_free(struct lt_corpus *c);
/* The inputs in the order given, each directory's files sorted. */
enum lt_status lt_corpus_list(const struct lt_prepare_opts *o, struct lt_corpus *c);
/* "CORPUS: " in messages: the only input, or the first and a count. */
void lt_corpus_prefix_errmsg(const struct lt_corpus *c);

/* ------------------------------------------------- documents in blocks */

/* A document, or a piece of one, handed on as it is read: text[0..len),
 * with doc_end set on the last piece of each document. Pieces are cut only
 * where an ASCII non-space meets ASCII whitespace, where no pre-token of
 * the GPT-2 pattern can span the cut, so encoding the pieces one by one
 * gives the ids of the whole document. */
typedef enum lt_status (*lt_segment_fn)(void *ctx, const char *text, size_t len, int doc_end);

/* Every file of the corpus through fn; counts bytes and documents (each
 * file's into c->files too). A line equal to sep (a CR before its newline
 * allowed) ends a document, as does each file; "" makes each file one
 * document. Empty documents are dropped. Files are read block bytes at a
 * time (0: LT_PREPARE_READ_BLOCK). */
enum lt_status lt_corpus_scan(struct lt_corpus *c, const char *sep, size_t block, lt_segment_fn fn,
			      void *ctx, uint64_t *bytes, uint64_t *docs);

/* ------------------------------------------------------------ chat data */

/* The JSON Lines files of c rendered with o->chat_template (or the
 * tokenizer's) into example shards, tokenizer.json and prepare.json in
 * dir; r gets the counts (prepare_chat.c). */
enum lt_status lt_prepare_chat(const struct lt_prepare_opts *o, struct lt_corpus *c,
			       lt_tokenizer *tok, const char *dir,
			       struct lt_prepare_report *r);

#endif

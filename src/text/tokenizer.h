/* The BPE tokenizer: training a byte-level one on text, encoding to int32
 * ids, decoding back to bytes, and Hugging Face tokenizer.json files.
 *
 * Text is split into pre-tokens with GPT-2's pattern (contractions, an
 * optional space then letters, numbers or other symbols, then runs of
 * whitespace), each pre-token's bytes start as the 256 byte tokens, and
 * learned merges join adjacent tokens in rank order, exactly as the Hugging
 * Face `tokenizers` BPE model does, so its library loads what we save and
 * encodes to the same ids. Bytes that are not valid UTF-8 are pre-tokens of
 * their own, so every byte string round-trips.
 *
 * A loaded tokenizer.json may instead pre-tokenize with the patterns and
 * digit splits its pre_tokenizer names (Split, Digits, ByteLevel, Metaspace
 * and Sequences of them: SmolLM2's and Llama 3's among others), or be of
 * the SentencePiece style of Llama 2, TinyLlama and Mistral: a vocabulary
 * of text with U+2581 for spaces (a Prepend and Replace normalizer, or
 * Metaspace), characters as first symbols, <0xNN> tokens for the bytes of
 * a character without a token (byte_fallback), and the unknown token.
 *
 * A trained tokenizer has ids 0..255 for the bytes 0..255, id 256 for the
 * special token "<|endoftext|>" (fixed, whatever the merges), then one id per
 * merged token in the order learned. A loaded file keeps the ids it holds.
 * Plain encoding never produces a special token, even where the text holds
 * "<|endoftext|>" literally; lt_tokenizer_append_eot adds the id between
 * documents. lt_tokenizer_encode_special splits added tokens out of the
 * text first, as the Hugging Face library does.
 *
 * Ownership: every lt_tokenizer and lt_tokenizer_trainer is the caller's,
 * released with its _free (which accepts NULL); functions borrow their
 * arguments and copy what they keep. An lt_ids is the caller's struct; its
 * array grows inside encode and is released with lt_ids_free. Encoding fills
 * a cache inside the tokenizer, so one tokenizer serves one thread at a time:
 * give each other thread an lt_tokenizer_clone. */
#ifndef LT_TOKENIZER_H
#define LT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct lt_tokenizer lt_tokenizer;
typedef struct lt_tokenizer_trainer lt_tokenizer_trainer;
struct lt_gguf_writer;

/* The document separator, its id in every trained tokenizer, and the
 * largest vocabulary lltrain trains or loads. */
#define LT_TOKENIZER_EOT "<|endoftext|>"
#define LT_TOKENIZER_EOT_ID 256
#define LT_TOKENIZER_MAX_VOCAB (1 << 24)

struct lt_tokenizer_train_opts {
	/* Ids wanted in all: 256 bytes + the special token + merged tokens, so
	 * at least 257. Training stops earlier when no pair is left that occurs
	 * min_frequency times; lt_tokenizer_vocab_size says what came out. */
	int vocab_size;
	/* A pair seen fewer times than this over the corpus is never merged
	 * (0 and 1 both mean any pair). */
	long min_frequency;
};

/* A growable array of ids: zero-initialise it, let encode append to it,
 * release it with lt_ids_free (which leaves it empty and reusable). */
typedef struct lt_ids {
	int32_t *v;
	size_t n, cap;
} lt_ids;

void lt_ids_free(lt_ids *ids);

/* Training in three steps: new, add text (any number of calls, each call a
 * whole text: no pre-token spans two calls), finish. Only the table of
 * distinct pre-tokens with their counts is kept, so a corpus larger than
 * memory streams through. Ties between equally frequent pairs go to the
 * pair of smaller (left id, right id), so training is deterministic. */
enum lt_status lt_tokenizer_trainer_new(const struct lt_tokenizer_train_opts *opts,
		lt_tokenizer_trainer **out);
enum lt_status lt_tokenizer_trainer_add(lt_tokenizer_trainer *tr, const char *text, size_t len);
/* Streams a file (the whole file is one text) in blocks of 1 MiB, each cut
 * in its second half where an ASCII non-space is followed by whitespace,
 * which leaves the pre-tokens exactly as in one piece; a half-block with no
 * such place (512 KiB without ASCII spaces) is cut at a UTF-8 character
 * boundary instead, which may split one pre-token in two. */
enum lt_status lt_tokenizer_trainer_add_file(lt_tokenizer_trainer *tr, const char *path);
/* Learns the merges; an empty corpus (no bytes added) is refused with
 * LT_ERR_ARG. The trainer can then only be freed. */
enum lt_status lt_tokenizer_trainer_finish(lt_tokenizer_trainer *tr, lt_tokenizer **out);
void lt_tokenizer_trainer_free(lt_tokenizer_trainer *tr);

/* The three steps in one, over n text files or one buffer. */
enum lt_status lt_tokenizer_train_files(const char *const *paths, int n,
		const struct lt_tokenizer_train_opts *opts, lt_tokenizer **out);
enum lt_status lt_tokenizer_train_buffer(const char *text, size_t len,
		const struct lt_tokenizer_train_opts *opts, lt_tokenizer **out);

void lt_tokenizer_free(lt_tokenizer *tok);
enum lt_status lt_tokenizer_clone(const lt_tokenizer *tok, lt_tokenizer **out);

/* Appends the ids of text[0..len) to out. Any bytes are accepted. */
enum lt_status lt_tokenizer_encode(lt_tokenizer *tok, const char *text, size_t len, lt_ids *out);
/* Like lt_tokenizer_encode, but where the text spells an added token
 * (special or not; the longest of those starting at a place) that token's
 * id comes out, and the stretches between them are encoded each alone. */
enum lt_status lt_tokenizer_encode_special(lt_tokenizer *tok, const char *text, size_t len, lt_ids *out);
/* The id of the token whose text is text[0..len) (an added token first),
 * or -1 when there is none. */
int lt_tokenizer_token_id(const lt_tokenizer *t, const char *text, size_t len);
/* Appends the id of "<|endoftext|>"; LT_ERR_NOTFOUND for a loaded file
 * that has no such token. */
enum lt_status lt_tokenizer_append_eot(const lt_tokenizer *tok, lt_ids *out);
/* The bytes of ids[0..n) (special tokens give their text), in a new
 * NUL-terminated buffer of *len bytes (plus the NUL) that the caller frees
 * with free(). An id outside the vocabulary is LT_ERR_ARG. */
enum lt_status lt_tokenizer_decode(const lt_tokenizer *tok, const int32_t *ids, size_t n,
		char **text, size_t *len);

int32_t lt_tokenizer_vocab_size(const lt_tokenizer *tok);
/* The id of "<|endoftext|>", or -1 where a loaded file lacks it. */
int32_t lt_tokenizer_eot_id(const lt_tokenizer *tok);
/* The bytes of one token, owned by the tokenizer (NULL for a bad id). */
const char *lt_tokenizer_token(const lt_tokenizer *tok, int32_t id, size_t *len);
/* The id of the special or added token whose text is text[0..len) (such
 * as "<|im_start|>"), or -1 when the tokenizer has none. */
int lt_tokenizer_token_id(const lt_tokenizer *tok, const char *text, size_t len);
/* The merges in rank order: rank r joins left and right into the token to. */
int32_t lt_tokenizer_n_merges(const lt_tokenizer *tok);
enum lt_status lt_tokenizer_merge(const lt_tokenizer *tok, int32_t rank,
		int32_t *left, int32_t *right, int32_t *to);

/* Writes dir/tokenizer.json and dir/tokenizer_config.json (creating dir
 * if it does not exist), each atomically: a temporary file in dir, fsync,
 * rename. model_max_length is the context length the config advertises. */
enum lt_status lt_tokenizer_save(const lt_tokenizer *tok, const char *dir, long model_max_length);
/* Reads a Hugging Face tokenizer.json (path is the file or a directory
 * holding it) of a BPE model: byte-level (the 256 byte tokens, a ByteLevel
 * pre-tokenizer or decoder, no normalizer) or text-level as described
 * above. Anything else fails with LT_ERR_FORMAT and one line naming the
 * file, the JSON path and what was expected. The post-processor is not
 * applied (as with add_special_tokens=False), but saving writes it back,
 * with the normalizer, pre-tokenizer and decoder as the file had them.
 * A file that starts with GGUF's magic is read by lt_tokenizer_load_gguf. */
enum lt_status lt_tokenizer_load(const char *path, lt_tokenizer **out);
/* Reads the tokenizer of a GGUF file: tokenizer.ggml.model gpt2 (tokens,
 * merges, token_type, and pre gpt-2 (or gpt2), smollm or llama-bpe) or llama
 * (SentencePiece: tokens, scores, token_type with its <0xNN> byte tokens,
 * add_space_prefix). It becomes the tokenizer.json that Hugging Face's
 * conversion of the same model gives (a SentencePiece vocabulary's merges
 * are every split of a token into two, ranked by the joined token's
 * score), so it encodes alike, and lt_tokenizer_save writes that file.
 * Control tokens are special added tokens, user-defined ones added ones. */
enum lt_status lt_tokenizer_load_gguf(const char *path, lt_tokenizer **out);
/* Adds to a GGUF writer the tokenizer.ggml.* metadata that llama.cpp
 * reads for the tokenizer.json at path (tok is the same file loaded):
 * model gpt2, pre (gpt-2, smollm or llama-bpe, the pre-tokenizer the
 * file has), tokens and token_type for vocab_size ids (control for
 * special added tokens, user-defined for other added ones, "[PADn]"
 * unused for ids without a token), merges, bos and eos (config_path's
 * tokenizer_config.json bos_token and eos_token where it names them, else
 * the end-of-text token), add_bos_token and add_eos_token false, and
 * tokenizer.chat_template where the config has one. config_path may be
 * NULL. A SentencePiece-style tokenizer, or a pre-tokenizer llama.cpp
 * does not know, is LT_ERR_FORMAT naming the file. */
enum lt_status lt_tokenizer_add_gguf(const char *path, const char *config_path,
		const lt_tokenizer *tok, int32_t vocab_size, struct lt_gguf_writer *w);

#endif

/* The op tests' harness (test_ops, test_vocab_xent): device arrays between
 * sentinels, bf16-aware uploads and downloads, a seeded rng, relative-L2
 * checks against float64 references (those of the ops both test among
 * them), and the run of a program's op groups on every backend, each
 * beside the CPU backend.
 *
 * Ownership: every float and double array the harness returns is the
 * caller's, to free(); device arrays belong to their struct oh_arrays
 * until oh_arrays_free. On running out of host memory or device buffers
 * the harness bails out (TAP's "Bail out!") rather than returning. */
#ifndef LT_TEST_OP_HARNESS_H
#define LT_TEST_OP_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Tolerances, relative L2. An op in f32 against its float64 reference
 * (fed the same values) is within OH_TOL. bf16 keeps an 8-bit significand
 * (7 bits stored), so one rounding to nearest is off by at most
 * OH_BF16_U = 2^-8 of the value, and an array of such results by at most
 * OH_BF16_U; a result that goes through k roundings is within
 * OH_BF16_TOL(k). A float64 gradient against central differences of step
 * OH_FD_EPS is within OH_FD_TOL. */
#define OH_TOL 1e-5
#define OH_BF16_U 0x1p-8
#define OH_BF16_TOL(k) ((k) * OH_BF16_U + OH_TOL)
#define OH_FD_TOL 1e-6
#define OH_FD_EPS 1e-6

/* Sentinel elements on each side of every device array, and the most
 * arrays one op group may hold at once. */
#define OH_GUARD 5
#define OH_MAX_ARRAYS 64

/* Ends the run with "Bail out! <message>" and exit status 1. */
_Noreturn void oh_bail_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* bytes zeroed bytes (at least one), or a bail-out naming the size. */
void *oh_alloc(size_t bytes);
/* n zeroed floats, n zeroed doubles. */
float *oh_floats(size_t n);
double *oh_doubles(size_t n);

/* splitmix64: small, seeded, and the same on every platform. */
struct oh_rng {
	uint64_t s;
};

uint64_t oh_rng_next(struct oh_rng *r);
/* uniform in [lo, hi), from the top 24 bits of one draw */
float oh_rng_uniform(struct oh_rng *r, float lo, float hi);
/* in [0, n) */
int32_t oh_rng_below(struct oh_rng *r, int n);
/* n uniform values in [lo, hi), one draw each, made values of type t
 * (rounded to bf16, to nearest even, for LT_BF16). */
float *oh_random_values(struct oh_rng *r, size_t n, float lo, float hi, enum lt_dtype t);
/* x[n] as doubles */
double *oh_widened(const float *x, size_t n);
/* "cpu" or "cpu bf16": a backend and mode, for check descriptions. */
void oh_label(char *dst, size_t cap, lt_backend *be, enum lt_dtype t);

/* Device arrays of one op group: each sits OH_GUARD elements into its own
 * buffer, between sentinels of its own (so an overrun that copies one
 * array's guard onto another's is still seen), and starts as NaN so that
 * an op which must overwrite it cannot get away with reading it. oh_main
 * hands each group its own, with the backend and its label. */
struct oh_arrays {
	lt_backend *be;
	char name[64];          /* the backend and mode, as oh_label */
	int count;
	lt_buf *buf[OH_MAX_ARRAYS];
	size_t len[OH_MAX_ARRAYS];
};

/* A NaN-filled array of n elements of type t: f32 or bf16, or i32 for
 * token ids (NaN's bits). */
lt_ref oh_array(struct oh_arrays *a, enum lt_dtype t, size_t n);
/* An array of type t (f32 or bf16) holding host[n], values of that type. */
lt_ref oh_values(struct oh_arrays *a, enum lt_dtype t, const float *host, size_t n);
/* An i32 array holding the token ids host[n]. */
lt_ref oh_ids(struct oh_arrays *a, const int32_t *host, size_t n);
/* dst[n] = host[n], rounded to bf16 where dst's buffer is bf16. */
void oh_write_floats(lt_backend *be, lt_ref dst, const float *host, size_t n);
/* src[n], an f32 or bf16 array, as floats (bf16 widened: exact); the CPU
 * twin of oh_main sees every array read so. */
float *oh_read_floats(struct oh_arrays *a, lt_ref src, size_t n);
/* Whether the sentinels on both sides of every array of a are intact. */
int oh_guards_intact(const struct oh_arrays *a);
/* Frees a's arrays; a may take new ones afterwards. */
void oh_arrays_free(struct oh_arrays *a);

/* OH_TOL in f32; OH_BF16_TOL(k) when t is bf16: a result that k
 * roundings to bf16 reach. */
double oh_tol(enum lt_dtype t, int k);
/* One check, got[n] within tol of want[n] in relative L2, described as
 * "<fmt's text>: rel L2 ERR <= TOL"; returns whether it passed. */
int oh_check_close(double tol, const float *got, const double *want, size_t n, const char *fmt,
		   ...) __attribute__((format(printf, 5, 6)));

/* A float64 loss L(x), reading x through ctx. */
typedef double oh_loss_fn(void *ctx);
/* One check: analytic[n], a reference's gradient of loss in x[n], within
 * OH_FD_TOL of (L(x + eps e_i) - L(x - eps e_i)) / 2 eps, eps OH_FD_EPS,
 * described as "reference <fmt's text> vs central differences ...". x is
 * restored afterwards. */
int oh_check_gradient(double *x, const double *analytic, size_t n, oh_loss_fn *loss, void *ctx,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* float64 references of the ops both programs test. */

/* logits[N,V], targets[N] -> losses[N] = logsumexp(logits[n,:]) - the
 * target's logit (0 when targets[n] < 0); grad[N,V] (if not NULL) =
 * grad_scale (softmax - onehot), a zero row for an ignored target. */
void oh_ref_xent(double *losses, double *grad, const double *logits, const int32_t *targets,
		 int N, int V, double grad_scale);
/* out[N,C] = table[tokens[n], :], a zero row where tokens[n] < 0 */
void oh_ref_embedding_forward(double *out, const int32_t *tokens, const double *table, int N,
			      int C);
/* dtable[., C] += dout[n, :] at row tokens[n], for each tokens[n] >= 0 */
void oh_ref_embedding_backward(double *dtable, const int32_t *tokens, const double *dout, int N,
			       int C);
/* One check each, described by fmt as oh_check_gradient does. oh_prove_xent:
 * oh_ref_xent's gradient over 9 rows of V logits from [-4, 4), targets 0,
 * 17, -1, V - 1, 42, 42, -100, 3, 88 (V > 88), grad_scale 0.3.
 * oh_prove_embedding: oh_ref_embedding_backward as the gradient of
 * sum(proj * oh_ref_embedding_forward(table)) in a table of 11 rows of 7
 * from [-1, 1), for tokens[9] and a proj from [-1, 1). */
int oh_prove_xent(struct oh_rng *r, int V, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int oh_prove_embedding(struct oh_rng *r, const int32_t *tokens, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The embedding ops on one problem: tokens[N] drawn from [0, rows) but
 * for the pairs (index, token) of fixed[n_fixed]; a table[rows, C] and
 * dout[N, C] of type t and a non-zero f32 dtable[rows, C] from [-1, 1)
 * (table, dtable, dout); embedding_forward into a NaN-filled out of type
 * t, read back, then embedding_backward += into dtable, read back. The
 * caller fills the first block and frees with oh_embedding_free. */
struct oh_embedding {
	int N, C, rows;
	const int32_t (*fixed)[2];
	int n_fixed;
	int32_t *tokens;
	float *table, *out, *dtable;         /* out and dtable as read back */
	double *want_out, *want_dtable;      /* their float64 references */
	lt_ref rtok, rtable;                 /* for more ops on the same inputs */
};
void oh_embedding_run(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t,
		      struct oh_embedding *e);
void oh_embedding_free(struct oh_embedding *e);

/* A cross-entropy problem: targets[N] drawn from [0, V) but for the pairs
 * (index, target) of fixed[n_fixed]; logits z[N, V] of type t from
 * [-4, 4); oh_ref_xent's losses and gradient (grad_scale) of z. The caller
 * fills the first block and frees with oh_xent_free. */
struct oh_xent {
	int N, V;
	double grad_scale;
	const int32_t (*fixed)[2];
	int n_fixed;
	int32_t *targets;
	float *z;
	double *zd, *want_loss, *want_grad;  /* z widened; the reference's */
};
void oh_xent_new(struct oh_rng *r, enum lt_dtype t, struct oh_xent *x);
void oh_xent_free(struct oh_xent *x);

/* Runs op group g in mode t (LT_F32 or LT_BF16) on a->be, with its
 * arrays in a (freed after it returns), and makes its checks; returns what
 * it tested, for the twin's check. */
typedef const char *oh_group_fn(struct oh_arrays *a, struct oh_rng *r, int g, enum lt_dtype t);

/* A test program: its references, then its op groups on every backend,
 * in f32 (mode 0) and in bf16 (mode 1). */
struct oh_suite {
	int reference_checks;   /* checks prove makes */
	void (*prove)(void);    /* the references against central differences */
	int groups[2];          /* op groups run in each mode, 0 .. groups - 1 */
	int checks[2];          /* checks those groups make in each mode */
	oh_group_fn *run;
	uint64_t seed;          /* the groups' rng, afresh for each backend */
	/* A backend other than the CPU runs each group after the CPU backend
	 * did with the same inputs (its checks muted), and makes one check
	 * more: every array it read within twin_tol[mode] of the CPU's, as
	 * "NAME against the cpu backend, WHAT: I of N <counted>, worst rel L2
	 * ERR <= TOL". */
	double twin_tol[2];
	const char *counted;
	/* Where set, an element equal on both backends is left out of the
	 * twin's norms, so its error is relative to the elements that differ. */
	int twin_equal_left_out;
	/* (optional) called once the backend for spec has opened */
	void (*opened)(lt_backend *be, const char *spec);
};

/* The program's main: tests the backends LT_TEST_BACKENDS lists
 * ("cpu,opencl:0.1"), else every compiled-in one. Plans every check,
 * runs s->prove, then for each backend one check that it opens (where it
 * does not, the rest of its checks fail) and its groups; returns the exit
 * status. */
int oh_main(const struct oh_suite *s);

#endif

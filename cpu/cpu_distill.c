/* The CPU body of the fused distillation loss (backend.h's distill): the
 * cross-entropy row of xent, the teacher's and the student's softmax at a
 * temperature, and one gradient in place of the student's logits. */
#include "config.h"
#include "cpu_impl.h"

#include <math.h>
#include <omp.h>

/* Rows summed in float over this many logits at a time, then in double. */
#define DISTILL_BLOCK 256
/* Below this many logits the op stays on the calling thread. */
#define DISTILL_PAR_MIN 16384

/* What one row needs of its softmaxes at temperature T: the maxima of the
 * student's row z and the teacher's row y, and the sums over j of
 * q_j = exp((z_j - zmax) / T), u_j = exp((y_j - ymax) / T) and
 * u_j ((y_j - ymax) - (z_j - zmax)). */
struct tempered {
	float zmax, ymax;
	double q, u, cross;
};

/* The sums of struct tempered over a row, q_j kept in q[V] for the gradient. */
LT_CPU_HOT static struct tempered tempered_sums(const float *restrict z, const float *restrict y,
						float *restrict q, int V, float inv_t)
{
	struct tempered s = { lt_cpu_max(z, V), lt_cpu_max(y, V), 0.0, 0.0, 0.0 };
	float zm = s.zmax, ym = s.ymax;
	for (int j0 = 0; j0 < V; j0 += DISTILL_BLOCK) {
		int j1 = V - j0 < DISTILL_BLOCK ? V : j0 + DISTILL_BLOCK;
		float pq = 0.0f, pu = 0.0f, pc = 0.0f;
#pragma omp simd reduction(+ : pq, pu, pc)
		for (int j = j0; j < j1; j++) {
			float dz = z[j] - zm, dy = y[j] - ym;
			float qj = lt_cpu_expf(dz * inv_t), uj = lt_cpu_expf(dy * inv_t);
			q[j] = qj;
			pq += qj;
			pu += uj;
			pc += uj * (dy - dz);
		}
		s.q += pq;
		s.u += pu;
		s.cross += pc;
	}
	return s;
}

/* T^2 KL(softmax(y / T) || softmax(z / T)) from the sums:
 * KL = sum_j p_j (log p_j - log q_j) = cross / (T u) - log u + log q. */
static float tempered_kl(const struct tempered *s, double temperature)
{
	double kl = s->cross / (temperature * s->u) - log(s->u) + log(s->q);
	return (float)(temperature * temperature * kl);
}

/* x[V] (xent's gradient of the row, grad_scale (softmax - onehot)) becomes
 * alpha x + c (q / sum q - u / sum u), u_j recomputed from the teacher's y. */
LT_CPU_HOT static void mix_gradient(float *restrict x, const float *restrict q,
				    const float *restrict y, int V, const struct tempered *s,
				    float alpha, float c, float inv_t)
{
	float iq = (float)(1.0 / s->q), iu = (float)(1.0 / s->u), ym = s->ymax;
#pragma omp simd
	for (int j = 0; j < V; j++) {
		float pj = lt_cpu_expf((y[j] - ym) * inv_t) * iu;
		x[j] = alpha * x[j] + c * (q[j] * iq - pj);
	}
}

/* One row: its cross-entropy (returned), its T^2 KL into *kl and, with
 * write, the gradient in place of z. tmp holds V floats. */
static float distill_row(float *restrict z, const float *restrict y, float *restrict tmp, int V,
			 int t, const struct lt_distill_loss *d, int write, float *kl)
{
	if (t < 0) {
		*kl = 0.0f;
		return lt_cpu_xent_row(z, V, t, d->grad_scale, write);
	}
	float inv_t = 1.0f / d->temperature;
	struct tempered s = tempered_sums(z, y, tmp, V, inv_t);
	*kl = tempered_kl(&s, d->temperature);
	float loss = lt_cpu_xent_row(z, V, t, d->grad_scale, write);
	if (write)
		mix_gradient(z, tmp, y, V, &s, d->alpha,
			     d->grad_scale * (1.0f - d->alpha) * d->temperature, inv_t);
	return loss;
}

/* losses[N], kl[N] and, with grad_scale != 0, the gradient in place of
 * logits[N,V], as backend.h writes it. Each thread keeps a row of the
 * tempered student's exponentials, and where an argument is bf16 the
 * student's and the teacher's rows widened (rounded back once when
 * written). */
void lt_cpu_distill(lt_backend *be, lt_ref losses, lt_ref kl, lt_ref logits, lt_ref teacher,
		    lt_ref targets, int N, int V, const struct lt_distill_loss *d)
{
	struct lt_cpu_ctx *c = lt_cpu_ctx(be);
	LT_ASSERT(N >= 0 && V > 0 && d->temperature > 0.0f);
	LT_ASSERT(d->alpha >= 0.0f && d->alpha <= 1.0f);
	size_t VV = (size_t)V, NV = (size_t)N * V;
	float *loss = lt_cpu_at(losses, (size_t)N), *klv = lt_cpu_at(kl, (size_t)N);
	struct lt_cpu_vec z = lt_cpu_vec(logits, NV), y = lt_cpu_vec(teacher, NV);
	const int32_t *tgt = lt_cpu_ids(targets, (size_t)N);
	int write = d->grad_scale != 0.0f;
	if (c->failed || N == 0)
		return;
	double t0 = lt_cpu_prof_start(c);
	float *stage = lt_cpu_stage(c, 3 * VV);
	if (!stage)
		return;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (parallel: NV >= DISTILL_PAR_MIN)
	for (int n = 0; n < N; n++) {
		LT_ASSERT(tgt[n] < V);
		size_t at = (size_t)n * V;
		float *tmp = lt_cpu_slot(stage, (size_t)omp_get_thread_num(), 3 * VV);
		float *row = lt_cpu_dest_of(z, at, VV, tmp + VV);
		const float *trow = lt_cpu_load(y, at, VV, tmp + 2 * VV);
		loss[n] = distill_row(row, trow, tmp, V, tgt[n], d, write, &klv[n]);
		if (write)
			lt_cpu_store(z, at, VV, row);
	}
	lt_cpu_prof_stop(c, "distill", t0);
}

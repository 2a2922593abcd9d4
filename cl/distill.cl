/* The fused distillation loss (src/backend.h's distill), built after
 * ops.cl, whose accumulators and cross-entropy helpers it shares: one
 * work-group per row, the cross-entropy as lt_xent computes it, then the
 * tempered softmaxes of the teacher and the student and one gradient. */

/* The largest of the items' v over the group (a power of two), NaNs passed
 * over; every item gets it. sh holds local_size. */
static inline float group_max(local float *sh, float v)
{
	int lid = get_local_id(0);
	sh[lid] = v;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = get_local_size(0) / 2; h > 0; h >>= 1) {
		if (lid < h)
			sh[lid] = sh[lid + h] > sh[lid] ? sh[lid + h] : sh[lid];
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	float r = sh[0];
	barrier(CLK_LOCAL_MEM_FENCE);
	return r;
}

/* The largest of this item's columns of the row y[V]. */
BODY float item_max(global const uchar *y, int V, int bf)
{
	float m = -INFINITY;
	for (int j = get_local_id(0); j < V; j += get_local_size(0)) {
		float v = load_elem(y, j, bf);
		m = v > m ? v : m;
	}
	return m;
}

/* This item's sums over its columns: q += exp((z - zm) / T),
 * u += exp((y - ym) / T), cr += that u term times ((y - ym) - (z - zm)). */
BODY void tempered_share(global const uchar *z, global const uchar *y, int V, float zm, float ym,
			 float inv_t, acc_t *q, acc_t *u, acc_t *cr, int zbf, int ybf)
{
	for (int j = get_local_id(0); j < V; j += get_local_size(0)) {
		float dz = load_elem(z, j, zbf) - zm, dy = load_elem(y, j, ybf) - ym;
		float uj = exp(dy * inv_t);
		*q = acc_add(*q, exp(dz * inv_t));
		*u = acc_add(*u, uj);
		*cr = acc_add(*cr, uj * (dy - dz));
	}
}

/* What the gradient pass needs of a row. */
struct mix {
	int t;
	float zm, k, grad_scale, ym, inv_t, iq, iu, alpha, c;
};

/* This item's columns of z = alpha * grad_scale * (softmax - onehot)
 * + c (softmax(z / T) - softmax(y / T)). */
BODY void mix_share(global uchar *z, global const uchar *y, int V, const struct mix *m, int zbf,
		    int ybf)
{
	for (int j = get_local_id(0); j < V; j += get_local_size(0)) {
		float s = load_elem(z, j, zbf), e = exp(s - m->zm) * m->k;
		e = j == m->t ? e - m->grad_scale : e;
		float p = exp((load_elem(y, j, ybf) - m->ym) * m->inv_t) * m->iu;
		float q = exp((s - m->zm) * m->inv_t) * m->iq;
		store_elem(z, j, m->alpha * e + m->c * (q - p), zbf);
	}
}

/* losses[N], kl[N] and (write) the gradient in place of z[N,V] from the
 * teacher's y[N,V]; an ignored row (target < 0) reads nothing: 0, 0 and,
 * with write, zeros. shm and shs hold local_size. */
kernel void lt_distill(global float *loss_base, ulong loss_off, global float *kl_base,
		       ulong kl_off, global uchar *z_base, ulong z_off, int z_bf,
		       global const uchar *y_base, ulong y_off, int y_bf,
		       global const int *tgt_base, ulong tgt_off, int V, float alpha,
		       float temperature, float grad_scale, int write, local float *shm,
		       local acc_t *shs)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), t = tgt_base[tgt_off + n];
	global uchar *z = ELEM_AT(z_base, z_off + n * V, z_bf);
	global const uchar *y = ELEM_AT(y_base, y_off + n * V, y_bf);
	if (t < 0) {
		for (int j = lid; write && j < V; j += get_local_size(0))
			store_elem(z, j, 0.0f, z_bf);
		if (lid == 0)
			loss_base[loss_off + n] = kl_base[kl_off + n] = 0.0f;
		return;
	}
	float zt = t < V ? load_elem(z, t, z_bf) : NAN, zm, inv_t = 1.0f / temperature;
	acc_t total = group_softmax(z, V, z_bf, shm, shs, &zm);
	float ym = group_max(shm, y_bf ? item_max(y, V, 1) : item_max(y, V, 0));
	acc_t q = acc_zero(), u = acc_zero(), cr = acc_zero();
	if (z_bf | y_bf)
		tempered_share(z, y, V, zm, ym, inv_t, &q, &u, &cr, z_bf, y_bf);
	else
		tempered_share(z, y, V, zm, ym, inv_t, &q, &u, &cr, 0, 0);
	q = group_sum_acc(shs, q);
	u = group_sum_acc(shs, u);
	cr = group_sum_acc(shs, cr);
	struct mix m = { t, zm, 0.0f, grad_scale, ym, inv_t, 0.0f, 0.0f, alpha,
			 grad_scale * (1.0f - alpha) * temperature };
#ifdef LT_FP64
	double T = temperature;
	if (lid == 0) {
		loss_base[loss_off + n] = (float)((double)zm + log(total) - (double)zt);
		kl_base[kl_off + n] = (float)(T * T * (cr / (T * u) - log(u) + log(q)));
	}
	m.k = (float)(grad_scale / total);
	m.iq = (float)(1.0 / q);
	m.iu = (float)(1.0 / u);
#else
	float T = temperature, fq = acc_float(q), fu = acc_float(u);
	if (lid == 0) {
		loss_base[loss_off + n] = zm + log(acc_float(total)) - zt;
		kl_base[kl_off + n] = T * T * (acc_float(cr) / (T * fu) - log(fu) + log(fq));
	}
	m.k = grad_scale / acc_float(total);
	m.iq = 1.0f / fq;
	m.iu = 1.0f / fu;
#endif
	if (!write)
		return;
	if (z_bf | y_bf)
		mix_share(z, y, V, &m, z_bf, y_bf);
	else
		mix_share(z, y, V, &m, 0, 0);
}

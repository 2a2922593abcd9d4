/* The cross-entropy over a slice of the vocabulary (src/backend.h's
 * xent_part and xent_part_grad), built after ops.cl, whose accumulators
 * and group_softmax it shares: a row's max, sum of exponentials and
 * target logit over the slice's real columns, merged over the group as
 * lt_xent merges them, and the gradient from the whole row's logsumexp. */

/* part[N,3] = (max, sum of exp(x - max), target logit) of each row of the
 * slice z[N,V] over its real columns c < valid, row shape; targets are in
 * the whole vocabulary, the slice starting at v0. A row with no real
 * column gives (-inf, 0, 0). shm and shs hold local_size. */
kernel void lt_xent_part(global float *part_base, ulong part_off, global const uchar *z_base,
			 ulong z_off, int z_bf, global const int *tgt_base, ulong tgt_off, int V,
			 int valid, int v0, local float *shm, local acc_t *shs)
{
	size_t n = get_group_id(0);
	int t = tgt_base[tgt_off + n];
	global const uchar *x = ELEM_AT(z_base, z_off + n * V, z_bf);
	float mx;
	acc_t total = group_softmax(x, valid, z_bf, shm, shs, &mx);
	if (get_local_id(0) == 0) {
		global float *p = part_base + part_off + 3 * n;
		int c = t - v0;
		p[0] = mx;
		p[1] = acc_float(total);
		p[2] = t >= 0 && t >= v0 && c < valid ? load_elem(x, c, z_bf) : 0.0f;
	}
}

/* z[N,V] = grad_scale * (exp(z - lse[n]) - onehot(t - v0)) in the columns
 * c < valid, 0 in the rest and in every column of an ignored row
 * (t < 0), in place; tile shape over (n, column). */
BODY void xent_part_grad_body(global uchar *z, global const float *lse, global const int *tgt,
			      int V, int valid, int v0, float grad_scale, int tiles, int bf)
{
	int g = get_group_id(0), n = g / tiles;
	int c = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (c >= V)
		return;
	int t = tgt[n];
	size_t at = (size_t)n * V + c;
	float v = 0.0f;
	if (t >= 0 && c < valid) {
		v = grad_scale * exp(load_elem(z, at, bf) - lse[n]);
		v = c == t - v0 ? v - grad_scale : v;
	}
	store_elem(z, at, v, bf);
}

kernel void lt_xent_part_grad(global uchar *z_base, ulong z_off, int z_bf,
			      global const float *lse_base, ulong lse_off,
			      global const int *tgt_base, ulong tgt_off, int V, int valid, int v0,
			      float grad_scale, int tiles)
{
	global uchar *z = ELEM_AT(z_base, z_off, z_bf);
	global const float *lse = lse_base + lse_off;
	global const int *tgt = tgt_base + tgt_off;
	if (z_bf)
		xent_part_grad_body(z, lse, tgt, V, valid, v0, grad_scale, tiles, 1);
	else
		xent_part_grad_body(z, lse, tgt, V, valid, v0, grad_scale, tiles, 0);
}

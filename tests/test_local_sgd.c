/* Tests of local SGD's outer step (lt_local_sgd_outer): Nesterov momentum
 * over rounds against values worked out by hand, and outer lr 1 without
 * momentum as the plain mean of the nodes. */
#include "config.h"
#include "dist/local_sgd.h"

#include <math.h>

#include "tap.h"

int main(void)
{
	tap_plan(3);
	/* shared 1, moves 0.1 then 0.2, lr 0.7, mu 0.9:
	 * v = 0.1, shared = 1 - 0.7 (0.1 + 0.09) = 0.867;
	 * v = 0.29, shared = 0.867 - 0.7 (0.2 + 0.261) = 0.5443 */
	float shared = 1, v = 0, g = 0.1f;
	lt_local_sgd_outer(&shared, &v, &g, 1, 0.7f, 0.9f);
	int first = fabsf(shared - 0.867f) < 1e-6f && fabsf(v - 0.1f) < 1e-7f;
	g = 0.2f;
	lt_local_sgd_outer(&shared, &v, &g, 1, 0.7f, 0.9f);
	tap_ok(first && fabsf(shared - 0.5443f) < 1e-6f && fabsf(v - 0.29f) < 1e-6f,
	       "two Nesterov outer steps give 0.867 then 0.5443 (got %.7g, momentum %.7g)",
	       (double)shared, (double)v);

	/* outer lr 1, no momentum: shared - mean(shared - local) = mean(local) */
	float s[3] = { 0.5f, -2, 3 }, m[3] = { 0 }, local0[3] = { 0.25f, -1, 2 },
	      local1[3] = { 0.75f, -4, 5 }, move[3];
	for (int i = 0; i < 3; i++)
		move[i] = ((s[i] - local0[i]) + (s[i] - local1[i])) * 0.5f;
	lt_local_sgd_outer(s, m, move, 3, 1, 0);
	tap_ok(s[0] == 0.5f && s[1] == -2.5f && s[2] == 3.5f,
	       "outer lr 1 without momentum gives the nodes' mean (%g %g %g)", (double)s[0],
	       (double)s[1], (double)s[2]);

	/* a zero move leaves the shared parameters and decays the momentum */
	float s2 = 2, v2 = 1, zero = 0;
	lt_local_sgd_outer(&s2, &v2, &zero, 1, 0.5f, 0.5f);
	tap_ok(v2 == 0.5f && s2 == 2 - 0.5f * 0.25f,
	       "a zero move keeps going on momentum alone (%g, momentum %g)", (double)s2,
	       (double)v2);
	return tap_done();
}

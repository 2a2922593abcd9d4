/* --balance auto: the ranks' shares of a batch follow their measured
 * speed. Each rank keeps its seconds per sequence of every step; the
 * ranks compare them (each the median of its steps since the last
 * comparison) after the second and third steps, then every
 * dist.balance_every steps, and three and four steps after a move. New
 * shares are taken when they promise a shorter step and the shares the
 * comparison before called for still do at the new speeds
 * (lt_shares_rebalance), so that a rank slow for a moment moves nothing.
 *
 * Ownership: lt_balancer_new gives a policy that lt_balancer_free releases;
 * the shares it moves stay the caller's. */
#ifndef LT_BALANCE_H
#define LT_BALANCE_H

#include <stddef.h>

#include "dist/dist.h"
#include "status.h"

typedef struct lt_balancer lt_balancer;

/* A policy for the ranks of d sharing `items` sequences a step
 * (train.batch x train.grad_accum), each rank at least `min_each` of them
 * (train.grad_accum), comparing every `every` steps after the first
 * comparisons (dist.balance_every; 0: no more), for a run whose first
 * step is step + 1 (not measured: it warms caches and allocations). */
enum lt_status lt_balancer_new(lt_dist *d, size_t items, size_t min_each, int every, long step,
			       lt_balancer **out);
void lt_balancer_free(lt_balancer *b);

/* After `step`, whose forward and backward took this rank compute_s
 * seconds (less its waits) on its rows[rank] sequences, where rows[ranks]
 * are the ranks' shares of a step: keeps the time and, when the ranks
 * compare (collectively), moves the shares. A move gives the new shares
 * in rows and *moved = 1: the caller plans for them (the first step on
 * them is not measured). line[cap] gets the line on the shares when one
 * is due, else "": with each move and the two comparisons after it, and
 * with the first decision either way. */
enum lt_status lt_balancer_after(lt_balancer *b, long step, double compute_s, size_t *rows,
				 int *moved, char *line, size_t cap);

#endif

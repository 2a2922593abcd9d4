#!/bin/bash
# Data-parallel scaling of `lltrain train` over MPI ranks on one machine:
# weak scaling (each rank keeps PER_RANK sequences of every batch) from 1 to
# MAX_RANKS ranks of THREADS threads each at ZeRO stage ZERO, printing
# tokens/s, the efficiency against one rank, rank 0's forward + backward
# time, the communication each step waited for, the wait for slower ranks,
# and the machine's ceiling: the efficiency of as many
# one-rank runs at once, with no communication at all; then ZeRO 1 against ZeRO 2 at HIDE_RANKS ranks, printing
# how much of ZeRO 1's wait for the gradient exchange (which starts after
# backward) ZeRO 2 hides behind backward. Waits at a node's barriers count
# as sync (the others had yet to arrive); through one node's memory, CPU
# ranks sum at ZeRO 2 on a thread of their own, which hides the sum where
# each rank has a core beyond THREADS (LLTRAIN_NODE_RANKS=2 tries the
# exchange between nodes).
#
# A shared machine's speed drifts from minute to minute (one rank alone has
# measured 2,665 and 4,445 tokens/s within minutes), so each figure is the
# median of REPEAT runs taken in rounds (every rank count once a round),
# and each row shows the range of its runs' tokens/s.
#
#   bench/mpi_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (15M),
# PER_RANK (4), SEQ (256), THREADS (2), MAX_RANKS (8), HIDE_RANKS (4),
# STEPS (20), UNTIMED (5, the first steps, not timed), REPEAT (3, runs of each figure),
# DEVICE (cpu), VOCAB (8000), ZERO (0), ACCUM
# (1, micro-batches per step), CEILING (yes; no skips the independent runs,
# which share one GPU when DEVICE is a GPU), BIND (yes: where the cores
# suffice, each rank, and each independent run, keeps THREADS cores of its
# own, and its threads stay on them, and where they suffice for one more
# each, a rank keeps that one too, for its summing thread; no: the system
# places them), EXTRA
# (further train arguments of the MPI runs, e.g. "--balance auto").
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-15M} PER_RANK=${PER_RANK:-4} SEQ=${SEQ:-256} THREADS=${THREADS:-2}
MAX_RANKS=${MAX_RANKS:-8} HIDE_RANKS=${HIDE_RANKS:-4} STEPS=${STEPS:-20}
REPEAT=${REPEAT:-3} DEVICE=${DEVICE:-cpu} VOCAB=${VOCAB:-8000} ACCUM=${ACCUM:-1} CEILING=${CEILING:-yes} ZERO=${ZERO:-0}
BIND=${BIND:-yes} EXTRA=${EXTRA:-}
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup mpibench "$@"

# train_args RANKS DIR: the arguments of a run of RANKS ranks into DIR.
train_args() {
	args=(train --preset "$PRESET" --train.batch=$((PER_RANK * $1)) --train.seq="$SEQ"
		--train.grad_accum="$ACCUM"
		--train.steps="$STEPS" --train.max_minutes=0 --data.dir="$tmp/data" --run.dir="$2"
		--run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=1
		--run.checkpoint_every=0 --run.threads="$THREADS" --run.device="$DEVICE")
}

# bind RANKS: sets binding, the launcher's options that give each of RANKS
# ranks THREADS cores of its own, and one more where the cores suffice
# (those that leave them unbound when BIND is no or the cores are too
# few), and exports where OpenMP keeps the threads (on the first THREADS).
bind() {
	local cores=$((THREADS + 1))
	binding=("${unbound[@]}")
	unset OMP_PROC_BIND OMP_PLACES
	[ "$BIND" = yes ] && [ $(($1 * THREADS)) -le "$(nproc)" ] || return 0
	[ $(($1 * cores)) -le "$(nproc)" ] || cores=$THREADS
	export OMP_PROC_BIND=close OMP_PLACES=cores
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		binding=(--map-by "slot:PE=$cores" --bind-to core)
	else
		binding=(-bind-to "core:$cores")
	fi
}

# run RANKS ZERO: prints "tokens/s comm_ms sync_ms reduce_ms compute_ms"
# averaged over the timed steps (sync: waiting for slower ranks to finish
# their share; reduce: the part of comm that waited for the gradient
# exchange; compute: rank 0's forward + backward less those waits).
run() {
	local ranks=$1 zero=$2 dir
	dir=$(mktemp -d "$tmp/run.XXXXXX")
	train_args "$ranks" "$dir"
	bind "$ranks"
	OMP_NUM_THREADS=$THREADS "${launch[@]}" "${binding[@]}" -n "$ranks" "$LLTRAIN" "${args[@]}" \
		--zero "$zero" $EXTRA \
		>"$dir.out" 2>&1 </dev/null || { grep lltrain "$dir.out" >&2; echo "0 0 0 0 0"; return; }
	local tok comm sync red comp
	read -r tok comm sync red comp < <(timed_means "$dir/metrics.jsonl" tokens_per_s comm_s \
		sync_s reduce_s compute_s)
	awk -v t="$tok" -v c="$comm" -v y="$sync" -v g="$red" -v p="$comp" \
		'BEGIN { printf "%.0f %.1f %.1f %.1f %.1f\n", t, 1000 * c, 1000 * y, 1000 * g, 1000 * p }'
}

# apart N: N one-rank runs at once, without MPI: their summed tokens/s
# (0 when CEILING is no).
apart() {
	local i dir dirs=() cores=()
	[ "$CEILING" = no ] && { echo 0; return; }
	bind "$1"
	for i in $(seq 1 "$1"); do
		dir=$(mktemp -d "$tmp/apart.XXXXXX")
		dirs+=("$dir")
		train_args 1 "$dir"
		[ -n "${OMP_PLACES:-}" ] &&
			cores=(taskset -c "$(((i - 1) * THREADS))-$((i * THREADS - 1))")
		OMP_NUM_THREADS=$THREADS "${cores[@]}" "$LLTRAIN" "${args[@]}" >"$dir.out" 2>&1 </dev/null &
	done
	wait
	for dir in "${dirs[@]}"; do
		timed_means "$dir/metrics.jsonl" tokens_per_s
	done | awk '{ t += $1 } END { printf "%.0f\n", t }'
}

# median FILE: the median of each column of FILE's lines, space-separated.
median() {
	awk '{ for (j = 1; j <= NF; j++) v[j, NR] = $j; nf = NF }
		END { for (j = 1; j <= nf; j++) {
			n = 0
			for (i = 1; i <= NR; i++) c[++n] = v[j, i]
			for (i = 2; i <= n; i++)   # insertion sort: n is REPEAT
				for (k = i; k > 1 && c[k - 1] + 0 > c[k] + 0; k--) {
					t = c[k]; c[k] = c[k - 1]; c[k - 1] = t }
			printf "%s%s", (j > 1 ? " " : ""),
				(n % 2 ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2) }
		print "" }' "$1"
}

# The rank counts of the table: 1, then the even ones up to MAX_RANKS.
counts=(1)
for ranks in $(seq 2 2 "$MAX_RANKS"); do counts+=("$ranks"); done

# Rounds: each rank count's MPI run and independent runs once a round, so
# that a drift of the machine's speed falls on every count alike.
for round in $(seq 1 "$REPEAT"); do
	for ranks in "${counts[@]}"; do
		run "$ranks" "$ZERO" >>"$tmp/mpi.$ranks"
		apart "$ranks" >>"$tmp/apart.$ranks"
	done
	run "$HIDE_RANKS" 1 >>"$tmp/hide.1"
	run "$HIDE_RANKS" 2 >>"$tmp/hide.2"
done

echo "lltrain MPI scaling: preset $PRESET, $PER_RANK x $SEQ x $ACCUM tokens per rank per step," \
	"$THREADS threads per rank, device $DEVICE, ZeRO $ZERO, $("${launch[0]}" --version 2>&1 | head -1);" \
	"medians of $REPEAT runs"
printf '%6s %12s %15s %12s %11s %11s %15s %9s %9s\n' ranks "tokens/s" "range" "per rank" \
	efficiency "compute ms" "comm wait ms" "sync ms" ceiling
for ranks in "${counts[@]}"; do
	read -r tok comm sync _ comp < <(median "$tmp/mpi.$ranks")
	read -r lo hi < <(sort -n "$tmp/mpi.$ranks" | awk 'NR == 1 { lo = $1 } { hi = $1 }
		END { print lo, hi }')
	[ "$ranks" -eq 1 ] && base=$tok
	read -r ceiling < <(median "$tmp/apart.$ranks")
	awk -v r="$ranks" -v t="$tok" -v b="$base" -v c="$comm" -v y="$sync" -v a="$ceiling" \
		-v p="$comp" -v lo="$lo" -v hi="$hi" 'BEGIN {
		printf "%6d %12.0f %15s %12.0f %10.1f%% %11.1f %15.1f %9.1f %9s\n", r, t,
			sprintf("%.0f-%.0f", lo, hi), t / r,
			(b ? 100 * t / (r * b) : 0), p, c, y,
			(a && b ? sprintf("%.1f%%", 100 * a / (r * b)) : "-") }'
done
read -r tok1 comm1 sync1 red1 < <(median "$tmp/hide.1")
read -r tok2 comm2 sync2 red2 < <(median "$tmp/hide.2")
awk -v r="$HIDE_RANKS" -v t1="$tok1" -v c1="$comm1" -v y1="$sync1" -v g1="$red1" \
	-v t2="$tok2" -v c2="$comm2" -v y2="$sync2" -v g2="$red2" 'BEGIN {
	f = "ZeRO %d at %d ranks: %.0f tokens/s, exposed communication %.1f ms/step, of which " \
	    "the gradient exchange %.1f ms (sync %.1f ms)\n"
	printf f, 1, r, t1, c1, g1, y1
	printf f, 2, r, t2, c2, g2, y2
	printf "gradient exchange hidden behind backward by ZeRO 2: %.0f%% (ZeRO 2 waited " \
		"%.1f ms/step for it block by block, ZeRO 1 %.1f ms/step after backward)\n",
		(g1 + 0 > g2 + 0 ? 100 * (g1 - g2) / g1 : 0), g2, g1 }'

#!/bin/bash
# A mixed job of one GPU rank and one CPU rank (an MPMD launch): tokens/s
# of each rank alone on the whole batch, of the pair with an even split and
# of the pair with --balance auto; prints auto against the sum of the two
# alone and against the even split. The default step, 64 sequences in each
# of 12 micro-batches, is the size at which a CPU rank is worth adding to a
# GPU rank: the gradient exchange and the update cost the same whatever
# the step's size, and a GPU step of one micro-batch of 32 takes about as
# long as they do (the pair then runs at a fraction of the GPU alone). The
# last line splits rank 0's step of the auto pair into its parts.
#
#   bench/mixed_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (15M),
# BATCH (64), ACCUM (12, micro-batches per step), SEQ (256), STEPS (10),
# UNTIMED (5, the first steps, not timed), GPU (opencl),
# GPU_THREADS (2), CPU_THREADS (cores less GPU_THREADS), VOCAB (8000),
# ZERO (1, the ZeRO stage of the pair).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-15M} BATCH=${BATCH:-64} ACCUM=${ACCUM:-12} SEQ=${SEQ:-256} STEPS=${STEPS:-10}
GPU=${GPU:-opencl} GPU_THREADS=${GPU_THREADS:-2} VOCAB=${VOCAB:-8000} ZERO=${ZERO:-1}
CPU_THREADS=${CPU_THREADS:-$(($(nproc) - GPU_THREADS))}
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup mixedbench "$@"

common=(train --preset "$PRESET" --train.batch="$BATCH" --train.grad_accum="$ACCUM"
	--train.seq="$SEQ" --train.steps="$STEPS"
	--train.max_minutes=0 --data.dir="$tmp/data" --run.eval_every=0 --run.eval_batches=1
	--run.sample_tokens=1 --run.checkpoint_every=0)
gpu=(--run.device="$GPU" --run.threads="$GPU_THREADS")
cpu=(--run.device=cpu --run.threads="$CPU_THREADS")

# speed DIR: the mean tokens/s of the timed steps in DIR/metrics.jsonl.
speed() {
	local tok
	read -r tok < <(timed_means "$1/metrics.jsonl" tokens_per_s)
	printf '%.0f\n' "${tok:-0}"
}

# alone NAME ARGS...: one rank on the whole batch.
alone() {
	local name=$1
	shift
	"${launch[@]}" "${unbound[@]}" -n 1 "$LLTRAIN" "${common[@]}" --run.dir="$tmp/$name" "$@" \
		>"$tmp/$name.out" 2>&1 </dev/null || grep lltrain "$tmp/$name.out" >&2
	speed "$tmp/$name"
}

# pair NAME BALANCE: rank 0 on the GPU, rank 1 on the CPU.
pair() {
	local name=$1 balance=$2
	"${launch[@]}" "${unbound[@]}" -n 1 "$LLTRAIN" "${common[@]}" --run.dir="$tmp/$name" "${gpu[@]}" \
		--balance "$balance" --zero "$ZERO" : -n 1 "$LLTRAIN" "${common[@]}" \
		--run.dir="$tmp/$name" "${cpu[@]}" --balance "$balance" --zero "$ZERO" \
		>"$tmp/$name.out" 2>&1 </dev/null ||
		grep lltrain "$tmp/$name.out" >&2
	grep '^balance:' "$tmp/$name.out" | sed 's/^/  /' >&2
	speed "$tmp/$name"
}

echo "lltrain mixed job: preset $PRESET, batch $BATCH x $SEQ tokens x $ACCUM, rank 0 on $GPU" \
	"($GPU_THREADS threads), rank 1 on the CPU ($CPU_THREADS threads), ZeRO $ZERO"
g=$(alone gpu "${gpu[@]}")
c=$(alone cpu "${cpu[@]}")
e=$(pair even even)
a=$(pair auto auto)
awk -v g="$g" -v c="$c" -v e="$e" -v a="$a" 'BEGIN {
	printf "GPU rank alone:          %8.0f tokens/s\n", g
	printf "CPU rank alone:          %8.0f tokens/s\n", c
	printf "both, even split:        %8.0f tokens/s\n", e
	printf "both, --balance auto:    %8.0f tokens/s\n", a
	printf "auto / (GPU + CPU alone): %.2f\n", (g + c > 0 ? a / (g + c) : 0)
	printf "auto / even split:        %.2f\n", (e > 0 ? a / e : 0) }'
# where rank 0's step goes in the auto pair
read -r tok comm sync comp upd < <(timed_means "$tmp/auto/metrics.jsonl" tokens_per_s comm_s \
	sync_s compute_s update_s)
awk -v t="$tok" -v n=$((BATCH * SEQ * ACCUM)) -v c="$comm" -v y="$sync" -v p="$comp" \
	-v u="$upd" 'BEGIN { s = t > 0 ? n / t : 0
	printf "auto, rank 0 ms/step: %.1f = forward + backward %.1f + exchange waits %.1f + " \
		"slower rank %.1f + update %.1f + other %.1f\n", 1e3 * s, 1e3 * p, 1e3 * c,
		1e3 * y, 1e3 * u, 1e3 * (s - p - c - y - u) }'

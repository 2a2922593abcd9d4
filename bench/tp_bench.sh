#!/bin/bash
# Tensor parallelism against data parallelism and ZeRO on CPU ranks of one
# machine: the 110M preset at a global batch of BATCH sequences of SEQ
# tokens, in each layout of LAYOUTS (RANKS:TP:ZERO), printing side by side
# rank 0's peak memory as the backend's allocator counts it (the ranks of
# a layout hold the same) and as the process's resident size, lltrain
# info's estimate of a rank, each allocator peak against the first
# layout's, and tokens/s (the mean over the steps after the first
# UNTIMED); then the two ratios the layouts are for: tp 2 against one
# rank, and dp 2 at ZeRO 3 against ZeRO 0. Prints numbers; passes or fails
# nothing.
#
#   bench/tp_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (110M),
# BATCH (2), SEQ (256), STEPS (4), UNTIMED (1), THREADS (1), VOCAB (8000:
# the model takes the tokenizer's vocabulary), LAYOUTS ("1:1:0 2:2:0
# 2:1:0 2:1:3"), EXTRA (further train arguments, e.g. "--precision bf16").
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-110M} BATCH=${BATCH:-2} SEQ=${SEQ:-256} STEPS=${STEPS:-4}
UNTIMED=${UNTIMED:-1} THREADS=${THREADS:-1} VOCAB=${VOCAB:-8000}
LAYOUTS=${LAYOUTS:-1:1:0 2:2:0 2:1:0 2:1:3} EXTRA=${EXTRA:-}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup tpbench "$@"

echo "# $PRESET at a global batch of $BATCH x seq $SEQ, $THREADS thread(s) a rank, $STEPS steps ($UNTIMED untimed) $EXTRA"
first= vocab=
for layout in $LAYOUTS; do
	IFS=: read -r ranks tp zero <<<"$layout"
	dir="$tmp/r${ranks}t${tp}z$zero"
	OMP_NUM_THREADS=$THREADS "${launch[@]}" "${unbound[@]}" -n "$ranks" "$LLTRAIN" train \
		--preset "$PRESET" --train.batch="$BATCH" --train.seq="$SEQ" --train.steps="$STEPS" \
		--train.max_minutes=0 --data.dir="$tmp/data" --run.dir="$dir" --run.eval_every=0 \
		--run.eval_batches=1 --run.sample_tokens=1 --run.checkpoint_every=0 \
		--run.threads="$THREADS" --comm-timeout 600 --tp "$tp" --zero "$zero" $EXTRA \
		>"$dir.out" 2>&1 </dev/null ||
		{ echo "$layout failed: $(tail -c 300 "$dir.out")"; continue; }
	read -r alloc rss <<<"$(grep '"loss":' "$dir/metrics.jsonl" | tail -1 |
		sed -n 's/.*"mem_peak_bytes":\([0-9]*\).*"rss_peak_bytes":\([0-9]*\).*/\1 \2/p')"
	rate=$(timed_means "$dir/metrics.jsonl" tokens_per_s)
	vocab=$(sed -n 's/^model: .* parameters, vocab \([0-9]*\),.*/\1/p' "$dir.out")
	if [ -z "$first" ]; then
		echo "# $(grep -m1 '^model: .* parameters' "$dir.out")"
		printf '%-6s %3s %3s %5s %14s %14s %14s %11s %10s\n' ranks tp dp zero "alloc peak MiB" \
			"RSS peak MiB" "estimate MiB" "alloc/first" "tokens/s"
		first=$alloc
	fi
	est=$("$LLTRAIN" info --preset "$PRESET" --model.vocab_size="$vocab" --train.batch="$BATCH" \
		--train.seq="$SEQ" --threads "$THREADS" --ranks "$ranks" --tp "$tp" --zero "$zero" \
		$EXTRA | sed -n 's/.*training memory: *\([0-9.]*\) MiB.*/\1/p')
	eval "alloc_${ranks}_${tp}_${zero}=\$alloc"
	awk -v n="$ranks" -v t="$tp" -v z="$zero" -v a="$alloc" -v r="$rss" -v e="$est" \
		-v f="$first" -v s="$rate" 'BEGIN { printf "%-6s %3s %3s %5s %14.1f %14.1f %14s %10.1f%% %10.1f\n",
		n, t, n / t, z, a / 1048576, r / 1048576, e, 100 * a / f, s }'
done
ratio() {  # ratio LABEL A B: A / B in percent, or why not
	if [ -n "${2:-}" ] && [ -n "${3:-}" ]; then
		awk -v a="$2" -v b="$3" -v l="$1" 'BEGIN { printf "# %s: %.1f%%\n", l, 100 * a / b }'
	else
		echo "# $1: not measured (a layout is missing or failed)"
	fi
}
ratio "tp 2 per-rank peak / one rank's (allocator)" "${alloc_2_2_0:-}" "${alloc_1_1_0:-}"
ratio "dp 2 ZeRO 3 per-rank peak / ZeRO 0's (allocator)" "${alloc_2_1_3:-}" "${alloc_2_1_0:-}"

#!/bin/bash
# ZeRO stage 3 against stage 0 (and 2) over RANKS CPU ranks of one machine:
# the 110M preset at a global batch of BATCH sequences of SEQ tokens,
# printing, for each stage, rank 0's peak memory as the backend's allocator
# counts it and as the process's resident size, lltrain info's estimate of
# a rank, each peak against stage 0's, and tokens/s (the mean over the
# steps after the first UNTIMED); then ZeRO 3's peaks against ZeRO 0's, and
# what stage 3 still holds whole on a rank. Prints numbers; passes or
# fails nothing.
#
# At 110M, B2 T256 the activations (about 160 MiB) are a tenth of ZeRO
# 0's peak, and every stage holds them alike: they are the rank's own
# data, not replicated model state, and with them stage 3's floor (its
# shares, the two parameter slots of the gathers' overlap) lies near 59%
# of ZeRO 0. So the bench then runs stages 0 and 3 again with
# train.recompute = block on both sides (RECOMPUTE), where a rank keeps
# only each block's input, and prints that figure too. (Stage 3's start
# holds no whole parameters nor a whole gradient buffer: the model is made
# with the rank's range and the slots alone, and drawn into them.)
# Measured on the CI machine's kind (2 cores, 2 ranks of 1 thread):
# ZeRO 3 / ZeRO 0 936.3 / 1573.7 MiB = 59.5% (allocator), 48.9% (RSS);
# with train.recompute = block 812.4 / 1449.8 MiB = 56.0%.
#
#   bench/zero3_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (110M),
# RANKS (2), BATCH (2), SEQ (256), STEPS (4), UNTIMED (1), THREADS (1),
# VOCAB (8000: the model takes the tokenizer's vocabulary, which the
# header prints with the parameters), STAGES ("0 2 3"), EXTRA (further
# train arguments, e.g. "--precision bf16"), RECOMPUTE (the arguments of
# the second comparison, "--train.recompute=block"; empty: none).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-110M} RANKS=${RANKS:-2} BATCH=${BATCH:-2} SEQ=${SEQ:-256} STEPS=${STEPS:-4}
UNTIMED=${UNTIMED:-1} THREADS=${THREADS:-1} VOCAB=${VOCAB:-8000} STAGES=${STAGES:-0 2 3}
EXTRA=${EXTRA:-} RECOMPUTE=${RECOMPUTE---train.recompute=block}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup zero3bench "$@"

# run_stage ZERO DIR ARGS...: trains at ZeRO stage ZERO into DIR with
# EXTRA and ARGS; sets alloc and rss (the peaks of the last step: they
# only grow) and rate (the timed steps' tokens/s); non-zero, saying why,
# when it failed.
run_stage() {
	local zero=$1 dir=$2
	shift 2
	OMP_NUM_THREADS=$THREADS "${launch[@]}" "${unbound[@]}" -n "$RANKS" "$LLTRAIN" train \
		--preset "$PRESET" --train.batch="$BATCH" \
		--train.seq="$SEQ" --train.steps="$STEPS" --train.max_minutes=0 \
		--data.dir="$tmp/data" --run.dir="$dir" --run.eval_every=0 --run.eval_batches=1 \
		--run.sample_tokens=1 --run.checkpoint_every=0 --run.threads="$THREADS" \
		--comm-timeout 600 --zero "$zero" $EXTRA "$@" >"$dir.out" 2>&1 </dev/null ||
		{ echo "stage $zero failed: $(tail -c 300 "$dir.out")"; return 1; }
	read -r alloc rss <<<"$(grep '"loss":' "$dir/metrics.jsonl" | tail -1 |
		sed -n 's/.*"mem_peak_bytes":\([0-9]*\).*"rss_peak_bytes":\([0-9]*\).*/\1 \2/p')"
	rate=$(timed_means "$dir/metrics.jsonl" tokens_per_s)
}

echo "# $PRESET at batch $BATCH x seq $SEQ over $RANKS ranks of $THREADS thread(s), $STEPS steps ($UNTIMED untimed) $EXTRA"
base_alloc= base_rss=
for zero in $STAGES; do
	dir="$tmp/z$zero"
	run_stage "$zero" "$dir" || continue
	# the tokenizer's vocabulary, which the model took
	vocab=$(sed -n 's/^model: .* parameters, vocab \([0-9]*\),.*/\1/p' "$dir.out")
	[ -n "$base_alloc" ] || echo "# $(grep -m1 '^model: ' "$dir.out")"
	[ -n "$base_alloc" ] || printf '%-6s %14s %14s %14s %10s %10s %12s\n' stage \
		"alloc peak MiB" "RSS peak MiB" "estimate MiB" "alloc/first" "RSS/first" "tokens/s"
	est=$("$LLTRAIN" info --preset "$PRESET" --model.vocab_size="$vocab" --train.batch="$BATCH" \
		--train.seq="$SEQ" --threads "$THREADS" --ranks "$RANKS" --zero "$zero" $EXTRA |
		sed -n 's/.*training memory: *\([0-9.]*\) MiB.*/\1/p')
	base_alloc=${base_alloc:-$alloc} base_rss=${base_rss:-$rss}
	eval "alloc$zero=\$alloc rss$zero=\$rss est$zero=\$est"
	awk -v z="$zero" -v a="$alloc" -v r="$rss" -v e="$est" -v ba="$base_alloc" -v br="$base_rss" \
		-v t="$rate" 'BEGIN { printf "%-6s %14.1f %14.1f %14s %9.1f%% %9.1f%% %12.1f\n",
		z, a / 1048576, r / 1048576, e, 100 * a / ba, 100 * r / br, t }'
done
# ZeRO 3 against ZeRO 0, and what stage 3 still holds whole on a rank
# beside its 1/RANKS of the parameters, gradients and moments: the slots
# it gathers into, the gradient buffer (the larger of the embedding's
# gradient and one block's, which share it, and the output range's; the
# head's weight gradient lies there, where stage 0 keeps another V x C
# for it) and the activations
if [ -n "${alloc0:-}" ] && [ -n "${alloc3:-}" ]; then
	info=$("$LLTRAIN" info --preset "$PRESET" --model.vocab_size="$vocab" --train.batch="$BATCH" \
		--train.seq="$SEQ" --threads "$THREADS" --ranks "$RANKS" --zero 3 $EXTRA)
	dim=$(sed -n 's/.*: dim \([0-9]*\),.*/\1/p' <<<"$info")
	read -r slots acts <<<"$(sed -n 's/.*gathered slots \([0-9.]*\), activations \([0-9.]*\).*/\1 \2/p' <<<"$info")"
	grads=$(sed -n 's/.*gradient buffer \([0-9]*\) of .*/\1/p' "$tmp/z3.out")
	awk -v a0="$alloc0" -v a3="$alloc3" -v r0="$rss0" -v r3="$rss3" -v s="$slots" -v g="${grads:-0}" \
		-v act="$acts" -v n="$RANKS" 'BEGIN {
		printf "# ZeRO 3 per-rank peak / ZeRO 0: %.1f%% (allocator), %.1f%% (RSS)\n",
			100 * a3 / a0, 100 * r3 / r0
		printf "# held whole on each rank beside its 1/%d shares: slots %.1f MiB, gradient buffer %.1f MiB (the head'"'"'s gradient in it), activations %.1f MiB\n",
			n, s, 4 * g / 1048576, act }'
	# The floor: a rank's 1/RANKS of the 16 bytes a parameter, plus what
	# ZeRO 0 holds beside its 16 P (the activations, which every stage
	# keeps, and the head's gradient, which stage 3 writes into its
	# gradient buffer instead), plus the two slots of a block's
	# parameters that let a block's gather run during the previous block's
	# compute.
	params=$(sed -n 's/^ *parameters: *\([0-9]*\).*/\1/p' <<<"$info")
	layers=$(sed -n 's/.*, \([0-9]*\) layers,.*/\1/p' <<<"$info")
	heads=$(grep -q 'tied embeddings' <<<"$info" && echo 1 || echo 2)
	awk -v a0="$alloc0" -v p="${params:-0}" -v l="${layers:-1}" -v v="${vocab:-0}" -v c="${dim:-0}" \
		-v k="$heads" -v n="$RANKS" 'BEGIN {
		rest = a0 - 16 * p; block = (p - k * v * c - c) / l
		printf "# floor of a ZeRO 3 rank: its shares and ZeRO 0'"'"'s %.1f MiB beside them: %.1f%% of ZeRO 0; with two slots of a block'"'"'s parameters (%.1f MiB) for the overlap: %.1f%%\n",
			rest / 1048576, 100 * (16 * p / n + rest) / a0, 8 * block / 1048576,
			100 * (16 * p / n + rest + 8 * block) / a0 }'
fi
# The same comparison with RECOMPUTE on both sides: the activations each
# rank holds shrink to the blocks' inputs and one block's own.
if [ -n "$RECOMPUTE" ] && [ -n "${alloc0:-}" ] && [ -n "${alloc3:-}" ]; then
	run_stage 0 "$tmp/r0" $RECOMPUTE && a0=$alloc r0=$rss t0=$rate &&
		run_stage 3 "$tmp/r3" $RECOMPUTE &&
		awk -v a0="$a0" -v a3="$alloc" -v r0="$r0" -v r3="$rss" -v t0="$t0" -v t3="$rate" \
			-v how="$RECOMPUTE" 'BEGIN {
			printf "# with %s on both: ZeRO 0 %.1f MiB (RSS %.1f) at %.1f tokens/s, ZeRO 3 %.1f MiB (RSS %.1f) at %.1f tokens/s\n",
				how, a0 / 1048576, r0 / 1048576, t0, a3 / 1048576, r3 / 1048576, t3
			printf "# ZeRO 3 per-rank peak / ZeRO 0 with %s: %.1f%% (allocator), %.1f%% (RSS)\n",
				how, 100 * a3 / a0, 100 * r3 / r0 }'
fi

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
#   bench/zero3_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (110M),
# RANKS (2), BATCH (2), SEQ (256), STEPS (4), UNTIMED (1), THREADS (1),
# VOCAB (8000: the model takes the tokenizer's vocabulary, which the
# header prints with the parameters), STAGES ("0 2 3"), EXTRA (further
# train arguments, e.g. "--precision bf16").
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-110M} RANKS=${RANKS:-2} BATCH=${BATCH:-2} SEQ=${SEQ:-256} STEPS=${STEPS:-4}
UNTIMED=${UNTIMED:-1} THREADS=${THREADS:-1} VOCAB=${VOCAB:-8000} STAGES=${STAGES:-0 2 3}
EXTRA=${EXTRA:-}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup zero3bench "$@"

echo "# $PRESET at batch $BATCH x seq $SEQ over $RANKS ranks of $THREADS thread(s), $STEPS steps ($UNTIMED untimed) $EXTRA"
base_alloc= base_rss=
for zero in $STAGES; do
	dir="$tmp/z$zero"
	OMP_NUM_THREADS=$THREADS "${launch[@]}" "${unbound[@]}" -n "$RANKS" "$LLTRAIN" train \
		--preset "$PRESET" --train.batch="$BATCH" \
		--train.seq="$SEQ" --train.steps="$STEPS" --train.max_minutes=0 \
		--data.dir="$tmp/data" --run.dir="$dir" --run.eval_every=0 --run.eval_batches=1 \
		--run.sample_tokens=1 --run.checkpoint_every=0 --run.threads="$THREADS" \
		--comm-timeout 600 --zero "$zero" $EXTRA >"$dir.out" 2>&1 </dev/null ||
		{ echo "stage $zero failed: $(tail -c 300 "$dir.out")"; continue; }
	# the peaks of the last step (they only grow), and the timed steps' rate
	read -r alloc rss <<<"$(grep '"loss":' "$dir/metrics.jsonl" | tail -1 |
		sed -n 's/.*"mem_peak_bytes":\([0-9]*\).*"rss_peak_bytes":\([0-9]*\).*/\1 \2/p')"
	rate=$(timed_means "$dir/metrics.jsonl" tokens_per_s)
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
# it gathers into, the gradient buffer (the embedding's gradient, two
# blocks' and the output range's), the head's weight gradient (V x C) and
# the activations
if [ -n "${alloc0:-}" ] && [ -n "${alloc3:-}" ]; then
	info=$("$LLTRAIN" info --preset "$PRESET" --model.vocab_size="$vocab" --train.batch="$BATCH" \
		--train.seq="$SEQ" --threads "$THREADS" --ranks "$RANKS" --zero 3 $EXTRA)
	dim=$(sed -n 's/.*: dim \([0-9]*\),.*/\1/p' <<<"$info")
	read -r slots acts <<<"$(sed -n 's/.*gathered slots \([0-9.]*\), activations \([0-9.]*\).*/\1 \2/p' <<<"$info")"
	grads=$(sed -n 's/.*gradient buffer \([0-9]*\) of .*/\1/p' "$tmp/z3.out")
	awk -v a0="$alloc0" -v a3="$alloc3" -v r0="$rss0" -v r3="$rss3" -v s="$slots" -v g="${grads:-0}" \
		-v h="$((${vocab:-0} * ${dim:-0}))" -v act="$acts" -v n="$RANKS" 'BEGIN {
		printf "# ZeRO 3 per-rank peak / ZeRO 0: %.1f%% (allocator), %.1f%% (RSS)\n",
			100 * a3 / a0, 100 * r3 / r0
		printf "# held whole on each rank beside its 1/%d shares: slots %.1f MiB, gradient buffer %.1f MiB, head gradient %.1f MiB (in the activations, %.1f MiB)\n",
			n, s, 4 * g / 1048576, 4 * h / 1048576, act }'
	# The floor: a rank's 1/RANKS of the 16 bytes a parameter, plus what
	# ZeRO 0 holds beside its 16 P (the activations and the head's
	# gradient, which every stage keeps), plus the two slots of a block's
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

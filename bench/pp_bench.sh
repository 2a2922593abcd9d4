#!/bin/bash
# Pipeline parallelism on CPU ranks of one machine, two figures:
#
# (a) PRESET (15M) at pp 2 over MICRO (8) micro-batches a step: each
# stage's compute and waits a step (the mean over the steps after the
# first UNTIMED) and the measured bubble (the stages' mean share of their
# passes spent waiting) next to the 1F1B ideal (N - 1) / (M + N - 1); then
# the same job over an emulated link of LINK_GBITS (0.15) Gbit/s between
# the stages (LLTRAIN_BENCH_LINK_GBITS: each message arrives no sooner
# than the link carries it from when it left; at 0.15 a boundary tensor
# takes about a fifth of a micro-batch's compute here), where a transfer
# not hidden behind compute shows in the step: of the step's 2 x M
# transfers of X seconds each (M activations one way, M gradients the
# other), the share hidden is 1 - (step time with the link - without) /
# (2 x M x X), the step time without the link taken at the compute speed
# of the run with it (the stages' busy seconds of the two runs differ by
# as much as the transfers here, from one run to the next). Both at dist.pp_ahead 0 (1F1B as it is: a stage's next
# message is wanted as soon as it is made, so a transfer shows with each
# micro-batch) and 1 (each stage but the last runs one forward more ahead,
# and the transfers travel behind it but at the pipeline's fill and
# drain).
#
# (b) two ranks of unequal speed at pp 2 (RANK_THREADS, default "12 4":
# threads per rank, each rank's OMP_NUM_THREADS too; or RANK_DEVICES,
# e.g. "opencl:1.0 cpu") under --balance auto against the same job with
# stages of even work: tokens/s of each (after the blocks moved: the steps
# after UNTIMED_B) and the ratio.
#
#   bench/pp_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (15M),
# BATCH (4), SEQ (256), MICRO (8), STEPS (12), UNTIMED (2), THREADS (1), LINK_GBITS (0.15),
# VOCAB (8000), RANK_THREADS ("12 4"), RANK_DEVICES ("cpu cpu"), STEPS_B
# (16), UNTIMED_B (8), PARTS ("a b": the figures to measure), EXTRA
# (further train arguments). Prints numbers; passes or fails nothing.
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-15M} BATCH=${BATCH:-4} SEQ=${SEQ:-256} MICRO=${MICRO:-8} STEPS=${STEPS:-12}
UNTIMED=${UNTIMED:-2} THREADS=${THREADS:-1} VOCAB=${VOCAB:-8000} LINK_GBITS=${LINK_GBITS:-0.15}
RANK_THREADS=${RANK_THREADS:-12 4} RANK_DEVICES=${RANK_DEVICES:-cpu cpu}
STEPS_B=${STEPS_B:-16} UNTIMED_B=${UNTIMED_B:-8} PARTS=${PARTS:-a b} EXTRA=${EXTRA:-}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup ppbench "$@"

run() {  # run NAME ARGS...: a pp 2 job into $tmp/NAME ($tmp/NAME.out)
	local name=$1
	shift
	OMP_NUM_THREADS=$THREADS "${launch[@]}" "${unbound[@]}" -n 2 "$LLTRAIN" train \
		--preset "$PRESET" --model.tied=false --train.batch="$BATCH" --train.seq="$SEQ" \
		--train.grad_accum="$MICRO" --train.max_minutes=0 --data.dir="$tmp/data" \
		--run.dir="$tmp/$name" --run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=1 \
		--run.checkpoint_every=0 --run.threads="$THREADS" --comm-timeout 600 --pp 2 $EXTRA "$@" \
		>"$tmp/$name.out" 2>&1 </dev/null || { echo "$name failed: $(tail -c 300 "$tmp/$name.out")"; return 1; }
}

hidden() {  # hidden AHEAD: the two runs at dist.pp_ahead = AHEAD, and what they show
	local ahead=$1
	run a$ahead --train.steps="$STEPS" --dist.pp_ahead="$ahead" &&
		LLTRAIN_BENCH_LINK_GBITS=$LINK_GBITS run link$ahead --train.steps="$STEPS" \
			--dist.pp_ahead="$ahead" || return 1
	read -r c0 w0 c1 w1 bubble rate <<<"$(timed_means "$tmp/a$ahead/metrics.jsonl" \
		stage0_compute_s stage0_wait_s stage1_compute_s stage1_wait_s bubble tokens_per_s)"
	read -r lc0 lw0 lc1 lw1 lbubble lrate <<<"$(timed_means "$tmp/link$ahead/metrics.jsonl" \
		stage0_compute_s stage0_wait_s stage1_compute_s stage1_wait_s bubble tokens_per_s)"
	mib=$(sed -n 's/^pipeline: a boundary tensor of \([0-9.]*\) MiB crosses.*/\1/p' "$tmp/a$ahead.out")
	echo "# dist.pp_ahead = $ahead"
	grep '^pipeline:' "$tmp/a$ahead.out" | sed 's/^/# /'
	awk -v c0="$c0" -v w0="$w0" -v c1="$c1" -v w1="$w1" -v bub="$bubble" -v m="$MICRO" \
		-v rate="$rate" -v lrate="$lrate" -v lbub="$lbubble" -v mib="$mib" -v g="$LINK_GBITS" \
		-v lc0="$lc0" -v lw0="$lw0" -v lc1="$lc1" -v lw1="$lw1" \
		-v tokens="$((BATCH * SEQ * MICRO))" 'BEGIN {
		ideal = 1 / (m + 1)
		printf "%-6s %12s %12s %10s\n", "stage", "compute s", "wait s", "waiting"
		printf "%-6d %12.4f %12.4f %9.1f%%\n", 0, c0, w0, 100 * w0 / (c0 + w0)
		printf "%-6d %12.4f %12.4f %9.1f%%\n", 1, c1, w1, 100 * w1 / (c1 + w1)
		printf "bubble: measured %.1f%%, 1F1B ideal %.1f%% (%.1f points apart)\n", 100 * bub,
			100 * ideal, 100 * (bub - ideal)
		x = mib * 1048576 * 8 / (g * 1e9)  # seconds a boundary tensor takes on the link
		# a step of each stage: busy and waiting seconds (the stages agree
		# to within the edges of the step); without the link at the speed
		# of the run with it
		t = (c0 + w0 + c1 + w1) / 2; tl = (lc0 + lw0 + lc1 + lw1) / 2
		t *= (lc0 + lc1) / (c0 + c1)
		h = 1 - (tl - t) / (2 * m * x)
		printf "tokens/s: %.1f; over a %g Gbit/s link %.1f (bubble %.1f%%)\n", rate, g, lrate, 100 * lbub
		printf "transfers: 2 x %d of %.2f MiB a step, %.2f ms each on the link; stages busy " \
			"%.3f s, waiting %.3f s a step (without the link, at that speed, waiting %.3f s): " \
			"hidden %.1f%%\n", m, mib, 1e3 * x, (lc0 + lc1) / 2, (lw0 + lw1) / 2, t - (lc0 + lc1) / 2,
			100 * h }'
}
if [[ " $PARTS " == *" a "* ]]; then
	echo "# (a) $PRESET at pp 2, $MICRO micro-batches of $BATCH x seq $SEQ, $THREADS thread(s) a rank, $STEPS steps ($UNTIMED untimed)"
	hidden 0
	hidden 1
fi

[[ " $PARTS " == *" b "* ]] || exit 0
read -r t0 t1 <<<"$RANK_THREADS"
read -r d0 d1 <<<"$RANK_DEVICES"
echo "# (b) two ranks at pp 2: rank 0 $d0 ($t0 threads), rank 1 $d1 ($t1 threads); $STEPS_B steps, the last $((STEPS_B - UNTIMED_B)) timed"
mixed() {  # mixed NAME ARGS...: the two ranks as their devices and threads say
	local name=$1
	shift
	local args=(--preset "$PRESET" --model.tied=false --train.batch="$BATCH" --train.seq="$SEQ"
		--train.grad_accum="$MICRO" --train.steps="$STEPS_B" --train.max_minutes=0
		--data.dir="$tmp/data" --run.dir="$tmp/$name" --run.eval_every=0 --run.eval_batches=1
		--run.sample_tokens=1 --run.checkpoint_every=0 --comm-timeout 600 --pp 2 $EXTRA "$@")
	"${launch[@]}" "${unbound[@]}" -n 1 env OMP_NUM_THREADS="$t0" "$LLTRAIN" train "${args[@]}" \
		--run.threads="$t0" --run.device="$d0" : -n 1 env OMP_NUM_THREADS="$t1" "$LLTRAIN" train \
		"${args[@]}" --run.threads="$t1" --run.device="$d1" >"$tmp/$name.out" 2>&1 </dev/null ||
		{ echo "$name failed: $(tail -c 300 "$tmp/$name.out")"; return 1; }
}
if mixed even && mixed auto --balance auto; then
	even=$(UNTIMED=$UNTIMED_B timed_means "$tmp/even/metrics.jsonl" tokens_per_s)
	auto=$(UNTIMED=$UNTIMED_B timed_means "$tmp/auto/metrics.jsonl" tokens_per_s)
	grep '^pipeline: [0-9]* stages' "$tmp/even.out" | sed 's/^/# even: /'
	grep '^balance:\|^pipeline: [0-9]* stages' "$tmp/auto.out" | sed 's/^/# auto: /'
	awk -v e="$even" -v a="$auto" 'BEGIN {
		printf "tokens/s: even stages %.1f, --balance auto %.1f: %.2fx\n", e, a, (e > 0 ? a / e : 0) }'
fi

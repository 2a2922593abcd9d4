#!/bin/bash
# The planner's cost model against measured steps on this machine's CPU
# ranks: for each preset of PRESETS (15M and 110M, at BATCH sequences of
# SEQ tokens a step), `lltrain plan` (one process: it times a block's
# step at 1 .. all threads, and plans layouts of 1 .. RANKS ranks over
# this node's cores) predicts the step time of every layout; then these
# are trained for STEPS steps each and timed over the steps after UNTIMED:
# the plan's first choice; one rank of all threads (fp32, bf16 with
# recompute); RANKS ranks of the rest of the threads in data parallel
# (ZeRO 1 and ZeRO 2), tensor parallel and pipeline parallel; where two
# ranks fit, the same at two. Prints, per layout, the predicted and
# measured step and their ratio; then how many predictions fall within 25%
# of the measured step, and the first choice's measured step over the
# fastest measured one (the issue's bars: every one within 25%, the first
# choice within 10%).
#
#   bench/plan_bench.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESETS ("15M
# 110M"), BATCH (8), SEQ (128), RANKS (the smaller of 4 and the cores),
# STEPS (6), UNTIMED (2), VOCAB (8000). Exits 1 when a bar is missed.
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESETS=${PRESETS:-15M 110M} BATCH=${BATCH:-8} SEQ=${SEQ:-128} STEPS=${STEPS:-6}
UNTIMED=${UNTIMED:-2} VOCAB=${VOCAB:-8000}
cores=$(nproc)
RANKS=${RANKS:-$((cores < 4 ? cores : 4))}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup planbench "$@"

# pick JSONL: the layouts to measure, one "KEY dp tp pp zero precision
# recompute micro accum ranks threads pp_layers predicted_step_s" a line
pick() {
	python3 - "$1" "$RANKS" "$cores" <<'EOF'
import json, sys
v = [json.loads(l) for l in open(sys.argv[1])]
ranks, cores = int(sys.argv[2]), int(sys.argv[3])
fit = [o for o in v if o["fits"] and o["ranks"] <= ranks and o["ranks"] * max(o["cpu_threads"], 1) <= cores]
def first(name, **want):
    for o in fit:
        if all(o[k] == x for k, x in want.items()):
            return name, o
    return None
chosen = [("first-choice", fit[0])] if fit else []
for r in sorted({ranks, 2} if ranks >= 2 else {1}):
    chosen += [first("dp%d-zero1" % r, ranks=r, dp=r, zero=1, precision="fp32", recompute=False),
               first("dp%d-zero2" % r, ranks=r, dp=r, zero=2, precision="fp32", recompute=False),
               first("tp%d" % r, ranks=r, tp=r, precision="fp32", recompute=False),
               first("pp%d" % r, ranks=r, pp=r, precision="fp32", recompute=False)]
chosen += [first("one-rank-fp32", ranks=1, precision="fp32", recompute=False),
           first("one-rank-bf16-recompute", ranks=1, precision="bf16", recompute=True)]
seen = set()
for c in chosen:
    if not c:
        continue
    name, o = c
    key = (o["dp"], o["tp"], o["pp"], o["zero"], o["precision"], o["recompute"], o["micro"])
    if key in seen:
        continue
    seen.add(key)
    print(name, o["dp"], o["tp"], o["pp"], o["zero"], o["precision"],
          "block" if o["recompute"] else "none", o["micro"], o["accum"], o["ranks"],
          max(o["cpu_threads"], 1), o["pp_layers"] or "-", o["step_s"])
EOF
}

fail=0
for preset in $PRESETS; do
	common=(--preset "$preset" --train.batch="$BATCH" --train.seq="$SEQ")
	"$LLTRAIN" plan "${common[@]}" --data.dir="$tmp/data" --model.vocab_size="$VOCAB" \
		--jsonl "$tmp/$preset.jsonl" >"$tmp/$preset.plan" 2>&1 ||
		{ echo "plan $preset failed: $(tail -c 400 "$tmp/$preset.plan")"; exit 1; }
	echo "== $preset: batch $BATCH x seq $SEQ, layouts of up to $RANKS ranks on $cores cores"
	grep -E '^  rank|^links' "$tmp/$preset.plan"
	printf '%-26s %-40s %10s %10s %7s\n' layout what predicted measured ratio
	within=0 total=0 first= fastest=
	while read -r name dp tp pp zero prec rc micro accum ranks threads layers pred; do
		dir="$tmp/$preset-$name"
		extra=()
		[ "$layers" != - ] && extra=(--dist.pp_layers="$layers")
		OMP_NUM_THREADS=$threads "${launch[@]}" "${unbound[@]}" -n "$ranks" "$LLTRAIN" train \
			"${common[@]}" --data.dir="$tmp/data" --run.dir="$dir" --train.steps="$STEPS" \
			--train.max_minutes=0 --train.grad_accum="$accum" --train.batch=$((micro * dp)) \
			--dist.tp="$tp" --dist.pp="$pp" --dist.zero="$zero" --train.precision="$prec" \
			--train.recompute="$rc" --run.threads="$threads" --run.eval_every=0 \
			--run.eval_batches=1 --run.sample_tokens=1 --run.checkpoint_every=0 \
			--comm-timeout 600 "${extra[@]}" >"$dir.out" 2>&1 </dev/null ||
			{ echo "$name failed: $(tail -c 300 "$dir.out")"; fail=1; continue; }
		read -r tok < <(timed_means "$dir/metrics.jsonl" tokens_per_s)
		meas=$(awk -v t="$tok" -v n=$((BATCH * SEQ)) 'BEGIN { printf "%.4f", (t > 0 ? n / t : 0) }')
		ratio=$(awk -v p="$pred" -v m="$meas" 'BEGIN { printf "%.3f", (m > 0 ? p / m : 0) }')
		printf '%-26s %-40s %9.4fs %9.4fs %7s\n' "$name" \
			"dp$dp tp$tp pp$pp z$zero $prec $rc ${micro}x$accum ${ranks}r${threads}t" \
			"$pred" "$meas" "$ratio"
		total=$((total + 1))
		awk -v r="$ratio" 'BEGIN { exit !(r >= 0.75 && r <= 1.25) }' && within=$((within + 1))
		[ "$name" = first-choice ] && first=$meas
		fastest=$(awk -v a="${fastest:-1e30}" -v b="$meas" 'BEGIN { print (b < a ? b : a) }')
	done < <(pick "$tmp/$preset.jsonl")
	echo "$preset: predictions within 25% of the measured step: $within of $total"
	over=$(awk -v f="${first:-0}" -v b="${fastest:-1}" 'BEGIN { printf "%.3f", f / b }')
	echo "$preset: the first choice's measured step over the fastest measured: $over"
	[ "$within" = "$total" ] && [ "$total" -ge 4 ] || fail=1
	awk -v o="$over" 'BEGIN { exit !(o > 0 && o <= 1.10) }' || fail=1
done
exit $fail

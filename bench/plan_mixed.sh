#!/bin/bash
# The planner's cost model on a mixed launch (an MPMD job of one GPU rank
# and one CPU rank): `lltrain plan --launch` under that launch (each rank
# measures its device, then the link between them) predicts the step of
# every layout of the two ranks; then the plan's first choice and the
# best-predicted layout of each kind (data parallel with the batch shared
# by speed, pipeline stages of blocks sized to speed, tensor parallel)
# are trained for STEPS steps and timed over the steps after UNTIMED.
# Prints, per layout, the predicted and measured step and their ratio,
# and the first choice's measured step over the fastest measured one.
#
#   bench/plan_mixed.sh [CORPUS...]    (default corpus: this source tree's text)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PRESET (15M),
# BATCH (64), ACCUM (4), SEQ (256), STEPS (12), UNTIMED (6), GPU (opencl),
# GPU_THREADS (1), CPU_THREADS (cores less GPU_THREADS), VOCAB (8000).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PRESET=${PRESET:-15M} BATCH=${BATCH:-64} ACCUM=${ACCUM:-4} SEQ=${SEQ:-256} STEPS=${STEPS:-12}
UNTIMED=${UNTIMED:-6} GPU=${GPU:-opencl} GPU_THREADS=${GPU_THREADS:-1} VOCAB=${VOCAB:-8000}
CPU_THREADS=${CPU_THREADS:-$(($(nproc) - GPU_THREADS))}
export UNTIMED
. "$(dirname "$0")/mpi_common.sh"
mpi_bench_setup planmixed "$@"

model=(--preset "$PRESET" --model.tied=false --train.batch="$BATCH" --train.grad_accum="$ACCUM"
	--train.seq="$SEQ" --data.dir="$tmp/data")
gpu=(--run.device="$GPU" --run.threads="$GPU_THREADS")
cpu=(--run.device=cpu --run.threads="$CPU_THREADS")

# pair ARGS...: lltrain ARGS on the GPU rank and on the CPU rank
pair() {
	OMP_NUM_THREADS=$GPU_THREADS "${launch[@]}" "${unbound[@]}" -n 1 "$LLTRAIN" "$@" "${gpu[@]}" \
		: -n 1 "$LLTRAIN" "$@" "${cpu[@]}" </dev/null
}

pair plan "${model[@]}" --model.vocab_size="$VOCAB" --launch --jsonl "$tmp/plan.jsonl" \
	>"$tmp/plan.out" 2>&1 || { echo "plan failed: $(tail -c 400 "$tmp/plan.out")"; exit 1; }
echo "== $PRESET: batch $BATCH x $ACCUM of $SEQ tokens; rank 0 on $GPU, rank 1 on $CPU_THREADS CPU threads"
grep -E '^  rank|^links' "$tmp/plan.out"
python3 - "$tmp/plan.jsonl" >"$tmp/pick" <<'EOF'
import json, sys
v = [json.loads(l) for l in open(sys.argv[1])]
fit = [o for o in v if o["fits"]]
picks = [("first-choice", fit[0])] if fit else []
for name, want in (("dp2", dict(dp=2)), ("pp2", dict(pp=2)), ("tp2", dict(tp=2))):
    for o in fit:
        if all(o[k] == x for k, x in want.items()):
            picks.append((name, o))
            break
for name, o in picks:
    print(name, o["dp"], o["tp"], o["pp"], o["zero"], o["precision"],
          "block" if o["recompute"] else "none", o["micro"], o["accum"],
          "auto" if o["balance_auto"] else "even", o["pp_layers"] or "-", o["step_s"])
EOF
printf '%-14s %-44s %10s %10s %7s\n' layout what predicted measured ratio
first= fastest=
while read -r name dp tp pp zero prec rc micro accum bal layers pred; do
	extra=()
	[ "$layers" != - ] && extra=(--dist.pp_layers="$layers")
	pair train "${model[@]}" --run.dir="$tmp/$name" --train.steps="$STEPS" --train.max_minutes=0 \
		--train.batch=$((micro * dp)) --train.grad_accum="$accum" --dist.tp="$tp" \
		--dist.pp="$pp" --dist.zero="$zero" --dist.balance="$bal" --train.precision="$prec" \
		--train.recompute="$rc" --run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=1 \
		--run.checkpoint_every=0 --comm-timeout 600 "${extra[@]}" >"$tmp/$name.out" 2>&1 ||
		{ echo "$name failed: $(tail -c 300 "$tmp/$name.out")"; continue; }
	read -r tok < <(timed_means "$tmp/$name/metrics.jsonl" tokens_per_s)
	meas=$(awk -v t="$tok" -v n=$((BATCH * ACCUM * SEQ)) 'BEGIN { printf "%.4f", (t > 0 ? n / t : 0) }')
	printf '%-14s %-44s %9.4fs %9.4fs %7s\n' "$name" \
		"dp$dp tp$tp pp$pp z$zero $prec $rc ${micro}x$accum $bal" "$pred" "$meas" \
		"$(awk -v p="$pred" -v m="$meas" 'BEGIN { printf "%.3f", (m > 0 ? p / m : 0) }')"
	[ "$name" = first-choice ] && first=$meas
	fastest=$(awk -v a="${fastest:-1e30}" -v b="$meas" 'BEGIN { print (b < a ? b : a) }')
done <"$tmp/pick"
echo "the first choice's measured step over the fastest measured: $(awk -v f="${first:-0}" \
	-v b="${fastest:-1}" 'BEGIN { printf "%.3f", f / b }')"

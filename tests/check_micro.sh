#!/bin/bash
# Checks train.micro_batch: a number re-splits the step's train.batch x
# train.grad_accum sequences (one that does not divide them is refused in
# one line); auto takes the whole step as one micro-batch where memory
# allows, and under run.mem_limit the largest micro-batch whose estimate
# (lltrain info's) fits 90% of it, checked by a trial step that leaves no
# trace in the run (its metrics count only the run's steps, and it trains
# bitwise as the same split given by hand); a limit that fits nothing is
# refused in one line before anything is written, and a resumed run with a
# limit keeps its checkpoints; a trial step that peaks above the limit (a
# distillation teacher's weights, which the estimate leaves out) makes
# auto try the next smaller micro-batch; the config keeps "auto", so a
# resumed run chooses again; the same over two MPI ranks, with --plan
# auto, and for tune-lr; and with ZeRO 3, --balance auto, --deterministic
# and an OpenCL rank beside a CPU rank.
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-micro.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

prepare_corpus
base=(--model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32
	--train.batch=8 --train.grad_accum=2 --train.max_minutes=0 --data.dir="$tmp/data"
	--run.threads=2 --run.log_every=1 --run.sample_tokens=4 --run.eval_batches=2)

# ini RUN KEY: KEY's value in RUN's config.ini
ini() {
	sed -n "s/^$2 = //p" "$tmp/$1/config.ini"
}

# info's training memory (MiB) of the base model at micro-batch B over
# RANKS data-parallel ranks (default 1)
estimate() {
	"$LLTRAIN" info "${base[@]}" --train.batch="$1" --train.grad_accum=1 --ranks "${2:-1}" 2>&1 |
		sed -n 's/^ *training memory: *\([0-9.]*\) MiB.*/\1/p'
}

# 1. A number: micro-batches of 4, four a step.
train four 0 "${base[@]}" --train.steps=2 --train.micro_batch=4
grep -q "batch 4 x seq 32 x accum 4" "$tmp/four.out"
ok $? "train.micro_batch = 4 trains 16 sequences a step as 4 x 4 (exit $rc): $(grep '^model:' "$tmp/four.out")"
expect_brief 1 "train.micro_batch = 3 does not divide the step's train.batch x train.grad_accum = 16 sequences" \
	"a micro-batch that does not divide the step is refused" -- \
	train "${base[@]}" --train.micro_batch=3 --run.dir="$tmp/three"
expect_brief 2 "train.micro_batch" "a micro-batch that is not a number or auto is refused" -- \
	train "${base[@]}" --train.micro_batch=most --run.dir="$tmp/three"
[ ! -e "$tmp/three" ]
ok $? "the refused runs wrote nothing"

# 2. auto with memory to spare: the whole step in one micro-batch.
train whole 0 "${base[@]}" --train.steps=3 --train.micro_batch=auto
grep -q "^micro_batch auto: micro-batches of 16 sequences, 1 a step" "$tmp/whole.out" &&
	grep -q "batch 16 x seq 32 x accum 1" "$tmp/whole.out"
ok $? "auto takes the step's 16 sequences as one micro-batch (exit $rc): $(grep '^micro_batch' "$tmp/whole.out")"
[ "$(ini whole micro_batch)" = auto ] && [ "$(ini whole batch)" = 16 ] &&
	[ "$(ini whole grad_accum)" = 1 ]
ok $? "config.ini keeps micro_batch = auto with the split chosen (batch $(ini whole batch), grad_accum $(ini whole grad_accum))"
[ "$(grep -c '"loss"' "$tmp/whole/metrics.jsonl")" -ge 3 ] &&
	python3 -c '
import json, sys
steps = [o["step"] for o in map(json.loads, open(sys.argv[1])) if "loss" in o and "val_loss" not in o]
assert steps == [1, 2, 3], steps' "$tmp/whole/metrics.jsonl"
ok $? "the trial step left no trace: metrics.jsonl logs steps 1, 2, 3"

# 3. Under a limit between the estimates of 8 and of 16 sequences: 8 x 2.
e8=$(estimate 8) e16=$(estimate 16)
limit=$(python3 -c "import sys; a, b = map(float, sys.argv[1:]); print('%.6f' % ((a + b) / 2 / 0.9 / 1024))" "$e8" "$e16")
train limited 0 "${base[@]}" --train.steps=3 --train.micro_batch=auto --run.mem_limit="$limit"
grep -q "^micro_batch auto: micro-batches of 8 sequences, 2 a step" "$tmp/limited.out"
ok $? "under run.mem_limit = $limit GiB (estimates $e8 MiB at 8, $e16 MiB at 16): 8 x 2 (exit $rc): $(grep '^micro_batch' "$tmp/limited.out")"
peak=$(sed -n "s/.*trial step's peak \([0-9.]*\) MiB, of \([0-9.]*\) MiB.*/\1 \2/p" "$tmp/limited.out")
python3 -c "import sys; p, h = map(float, sys.argv[1:]); sys.exit(not 0 < p <= h)" $peak
ok $? "the trial step's peak is within the rank's room (peak and room MiB: $peak)"
train by_hand 0 "${base[@]}" --train.steps=3
losses_match limited by_hand 3 0
ok $? "auto's 8 x 2 trains bitwise as train.batch = 8, train.grad_accum = 2 given"

# 4. A limit that fits nothing: one line, exit 1, nothing written; a
# resumed run refused so keeps its checkpoint.
expect_brief 1 "train.micro_batch = auto: not even the smallest micro-batch fits: it needs" \
	"a limit below the smallest micro-batch is refused" -- \
	train "${base[@]}" --train.micro_batch=auto --run.mem_limit=0.001 --run.dir="$tmp/none"
[ ! -e "$tmp/none" ]
ok $? "the refused run wrote nothing"
sums() { find "$tmp/whole/checkpoints" -type f -exec md5sum {} + | sort; }
before=$(sums)
expect_brief 1 "not even the smallest micro-batch fits" \
	"a resumed run under a limit that fits nothing is refused" -- \
	train "${base[@]}" --train.steps=5 --resume auto --run.mem_limit=0.001 --run.dir="$tmp/whole"
[ "$before" = "$(sums)" ] && [ -n "$before" ]
ok $? "the refused resumption left the checkpoints as they were"

# 5. A trial that fills more than the room: the estimate leaves out a
# distillation teacher's weights, which the trial step holds; the limit
# lies between the estimate of 16 sequences (with its margin) and the
# trial's peak at 16, so 16 is tried, found too big, and 8 taken.
"$LLTRAIN" train --preset tiny --model.vocab_size=320 --model.max_seq=32 --train.seq=32 \
	--train.steps=1 --train.max_minutes=0 --data.dir="$tmp/data" --run.threads=2 \
	--run.sample_tokens=4 --run.eval_batches=2 --run.dir="$tmp/teacher" >"$tmp/teacher.out" 2>&1
ok $? "a teacher of the tiny preset's model trains a step"
train taught16 0 "${base[@]}" --train.steps=1 --train.micro_batch=auto --distill.teacher="$tmp/teacher"
peak16=$(sed -n "s/^micro_batch auto: micro-batches of 16 .*trial step's peak \([0-9.]*\) MiB.*/\1/p" "$tmp/taught16.out")
limit3=$(python3 -c "
import sys
e16, p16 = float(sys.argv[1]), float(sys.argv[2] or 0)
if e16 / 0.9 < p16: print('%.6f' % ((e16 / 0.9 + p16) / 2 / 1024))" "$e16" "$peak16")
if [ -n "$limit3" ]; then
	train taught 0 "${base[@]}" --train.steps=2 --train.micro_batch=auto \
		--distill.teacher="$tmp/teacher" --run.mem_limit="$limit3"
	grep -q "^micro_batch auto: a micro-batch of 16 filled more than a rank has; trying a smaller one" "$tmp/taught.out" &&
		grep -q "^micro_batch auto: micro-batches of 8 sequences, 2 a step" "$tmp/taught.out"
	ok $? "with a teacher under $limit3 GiB (16's estimate $e16 MiB, trial peak $peak16 MiB) the trial of 16 fails and 8 x 2 is taken (exit $rc): $(grep '^micro_batch' "$tmp/taught.out" | tr '\n' ' ')"
else
	skip "the teacher's trial peak at 16 sequences ($peak16 MiB) is within the estimate's margin ($e16 MiB / 0.9): no limit lies between"
fi

# 6. Resumed under a limit: auto chooses again.
train whole 0 "${base[@]}" --train.steps=5 --resume auto --run.mem_limit="$limit"
grep -q "^micro_batch auto: micro-batches of 8 sequences, 2 a step" "$tmp/whole.out" &&
	grep -q "resumed from .*step_00000003 at step 3" "$tmp/whole.out"
ok $? "a resumed run under the limit chooses 8 x 2 and goes on from step 3 (exit $rc)"

# 7. Over MPI ranks, with --plan auto, and for tune-lr.
mpi_or_stop
e8r=$(estimate 8 2) e16r=$(estimate 16 2)
limit2=$(python3 -c "import sys; a, b = map(float, sys.argv[1:]); print('%.6f' % ((a + b) / 2 / 0.9 / 1024))" "$e8r" "$e16r")
train mpi 2 "${base[@]}" --train.steps=2 --train.micro_batch=auto --run.mem_limit="$limit2"
grep -q "^micro_batch auto: micro-batches of 8 sequences, 2 a step" "$tmp/mpi.out" &&
	grep -q "batch 8 x seq 32 x accum 2" "$tmp/mpi.out"
ok $? "two data-parallel ranks under $limit2 GiB (estimates $e8r MiB at 8, $e16r MiB at 16 over 2 ranks) agree on 8 x 2, 4 sequences each (exit $rc): $(grep '^micro_batch' "$tmp/mpi.out")"
train planned 2 "${base[@]}" --train.steps=2 --plan auto --train.micro_batch=auto
grep -q "^plan auto: " "$tmp/planned.out" && grep -q "^micro_batch auto: " "$tmp/planned.out"
ok $? "--plan auto chooses the layout and micro-batch, the trial step checks it (exit $rc): $(grep '^micro_batch' "$tmp/planned.out")"
"$LLTRAIN" tune-lr "${base[@]}" --steps=12 --train.micro_batch=auto --run.mem_limit="$limit" \
	--run.dir="$tmp/tune" >"$tmp/tune.out" 2>&1
rc=$?
[ $rc = 0 ] && grep -q "^micro_batch auto: micro-batches of 8 sequences, 2 a step" "$tmp/tune.out" &&
	grep -q "^suggested lr:" "$tmp/tune.out"
ok $? "tune-lr tests the rate at auto's micro-batch (exit $rc)"

# 8. With the modes it must compose with: ZeRO 3, --balance auto and
# --deterministic over two ranks, and an OpenCL rank beside a CPU rank;
# each chooses under the limit and trains to its last step.
for mode in "--dist.zero=3" "--dist.balance=auto" "--deterministic"; do
	name=mode${mode//[^a-z0-9]/}
	train "$name" 2 "${base[@]}" --train.steps=2 --train.micro_batch=auto \
		--run.mem_limit="$limit2" $mode
	grep -q "^micro_batch auto: micro-batches of [0-9]* sequences" "$tmp/$name.out" &&
		grep -q '"step":2,"loss":' "$tmp/$name/metrics.jsonl"
	ok $? "auto with $mode over two ranks chooses and trains (exit $rc): $(grep '^micro_batch' "$tmp/$name.out" | cut -c1-60)"
done
if "$LLTRAIN" info 2>/dev/null | grep -q '^  opencl:'; then
	mixed=("${base[@]}" --train.steps=2 --train.micro_batch=auto --run.mem_limit="$limit2"
		--dist.balance=auto --comm-timeout 300 --run.dir="$tmp/mixed")
	"${launch[@]}" -n 1 "$LLTRAIN" train "${mixed[@]}" --run.device=opencl : \
		-n 1 "$LLTRAIN" train "${mixed[@]}" --run.device=cpu >"$tmp/mixed.out" 2>&1 </dev/null
	rc=$?
	echo "mixed $rc" >>"$tmp/statuses"
	grep -q "^micro_batch auto: micro-batches of [0-9]* sequences" "$tmp/mixed.out" &&
		grep -q '"step":2,"loss":' "$tmp/mixed/metrics.jsonl"
	ok $? "auto on an OpenCL rank beside a CPU rank chooses and trains (exit $rc): $(grep '^micro_batch' "$tmp/mixed.out" | cut -c1-60)"
else
	skip "auto on an OpenCL rank beside a CPU rank: no OpenCL device (lltrain info lists none)"
fi

while read -r dir status; do
	[ "$status" = 0 ] || { echo "# run $dir ended with status $status"; false; }
done <"$tmp/statuses"
ok $? "every run that should succeed exited 0"
echo "1..$n"
exit $failed

#!/bin/bash
# Checks `lltrain train --distill.teacher`: a short distilled run of the
# tiny preset's model lowers its loss and logs the KL term; distill.alpha
# = 1 trains bitwise as without a teacher; a teacher of another vocabulary
# and a missing one are refused in one line naming the path; a resumed run
# distills from the teacher its config names, bitwise as an uninterrupted
# one; OpenCL gives the CPU's losses; 2 MPI ranks give 1 rank's losses,
# KL terms and weights within 1e-5, and at ZeRO stage 3 with
# --deterministic one process's weights bitwise.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-distill.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# last FILE: the end of FILE on one line.
last() {
	tail -c 200 "$1" | tr '\n' ' '
}

# Two corpora' data: the test text at 320 tokens, and at 300 for a teacher
# of another vocabulary.
sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
for v in 320 300; do
	"$LLTRAIN" prepare --out "$tmp/data$v" --vocab $v --val-fraction 0.2 "$tmp/corpus.txt" \
		>"$tmp/prep$v.out" 2>&1
	ok $? "prepare the test corpus at $v tokens: $(last "$tmp/prep$v.out")"
done

common=(--train.seq=64 --train.batch=8 --train.warmup_steps=5 --train.max_minutes=0
	--run.eval_every=0 --run.eval_batches=2 --run.sample_tokens=4 --run.log_every=10
	--run.threads=1 --data.dir="$tmp/data320")
# The teacher: the tiny preset's model, wider and deeper than the student,
# trained first.
"$LLTRAIN" train "${common[@]}" --preset tiny --train.steps=120 --run.dir="$tmp/teacher" >"$tmp/teacher.out" 2>&1
ok $? "a teacher trains: $(last "$tmp/teacher.out")"
"$LLTRAIN" train "${common[@]}" --preset tiny --data.dir="$tmp/data300" --train.steps=2 \
	--run.dir="$tmp/teacher300" >"$tmp/teacher300.out" 2>&1
ok $? "a teacher of 300 tokens trains: $(last "$tmp/teacher300.out")"

# The student: the tiny preset's model at half its width and depth, 30 steps.
STEPS=30
student=("${common[@]}" --preset tiny --model.dim=96 --model.n_layers=2 --train.steps=$STEPS
	--run.checkpoint_every=10)
final=checkpoints/step_$(printf %08d $STEPS)/model.safetensors
train() {
	local dir=$1
	shift
	"$LLTRAIN" train "${student[@]}" --run.dir="$tmp/$dir" "$@" >"$tmp/$dir.out" 2>&1
}

# 1. Distilled: the loss falls, and each step logs its KL term.
train distilled --distill.teacher="$tmp/teacher"
ok $? "a distilled run finishes: $(last "$tmp/distilled.out")"
grep -q "^distill: from $tmp/teacher " "$tmp/distilled.out"
ok $? "the run names its teacher: $(grep '^distill:' "$tmp/distilled.out")"
python3 - "$tmp/distilled/metrics.jsonl" $STEPS <<'PY'
import json, math, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert len(steps) == int(sys.argv[2]), "%d steps" % len(steps)
assert all("kl" in s and math.isfinite(s["kl"]) and s["kl"] >= 0 for s in steps), "kl missing"
first = steps[0]["loss"], steps[0]["kl"]
last = [sum(s[k] for s in steps[-5:]) / 5 for k in ("loss", "kl")]
print("# loss %.4f -> %.4f, kl %.4f -> %.4f" % (first[0], last[0], first[1], last[1]))
assert last[0] < first[0] - 0.5 and last[1] < first[1], "no fall"
PY
ok $? "its cross-entropy falls by more than 0.5 nats and its KL term falls, both logged each step"

# 2. alpha = 1 is plain training, bitwise.
train plain
ok $? "the same student without a teacher finishes"
train alpha1 --distill.teacher="$tmp/teacher" --distill.alpha=1
cmp -s "$tmp/plain/$final" "$tmp/alpha1/$final" &&
	cmp -s <(grep -o '"loss":[^,]*' "$tmp/plain/metrics.jsonl") \
		<(grep -o '"loss":[^,]*' "$tmp/alpha1/metrics.jsonl")
ok $? "distill.alpha=1 gives the run without a teacher bitwise (weights and every loss)"
cmp -s "$tmp/plain/$final" "$tmp/distilled/$final"
[ $? != 0 ]
ok $? "distill.alpha=0.5 trains other weights than that"

# 3. Bad teachers: one line naming the path, a failed run.
for bad in teacher300 nowhere; do
	"$LLTRAIN" train "${student[@]}" --run.dir="$tmp/bad$bad" \
		--distill.teacher="$tmp/$bad" >"$tmp/bad$bad.out" 2>"$tmp/bad$bad.err"
	rc=$?
	lines=$(wc -l <"$tmp/bad$bad.err")
	[ $rc != 0 ] && [ "$lines" = 1 ] && grep -q "distill.teacher: $tmp/$bad" "$tmp/bad$bad.err"
	ok $? "the teacher $bad is refused (status $rc) in $lines line: $(cat "$tmp/bad$bad.err")"
done
grep -q "vocabulary 300, the model's is 320" "$tmp/badteacher300.err"
ok $? "the teacher of another vocabulary is refused for it"

# 4. A resumed run distills from its config's teacher, bitwise.
cp -r "$tmp/distilled" "$tmp/resumed"
rm -rf "$tmp/resumed/checkpoints/step_00000030" "$tmp/resumed/checkpoints/step_00000020"
"$LLTRAIN" train --run.dir="$tmp/resumed" --resume auto >"$tmp/resumed.out" 2>&1
ok $? "a distilled run resumes without naming the teacher again: $(grep '^resumed from' "$tmp/resumed.out")"
cmp -s "$tmp/distilled/$final" "$tmp/resumed/$final" && grep -q '^distill: from' "$tmp/resumed.out"
ok $? "the resumed run distills from the same teacher: weights bitwise the uninterrupted run's"

# 5. The OpenCL backend (PoCL in CI) against the CPU: the same losses and
#    KL terms within 1e-4 over 10 steps, the teacher on the device too.
if "$LLTRAIN" info --preset tiny | grep -q "built without the OpenCL backend"; then
	skip "this lltrain was built without the OpenCL backend"
else
	short=(--train.steps=10 --distill.teacher="$tmp/teacher")
	train cl10 "${short[@]}" --run.device=opencl && train cpu10 "${short[@]}" &&
		python3 - "$tmp/cpu10" "$tmp/cl10" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(r + "/metrics.jsonl") if '"loss"' in l] for r in sys.argv[1:])
worst = max(abs(x[k] - y[k]) / abs(x[k]) for x, y in zip(a, b) for k in ("loss", "kl"))
print("# opencl against cpu: worst relative loss/kl difference %.3g" % worst)
assert len(a) == len(b) == 10 and worst <= 1e-4
PY
	ok $? "a distilled run on OpenCL gives the CPU's losses and KL terms within 1e-4"
fi

# 6. 2 ranks against 1.
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
	for i in 1 2 3; do
		skip "this lltrain was built without MPI (configure found no MPI library)"
	done
elif ! command -v "$MPIEXEC" >/dev/null; then
	for i in 1 2 3; do
		skip "no $MPIEXEC on PATH (install mpich)"
	done
else
	launch=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIEXEC")
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		launch+=(--oversubscribe --allow-run-as-root)
	fi
	"${launch[@]}" -n 2 "$LLTRAIN" train "${student[@]}" --run.dir="$tmp/mpi2" \
		--distill.teacher="$tmp/teacher" --comm-timeout 300 >"$tmp/mpi2.out" 2>&1 </dev/null
	ok $? "a distilled run over 2 ranks finishes: $(last "$tmp/mpi2.out")"
	python3 - "$tmp/distilled" "$tmp/mpi2" "$final" <<'PY'
import json, struct, sys
def steps(run):
    return [json.loads(l) for l in open(run + "/metrics.jsonl") if '"loss"' in l]
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = steps(sys.argv[1]), steps(sys.argv[2])
assert len(a) == len(b) == 30, (len(a), len(b))
worst = max(abs(x[k] - y[k]) / abs(x[k]) for x, y in zip(a, b) for k in ("loss", "kl"))
ta, tb = tensors(sys.argv[1] + "/" + sys.argv[3]), tensors(sys.argv[2] + "/" + sys.argv[3])
dw = max(abs(p - q) for k in ta for p, q in zip(ta[k], tb[k]))
print("# 2 ranks against 1: worst relative loss/kl difference %.3g, largest weight difference %.3g"
      % (worst, dw))
assert worst <= 1e-5 and dw <= 1e-5
PY
	ok $? "2 ranks give 1 rank's losses and KL terms (relative) and weights within 1e-5"
	# ZeRO stage 3: the student's blocks gathered as they compute, the
	# teacher whole on each rank; --deterministic, bitwise one process.
	short=(--train.steps=6 --distill.teacher="$tmp/teacher" --deterministic)
	six=checkpoints/step_00000006/model.safetensors
	train det1 "${short[@]}" --run.checkpoint_every=6 &&
		"${launch[@]}" -n 2 "$LLTRAIN" train "${student[@]}" "${short[@]}" --zero 3 \
			--run.checkpoint_every=6 --run.dir="$tmp/z3" --comm-timeout 300 \
			>"$tmp/z3.out" 2>&1 </dev/null &&
		cmp "$tmp/det1/$six" "$tmp/z3/$six"
	ok $? "a distilled run over 2 ranks at ZeRO 3 ends bitwise as one process's: $(last "$tmp/z3.out")"
fi

echo "1..$n"
exit $failed

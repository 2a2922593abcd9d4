#!/bin/sh
# Distillation against training from scratch: a 15M-preset teacher trained
# first on the default corpus, then a student of the tiny preset's shape
# (and the teacher's tokenizer) trained for the same steps and tokens
# twice, from scratch and distilled from the teacher (distill.alpha and
# distill.temperature at their defaults unless DISTILL_ARGS says
# otherwise); prints the three validation losses.
#   bench/distill.sh [LLTRAIN [TEACHER_STEPS [STEPS [DIR]]]]
#                    (defaults ./lltrain, 400, 200, a temporary directory)
# DIR keeps the data and the three runs (a teacher already there is used
# as it is); THREADS (2) and DEVICE (cpu) pick where it runs, and
# STUDENT_BATCH (16, the tiny preset's) the students' sequences per step.
set -u
LLTRAIN=${1:-./lltrain}
TEACHER_STEPS=${2:-400}
STEPS=${3:-200}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
DISTILL_ARGS=${DISTILL_ARGS:-}
STUDENT_BATCH=${STUDENT_BATCH:-16}
if [ $# -ge 4 ]; then
	dir=$4
	mkdir -p "$dir" || exit 1
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-distill.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT
fi
common="--data.dir=$dir/data --run.threads=$THREADS --run.device=$DEVICE --train.max_minutes=0
	--run.eval_every=0 --run.checkpoint_every=0 --run.sample_tokens=1 --run.log_every=50"

# val_loss RUN: the last validation loss of RUN's metrics.jsonl.
val_loss() {
	sed -n 's/.*"val_loss":\([0-9.eE+-]*\).*/\1/p' "$1/metrics.jsonl" | tail -1
}
# run NAME ARGS...: one training run into DIR/NAME, its output in DIR/NAME.out.
run() {
	name=$1
	shift
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$LLTRAIN" train $common --run.dir="$dir/$name" "$@" >"$dir/$name.out" 2>&1 || {
		echo "the $name run failed:"
		tail -5 "$dir/$name.out"
		exit 1
	}
	echo "$name: $(($(date +%s) - start)) s, validation loss $(val_loss "$dir/$name")"
}

if [ -s "$dir/teacher/metrics.jsonl" ] && grep -q val_loss "$dir/teacher/metrics.jsonl"; then
	echo "teacher: kept from $dir/teacher, validation loss $(val_loss "$dir/teacher")"
else
	rm -rf "$dir/teacher"
	run teacher --preset 15M --train.steps="$TEACHER_STEPS"
fi
# the tiny preset's shape with the teacher's vocabulary (from the tokenizer)
student="--preset tiny --train.steps=$STEPS --train.batch=$STUDENT_BATCH"
# shellcheck disable=SC2086
run scratch $student
# shellcheck disable=SC2086
run distilled $student --distill.teacher="$dir/teacher" $DISTILL_ARGS
s=$(val_loss "$dir/scratch") d=$(val_loss "$dir/distilled")
tokens=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' "$dir/scratch/metrics.jsonl" | tail -1)
echo "student of the tiny preset's shape, $STEPS steps ($tokens tokens) each: validation loss" \
	"from scratch $s, distilled $d (teacher: 15M preset, $TEACHER_STEPS steps," \
	"$(val_loss "$dir/teacher"))"

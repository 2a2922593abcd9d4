#!/bin/sh
# Distillation against training from scratch: a 15M-preset teacher trained
# first on the default corpus, then a student of the tiny preset's shape
# (and the teacher's tokenizer) trained for the same steps and tokens
# twice, from scratch and distilled from the teacher (distill.alpha and
# distill.temperature at their defaults unless DISTILL_ARGS says
# otherwise); prints the three validation losses.
#   bench/distill.sh [LLTRAIN [TEACHER_STEPS [STEPS [DIR]]]]
#                    (defaults ./lltrain, 400, 200, a temporary directory)
# DIR keeps the data and the three runs (a run already there that has
# its validation loss is used as it is); THREADS (2) and DEVICE (cpu) pick
# where it runs; VOCAB (the 15M preset's 32000) the tokenizer's size;
# TEACHER_ARGS and STUDENT_ARGS add settings to the teacher's run and to
# both students' (--train.max_minutes=M stops the teacher after M minutes,
# evaluated, before the end of its schedule).
set -u
LLTRAIN=${1:-./lltrain}
TEACHER_STEPS=${2:-400}
STEPS=${3:-200}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
DISTILL_ARGS=${DISTILL_ARGS:-}
VOCAB=${VOCAB:-32000}
TEACHER_ARGS=${TEACHER_ARGS:-}
STUDENT_ARGS=${STUDENT_ARGS:-}
if [ $# -ge 4 ]; then
	dir=$4
	mkdir -p "$dir" || exit 1
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-distill.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT
fi
common="--data.dir=$dir/data --data.vocab_size=$VOCAB --run.threads=$THREADS --run.device=$DEVICE --train.max_minutes=0
	--run.eval_every=0 --run.checkpoint_every=0 --run.sample_tokens=1 --run.log_every=50"

. "$(dirname "$0")/train_runs.sh"

# shellcheck disable=SC2086
run teacher --preset 15M --train.steps="$TEACHER_STEPS" $TEACHER_ARGS
# the tiny preset's shape with the teacher's vocabulary (from the tokenizer)
student="--preset tiny --train.steps=$STEPS $STUDENT_ARGS"
# shellcheck disable=SC2086
run scratch $student
# shellcheck disable=SC2086
run distilled $student --distill.teacher="$dir/teacher" $DISTILL_ARGS
s=$(val_loss "$dir/scratch") d=$(val_loss "$dir/distilled")
tokens=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' "$dir/scratch/metrics.jsonl" | tail -1)
taught=$(sed -n 's/.*"step":\([0-9]*\),"loss".*/\1/p' "$dir/teacher/metrics.jsonl" | tail -1)
echo "student of the tiny preset's shape, $STEPS steps ($tokens tokens) each: validation loss" \
	"from scratch $s, distilled $d (teacher: the 15M preset's shape, $taught of" \
	"$TEACHER_STEPS steps, $(val_loss "$dir/teacher"))"

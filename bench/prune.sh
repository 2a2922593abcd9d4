#!/bin/sh
# Pruning, then distilling, against training the pruned shape from
# scratch: the 15M preset trained first on the default corpus (the
# teacher), pruned by `lltrain prune` to FFN_KEEP of its MLP channels and
# HEADS_KEEP of its heads, then the pruned shape trained for the same steps
# and tokens three ways: from random weights, from the pruned weights, and
# from the pruned weights distilled from the unpruned teacher
# (--distill.teacher); prints the four validation losses.
#   bench/prune.sh [LLTRAIN [TEACHER_STEPS [STEPS [DIR]]]]
#                  (defaults ./lltrain, 400, 200, a temporary directory)
# DIR keeps the data and the runs (a run already there that has its
# validation loss is used as it is); THREADS (2) and DEVICE (cpu) pick
# where it runs; VOCAB (the 15M preset's 32000) the tokenizer's size;
# FFN_KEEP (0.5) and HEADS_KEEP (0.75) the fractions kept; TEACHER_ARGS
# and STUDENT_ARGS add settings to the teacher's run and to the three
# students' (after the 15M preset's batch of 8 x 256).
set -u
LLTRAIN=${1:-./lltrain}
TEACHER_STEPS=${2:-400}
STEPS=${3:-200}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
VOCAB=${VOCAB:-32000}
FFN_KEEP=${FFN_KEEP:-0.5}
HEADS_KEEP=${HEADS_KEEP:-0.75}
TEACHER_ARGS=${TEACHER_ARGS:-}
STUDENT_ARGS=${STUDENT_ARGS:-}
if [ $# -ge 4 ]; then
	dir=$4
	mkdir -p "$dir" || exit 1
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-prune.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT
fi
common="--data.dir=$dir/data --data.vocab_size=$VOCAB --run.threads=$THREADS --run.device=$DEVICE
	--train.max_minutes=0 --run.eval_every=0 --run.checkpoint_every=0 --run.sample_tokens=1
	--run.log_every=50"

. "$(dirname "$0")/train_runs.sh"
# shape KEY: an integer of the pruned model's config.json.
shape() {
	sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" "$dir/pruned/config.json" | head -1
}

# shellcheck disable=SC2086
run teacher --preset 15M --train.steps="$TEACHER_STEPS" $TEACHER_ARGS
if [ ! -f "$dir/pruned/config.json" ]; then
	"$LLTRAIN" prune --ffn-keep "$FFN_KEEP" --heads-keep "$HEADS_KEEP" --threads "$THREADS" \
		--device "$DEVICE" --out "$dir/pruned" "$dir/teacher" >"$dir/prune.out" 2>&1 || {
		echo "lltrain prune failed:"
		tail -3 "$dir/prune.out"
		exit 1
	}
fi
grep -v '^lltrain prune: using' "$dir/prune.out" 2>/dev/null
# the pruned shape from random weights: the 15M preset with the new widths
pruned_shape="--preset 15M --model.n_heads=$(shape num_attention_heads)
	--model.n_kv_heads=$(shape num_key_value_heads) --model.head_dim=$(shape head_dim)
	--model.ffn_dim=$(shape intermediate_size) --model.n_layers=$(shape num_hidden_layers)"
# the 15M preset's batch for every student, whose shape comes from the file
student="--train.batch=8 --train.seq=256 --train.steps=$STEPS $STUDENT_ARGS"
# shellcheck disable=SC2086
run scratch $pruned_shape $student
# shellcheck disable=SC2086
run pruned_trained --init "$dir/pruned" $student
# shellcheck disable=SC2086
run pruned_distilled --init "$dir/pruned" $student --distill.teacher="$dir/teacher"
tokens=$(sed -n 's/.*"tokens":\([0-9]*\).*/\1/p' "$dir/scratch/metrics.jsonl" | tail -1)
s=$(val_loss "$dir/scratch") t=$(val_loss "$dir/pruned_trained") d=$(val_loss "$dir/pruned_distilled")
echo "the pruned shape, $STEPS steps ($tokens tokens) each: validation loss from scratch $s," \
	"pruned then trained $t, pruned then distilled $d (the unpruned teacher:" \
	"$(val_loss "$dir/teacher"))"
awk -v s="$s" -v d="$d" 'BEGIN { printf "pruned then distilled against scratch: %+.4f nats\n", d - s }'

#!/bin/sh
# The learning-rate range test against a grid of rates: lltrain tune-lr
# (its default settings) on the tiny preset and the test corpus
# (tests/data/tiny_corpus.txt, one document a line, prepared as the checks
# prepare it: a 320-token vocabulary, a fifth held out), then STEPS steps
# of training at the suggested rate and at each rate of the grid {1e-4,
# 3e-4, 1e-3, 3e-3, 1e-2}, each with train.min_lr a tenth of its rate and
# otherwise the preset's schedule; prints each run's validation loss and
# the ratio of the suggestion's to the grid's best, and exits 1 when that
# ratio exceeds 1.05 (or a run fails).
#   bench/tune_lr.sh [LLTRAIN [STEPS [DIR]]]
#                    (defaults ./lltrain, 300, a temporary directory)
# DIR keeps the data, the test and the runs (a run already there that has
# its validation loss is used as it is); THREADS (2) and DEVICE (cpu) pick
# where it runs.
set -u
LLTRAIN=${1:-./lltrain}
STEPS=${2:-300}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
GRID="1e-4 3e-4 1e-3 3e-3 1e-2"
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
if [ $# -ge 3 ]; then
	dir=$3
	mkdir -p "$dir" || exit 1
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-tune-lr.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT
fi
common="--preset tiny --data.dir=$dir/data --run.threads=$THREADS --run.device=$DEVICE
	--train.max_minutes=0 --train.steps=$STEPS --run.eval_every=0 --run.checkpoint_every=0
	--run.sample_tokens=1 --run.log_every=100"

. "$(dirname "$0")/train_runs.sh"

if [ ! -s "$dir/data/tokenizer.json" ]; then
	sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$dir/corpus.txt"
	"$LLTRAIN" prepare --out "$dir/data" --vocab 320 --val-fraction 0.2 "$dir/corpus.txt" \
		>"$dir/prepare.out" 2>&1 || { echo "prepare failed:"; tail -5 "$dir/prepare.out"; exit 1; }
fi

# the range test, unless DIR holds its curve
curve=$dir/test/lr_find.jsonl
if ! grep -q '"suggested_lr": [0-9]' "$curve" 2>/dev/null; then
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$LLTRAIN" tune-lr $common --run.dir="$dir/test" >"$dir/test.out" 2>&1 || {
		echo "tune-lr failed:"
		tail -5 "$dir/test.out"
		exit 1
	}
	echo "tune-lr: $(($(date +%s) - start)) s, $(grep -c '"step"' "$curve") steps," \
		"$(sed -n 's/.*"stopped": "\([a-z]*\)".*/stopped at \1/p' "$curve")"
fi
lr=$(sed -n 's/.*"suggested_lr": \([0-9.eE+-]*\).*/\1/p' "$curve")
echo "suggested lr: $lr"

run suggested --train.lr="$lr" --train.min_lr="$(awk -v r="$lr" 'BEGIN { printf "%.9g", r / 10 }')"
for r in $GRID; do
	run "grid-$r" --train.lr="$r" --train.min_lr="$(awk -v r="$r" 'BEGIN { printf "%.9g", r / 10 }')"
done

best= best_lr=
for r in $GRID; do
	v=$(val_loss "$dir/grid-$r")
	if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then
		best=$v best_lr=$r
	fi
done
s=$(val_loss "$dir/suggested")
echo "validation loss after $STEPS steps:"
printf '  %-26s %s\n' "$lr (tune-lr)" "$s"
for r in $GRID; do
	printf '  %-26s %s\n' "$r" "$(val_loss "$dir/grid-$r")"
done
awk -v s="$s" -v b="$best" -v lr="$best_lr" 'BEGIN {
	printf "suggested / best of the grid (%s): %.4f (at most 1.05)\n", lr, s / b
	exit !(s / b <= 1.05) }'

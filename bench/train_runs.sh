# The training runs the distillation and pruning benchmarks share, sourced
# by bench/distill.sh and bench/prune.sh: each run goes into DIR/NAME (the
# script's $dir) with the script's $common settings, and one that already
# has its validation loss is kept, so a DIR carries finished runs from one
# call to the next.

# val_loss RUN: the last validation loss of RUN's metrics.jsonl.
val_loss() {
	sed -n 's/.*"val_loss":\([0-9.eE+-]*\).*/\1/p' "$1/metrics.jsonl" | tail -1
}
# run NAME ARGS...: one training run into DIR/NAME, its output in
# DIR/NAME.out; one that has its validation loss is kept.
run() {
	name=$1
	shift
	if [ -n "$(val_loss "$dir/$name" 2>/dev/null)" ]; then
		echo "$name: kept from $dir/$name, validation loss $(val_loss "$dir/$name")"
		return
	fi
	rm -rf "${dir:?}/$name"
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$LLTRAIN" train $common --run.dir="$dir/$name" "$@" >"$dir/$name.out" 2>&1 || {
		echo "the $name run failed:"
		tail -5 "$dir/$name.out"
		exit 1
	}
	echo "$name: $(($(date +%s) - start)) s, validation loss $(val_loss "$dir/$name")"
}

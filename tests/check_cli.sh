#!/bin/sh
# Checks lltrain's command line as a person meets it: exit statuses (0 done,
# 1 bad input, 2 usage) and the one-line messages that name what is wrong.
LLTRAIN=${LLTRAIN:-./lltrain}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-cli.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"
expect 0 "lltrain 0.1.0" "--version prints the version" -- --version
expect 2 "unknown command 'frobnicate'" "an unknown command is a usage error" -- frobnicate
expect 2 "usage: lltrain COMMAND" "no command prints the usage" --
expect 0 "--resume auto|PATH" "help train shows train's options" -- help train
expect 0 "--preset NAME" "train --help shows the options" -- train --help
expect 0 "--min-lr LR" "help tune-lr shows tune-lr's options" -- help tune-lr
expect 2 "--preset 'huge': unknown (expected tiny, 15M, 110M, 1B or 7B)" "an unknown preset names the choices" -- bench --preset huge
expect 2 "--steps 'many': expected an integer in [1, 1000000]" "a non-numeric count names the option and the range" -- bench --steps many
expect 2 "--train.lr '-1': expected a number in (0, 10]" "an out-of-range learning rate gives the range" -- train --train.lr=-1
expect 2 "--train.batch: expected a value after it" "a setting without a value is a usage error" -- train --train.batch
expect 2 "--nonsense.key: unknown section (expected model, train, data, run, dist or distill)" "an unknown section names the sections" -- train --nonsense.key=3
printf '[train]\nlr = 0.001\n\n[model]\ndim = big\n' >"$tmp/bad.ini"
expect 1 "$tmp/bad.ini:5: [model] dim = 'big': expected an integer in" "a bad config file value is named by file and line" -- info --config "$tmp/bad.ini"
expect 1 "$tmp/bad.ini:5: [model] dim" "train names a bad config file value by file and line" -- train --config "$tmp/bad.ini"
expect 1 "$tmp/absent.txt: No such file or directory" "a missing corpus file is named" -- train --run.dir="$tmp/run" "$tmp/absent.txt"
: >"$tmp/empty.txt"
expect 1 "$tmp/empty.txt: the training corpus is empty" "an empty corpus is refused, naming the file" -- train --run.dir="$tmp/run" "$tmp/empty.txt"
mkdir -p "$tmp/bad"
printf '{"model": {"type": "WordPiece"}}' >"$tmp/bad/tokenizer.json"
printf 'some text\n%%\nmore text\n' >"$tmp/small.txt"
expect 1 "bad/tokenizer.json: model.type is 'WordPiece', expected 'BPE'" "a tokenizer.json that is not BPE is refused, naming the file" -- prepare --out "$tmp/prepared" --tokenizer "$tmp/bad/tokenizer.json" "$tmp/small.txt"
expect 0 "parameters:       15191712 (15.19M)" "info counts the 15M preset's parameters" -- info --preset 15M
expect 0 "backend cpu:" "info lists the CPU backend" -- info --preset tiny
expect 0 "profile:" "bench --profile times the CPU backend's ops" -- bench --preset tiny --device cpu --threads 1 --steps 2 --batch 2 --seq 16 --sample-tokens 0 --profile
for op in gemm attention_backward xent adamw; do
	grep -q "^  $op  *[0-9.]*%  *[0-9.]* ms/step  *[1-9][0-9]* calls/step" "$tmp/out"
	ok $? "the CPU profile has a line for $op with its calls per step"
done
# The shares of the ops add up to 100% (each is printed to 0.01%).
awk '/^  [a-z_]+ +[0-9.]+%/ { s += $2 + 0 } END { exit !(s > 99.8 && s < 100.2) }' "$tmp/out"
ok $? "the CPU profile's shares add up to 100%"
echo "1..$n"
exit $failed

#!/bin/sh
# Checks chat data (TAP): `lltrain prepare --format chat` renders
# conversations with each chat template into the ids and trained marks
# that the shards hold (decoded back to text and held to renderings written
# here), a few training steps on it count only the trained tokens (in the
# log, in lltrain eval), a resumed run and a 2-rank one end bitwise as an
# uninterrupted 1-rank run, and bad
# input (a malformed line, a message without role or content, an unknown
# role, a template the tokenizer cannot apply) is refused in one line that
# names the file and line, leaving the earlier output as it was.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
PYTHON=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-chat.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

if ! "$PYTHON" -c 'import json, struct' 2>/dev/null; then
	echo "1..0 # SKIP no python3 ($PYTHON) to write the tokenizer and read the shards"
	exit 0
fi

# A byte-level tokenizer of the tiny corpus, then the same with the special
# tokens of the three templates added after its vocabulary.
"$LLTRAIN" prepare --out "$tmp/base" --vocab 400 --val-fraction 0 \
	"$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/log" 2>&1
ok $? "a tokenizer is trained on the tiny corpus"
"$PYTHON" - "$tmp/base/tokenizer.json" "$tmp/tok.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
n = len(j["model"]["vocab"])
for i, t in enumerate(["<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>",
                       "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]):
    j["added_tokens"].append({"id": n + i, "content": t, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True})
    j["model"]["vocab"][t] = n + i
json.dump(j, open(sys.argv[2], "w"))
EOF
ok $? "the special tokens of chatml, llama2 and llama3 are added to it"

# Two conversations, a blank line between them. Llama 2 strips a user turn
# with the system block before it as one string, so " Hi there" keeps its
# leading space there (as the Llama 2 chat template does).
cat >"$tmp/chat.jsonl" <<'EOF'
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi there "}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]}

{"prompt": "What is two?", "completion": "A number."}
EOF

# decode.py DIR TEMPLATE: each example of DIR/train_0000.bin decoded with
# DIR/tokenizer.json, held to the rendering and to the trained runs below.
cat >"$tmp/decode.py" <<'EOF'
import json, struct, sys
d, template = sys.argv[1], sys.argv[2]
tok = json.load(open(d + "/tokenizer.json"))
# the byte-level alphabet: printable bytes stand for themselves, the
# others for the characters from U+0100 on, in byte order
keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
char_of = {b: chr(b) for b in keep}
extra = 0
for b in range(256):
    if b not in char_of:
        char_of[b] = chr(256 + extra)
        extra += 1
byte_of = {c: b for b, c in char_of.items()}
text_of = {i: bytes(byte_of[c] for c in s) for s, i in tok["model"]["vocab"].items()
           if all(c in byte_of for c in s)}
for a in tok["added_tokens"]:
    text_of[a["id"]] = a["content"].encode()
data = open(d + "/train_0000.bin", "rb").read()
version, vocab, width, eot, count, docs = struct.unpack_from("<IIIIQQ", data, 8)
flags, = struct.unpack_from("<I", data, 44)
ids = struct.unpack_from("<%d%s" % (count, "H" if width == 2 else "I"), data, 64)
marks = data[64 + count * width:]
assert version == 2 and flags == 1, (version, flags)
assert len(marks) == count, (len(marks), count)
starts = [i for i in range(count) if marks[i] & 2] + [count]
examples = []
for k in range(docs):
    a, b = starts[k], starts[k + 1]
    text = b"".join(text_of[t] for t in ids[a:b]).decode()
    runs, cur = [], b""
    for t in range(a, b):
        if marks[t] & 1:
            cur += text_of[ids[t]]
        elif cur:
            runs.append(cur.decode())
            cur = b""
    if cur:
        runs.append(cur.decode())
    examples.append((text, runs))
want = {
    "chatml": [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there <|im_end|>\n"
         "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
         "<|im_start|>assistant\nSee you.<|im_end|>\n",
         ["Hello!<|im_end|>", "See you.<|im_end|>"]),
        ("<|im_start|>user\nWhat is two?<|im_end|>\n<|im_start|>assistant\nA number.<|im_end|>\n",
         ["A number.<|im_end|>"])],
    "llama2": [
        ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi there [/INST] Hello! </s>"
         "<s>[INST] Bye [/INST] See you. </s>",
         [" Hello! </s>", " See you. </s>"]),
        ("<s>[INST] What is two? [/INST] A number. </s>", [" A number. </s>"])],
    "llama3": [
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nSee you.<|eot_id|>",
         ["Hello!<|eot_id|>", "See you.<|eot_id|>"]),
        ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is two?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nA number.<|eot_id|>",
         ["A number.<|eot_id|>"])],
}[template]
if examples != want:
    for got, exp in zip(examples, want):
        if got != exp:
            print("# got  %r\n# want %r" % (got, exp))
    print("# %d examples, %d expected" % (len(examples), len(want)))
    sys.exit(1)
EOF

for t in chatml llama2 llama3; do
	"$LLTRAIN" prepare --format chat --template $t --tokenizer "$tmp/tok.json" \
		--val-fraction 0 --out "$tmp/$t" "$tmp/chat.jsonl" >"$tmp/log" 2>&1
	rc=$?
	[ $rc = 0 ] || sed 's/^/# /' "$tmp/log"
	ok $rc "prepare --format chat --template $t succeeds (exit $rc)"
	grep -q "examples: *2," "$tmp/log"
	ok $? "$t: the summary counts 2 examples (the blank line skipped)"
	"$PYTHON" "$tmp/decode.py" "$tmp/$t" $t
	ok $? "$t: the shard's ids decode to the template's rendering, the trained marks to the answers"
done

# Without --template, the template follows the tokenizer's special tokens.
"$PYTHON" - "$tmp/base/tokenizer.json" "$tmp/tok3.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
n = len(j["model"]["vocab"])
for i, t in enumerate(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|eot_id|>"]):
    j["added_tokens"].append({"id": n + i, "content": t, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True})
    j["model"]["vocab"][t] = n + i
json.dump(j, open(sys.argv[2], "w"))
EOF
expect 0 "template:     llama3 (from the tokenizer)" \
	"a tokenizer with <|start_header_id|> and no <|im_start|> gets llama3" -- \
	prepare --format chat --tokenizer "$tmp/tok3.json" --val-fraction 0 --out "$tmp/auto3" \
	"$tmp/chat.jsonl"
"$PYTHON" "$tmp/decode.py" "$tmp/auto3" llama3
ok $? "and renders as --template llama3 does"
expect 0 "template:     chatml (from the tokenizer)" \
	"a tokenizer with every special token gets chatml" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --val-fraction 0 --out "$tmp/auto" \
	"$tmp/chat.jsonl"

# Training: every answer is "Yes.", so each example has the same trained
# targets and a step of B windows trains B times that many tokens.
"$PYTHON" -c '
import json
for i in range(60):
    print(json.dumps({"messages": [{"role": "user", "content": "Question %d, is it so?" % i},
                                   {"role": "assistant", "content": "Yes."}]}))' \
	>"$tmp/yes.jsonl"
"$LLTRAIN" prepare --format chat --tokenizer "$tmp/tok.json" --val-fraction 0.1 \
	--out "$tmp/yes" "$tmp/yes.jsonl" >"$tmp/log" 2>&1
ok $? "60 conversations are prepared, 6 held out"
per=$("$PYTHON" -c '
import json, sys
j = json.load(open(sys.argv[1]))
t, e = j["trained_tokens"]["train"], j["examples"]["train"]
print(t // e if t % e == 0 and e == 54 else -1)' "$tmp/yes/prepare.json")
[ "$per" -gt 0 ] 2>/dev/null
ok $? "each of the 54 training examples has the same trained targets ($per)"
STEPS=30 B=4
"$LLTRAIN" train --model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 \
	--model.ffn_dim=128 --model.max_seq=64 --train.seq=64 --train.batch=$B \
	--train.warmup_steps=5 --train.steps=$STEPS --train.max_minutes=0 --run.eval_every=10 \
	--run.sample_every=0 --data.dir="$tmp/yes" --run.dir="$tmp/run" >"$tmp/train.log" 2>&1
rc=$?
[ $rc = 0 ] || tail -5 "$tmp/train.log" | sed 's/^/# /'
ok $rc "training $STEPS steps on the chat data succeeds (exit $rc)"
grep -q "data: 54 training and 6 validation examples, one per window of 64 tokens, padded; truncated (longer than 65 tokens): 0 training, 0 validation" "$tmp/train.log"
ok $? "the run says how the examples fill the windows and how many are cut"
"$PYTHON" - "$tmp/run/metrics.jsonl" "$STEPS" "$B" "$per" <<'EOF'
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "loss" in l]
evals = [l for l in lines if "val_loss" in l]
n, B, per = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bad = []
if len(steps) != n or steps[-1]["tokens"] != n * B * per:
    bad.append("tokens %s after %d steps, expected %d" % (steps[-1]["tokens"], len(steps), n * B * per))
if any(l["loss"] is None or not math.isfinite(l["loss"]) for l in steps):
    bad.append("a loss is not finite")
if not evals or not evals[-1]["val_loss"] < 0.5 * steps[0]["loss"]:
    bad.append("validation loss %s, first step's %s" % (evals[-1]["val_loss"] if evals else None,
                                                        steps[0]["loss"]))
for b in bad:
    print("# " + b)
sys.exit(1 if bad else 0)
EOF
ok $? "the logged tokens count only trained targets ($STEPS x $B x $per), and the validation loss falls below half the first loss"

# lltrain chat: the run learned to answer "Yes."; greedily, in the template its data were
# rendered with (found again from the tokenizer), it says so to a question it never saw,
# once from --message and twice on standard input, the second answer seeing the first.
out=$("$LLTRAIN" chat --temperature 0 --message "Question 99, is it so?" "$tmp/run" 2>"$tmp/chat.err")
rc=$?
[ $rc = 0 ] && [ "$out" = "Yes." ]
ok $? "lltrain chat --message answers as the fine-tune taught: '$out' (exit $rc)"
long=$(printf 'word %.0s' $(seq 200))
out=$(printf '%s\nQuestion 98, is it so?\n/reset\n\nQuestion 97, is it so?\n' "$long" |
	"$LLTRAIN" chat --temperature 0 "$tmp/run" 2>"$tmp/chat.err" | tr '\n' '|')
rc=$?
[ $rc = 0 ] && [ "$out" = "Yes.|Yes.|" ] && grep -q "leaves no room" "$tmp/chat.err"
ok $? "lltrain chat on standard input answers each line, a message too long for the context reported and passed over, /reset and an empty line aside: '$out'"
expect_brief 2 "--template vicuna: expected chatml, llama2 or llama3" \
	"lltrain chat refuses an unknown template in one line" -- \
	chat --template vicuna --message hi "$tmp/run"
expect 1 "prompt of" "lltrain chat refuses a message too long for the context" -- \
	chat --message "$(printf 'word %.0s' $(seq 200))" "$tmp/run"

# lltrain eval counts the trained tokens of the validation examples alone.
val_trained=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["trained_tokens"]["val"])' \
	"$tmp/yes/prepare.json")
expect 0 "\"tokens\":$val_trained," \
	"lltrain eval of the chat data counts its $val_trained trained validation tokens" -- \
	eval "$tmp/run" --data "$tmp/yes" --json
expect 1 "val_0000.bin: a shard of chat examples: evaluate the data directory" \
	"lltrain eval refuses an example shard alone" -- eval "$tmp/run" --data "$tmp/yes/val_0000.bin"

# A window too short for the answers: the examples are cut, and said to be.
"$LLTRAIN" train --model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 \
	--model.ffn_dim=128 --model.max_seq=32 --train.seq=8 --train.batch=2 --train.steps=1 \
	--train.max_minutes=0 --run.sample_every=0 --data.dir="$tmp/yes" \
	--run.dir="$tmp/short" >"$tmp/short.log" 2>&1
grep -q "truncated (longer than 9 tokens): 54 training, 6 validation" "$tmp/short.log"
ok $? "a window of 8 tokens cuts every example, and the run counts them"

# A tokenizer without <|endoftext|> (as Llama's): the shards pad with the
# template's end of turn, and training runs, leaving out its closing sample.
"$PYTHON" - "$tmp/tok3.json" "$tmp/noeot.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
for a in j["added_tokens"]:
    if a["content"] == "<|endoftext|>":
        del j["model"]["vocab"][a["content"]]
        a["content"] = "<|reserved|>"
        j["model"]["vocab"][a["content"]] = a["id"]
json.dump(j, open(sys.argv[2], "w"))
EOF
"$LLTRAIN" prepare --format chat --tokenizer "$tmp/noeot.json" --val-fraction 0.1 \
	--out "$tmp/noeot" "$tmp/yes.jsonl" >"$tmp/log" 2>&1 &&
	"$LLTRAIN" train --model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 \
	--model.ffn_dim=128 --model.max_seq=64 --train.seq=64 --train.batch=2 --train.steps=2 \
	--train.max_minutes=0 --data.dir="$tmp/noeot" --run.dir="$tmp/noeot-run" >"$tmp/log" 2>&1 &&
	grep -q "no sample at step 2: the tokenizer has no <|endoftext|>" "$tmp/log"
ok $? "chat data with a tokenizer lacking <|endoftext|> trains, saying why it gives no sample"

# Resume and data parallelism draw the same examples: a run resumed from
# its step-6 checkpoint ends bitwise as the uninterrupted one, and so does
# a deterministic run over 2 ranks (where MPI is there).
chat_run() { # DIR ARGS...: 12 steps on the "Yes." data into $tmp/DIR
	d=$1
	shift
	"$@" --model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 \
		--model.ffn_dim=128 --model.max_seq=64 --train.seq=64 --train.batch=4 \
		--train.warmup_steps=2 --train.steps=12 --train.max_minutes=0 --run.eval_every=0 \
		--run.sample_every=0 --run.checkpoint_every=6 --run.threads=1 --data.dir="$tmp/yes" \
		--run.dir="$tmp/$d" >"$tmp/$d.log" 2>&1
}
final=checkpoints/step_00000012
chat_run R1 "$LLTRAIN" train --deterministic
ok $? "12 deterministic steps on chat data, checkpoints at 6 and 12"
cp -r "$tmp/R1" "$tmp/R2" && rm -rf "$tmp/R2/$final" && chat_run R2 "$LLTRAIN" train \
	--deterministic --resume auto && grep -q "resumed from" "$tmp/R2.log" &&
	cmp "$tmp/R1/$final/model.safetensors" "$tmp/R2/$final/model.safetensors"
ok $? "resumed from step 6, the run ends with the uninterrupted run's parameters, bit for bit"
MPIEXEC=${MPIEXEC:-mpiexec}
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
	skip "this lltrain was built without MPI"
elif ! command -v "$MPIEXEC" >/dev/null; then
	skip "no $MPIEXEC on PATH (install mpich)"
else
	extra=
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		extra="--oversubscribe --allow-run-as-root"
	fi
	# shellcheck disable=SC2086
	chat_run R3 env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		"$MPIEXEC" $extra -n 2 "$LLTRAIN" train --deterministic
	rc=$?
	[ $rc = 0 ] || tail -3 "$tmp/R3.log" | sed 's/^/# /'
	[ $rc = 0 ] && cmp "$tmp/R1/$final/model.safetensors" "$tmp/R3/$final/model.safetensors"
	ok $? "over 2 ranks (each its share of the examples), the parameters are the 1-rank run's, bit for bit"
fi

# Bad input: each refused in one line; the earlier output stays as it was.
sum_before=$(cat "$tmp/chatml"/* | cksum)
bad() { # NAME CONTENT: a file whose third line is CONTENT
	{ head -1 "$tmp/chat.jsonl"; echo; printf '%s\n' "$2"; } >"$tmp/$1.jsonl"
}
bad notjson '{"messages": [{"role": "user", "content": "x"}'
expect_brief 1 "$tmp/notjson.jsonl:3: not JSON" "a malformed line is refused with its number" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/notjson.jsonl"
bad norole '{"messages": [{"role": "user", "content": "x"}, {"content": "y"}]}'
expect_brief 1 "$tmp/norole.jsonl:3: messages[1]: no \"role\", expected \"system\", \"user\" or \"assistant\"" \
	"a message without a role is refused" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/norole.jsonl"
bad nocontent '{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}'
expect_brief 1 "$tmp/nocontent.jsonl:3: messages[0]: no \"content\", expected a string" \
	"a message without content is refused" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/nocontent.jsonl"
bad role '{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]}'
expect_brief 1 "$tmp/role.jsonl:3: messages[1]: role \"tool\", expected \"system\", \"user\" or \"assistant\"" \
	"an unknown role is refused" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/role.jsonl"
bad neither '{"text": "x"}'
expect_brief 1 "$tmp/neither.jsonl:3: expected {\"messages\"" \
	"an object with neither messages nor prompt is refused" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/neither.jsonl"
bad noanswer '{"messages": [{"role": "user", "content": "x"}]}'
expect_brief 1 "$tmp/noanswer.jsonl:3: no assistant message" \
	"a conversation without an answer is refused" -- \
	prepare --format chat --tokenizer "$tmp/tok.json" --out "$tmp/chatml" "$tmp/noanswer.jsonl"
bad sys2 '{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]}'
expect_brief 1 "$tmp/sys2.jsonl:3: template llama2 takes a system message only first" \
	"llama2 refuses a system message after the first" -- \
	prepare --format chat --template llama2 --tokenizer "$tmp/tok.json" --out "$tmp/chatml" \
	"$tmp/sys2.jsonl"
expect_brief 1 "template chatml needs the special token <|im_start|>, which the tokenizer lacks" \
	"a template whose special tokens the tokenizer lacks is refused, naming the token" -- \
	prepare --format chat --template chatml --tokenizer "$tmp/base/tokenizer.json" \
	--out "$tmp/chatml" "$tmp/chat.jsonl"
expect_brief 1 "the tokenizer has none of <|im_start|>, <|start_header_id|> and <s>" \
	"a tokenizer that points to no template is refused" -- \
	prepare --format chat --tokenizer "$tmp/base/tokenizer.json" --out "$tmp/chatml" \
	"$tmp/chat.jsonl"
expect_brief 1 "chat data needs the model's tokenizer (--tokenizer)" \
	"chat data without a tokenizer is refused" -- \
	prepare --format chat --out "$tmp/chatml" "$tmp/chat.jsonl"
expect_brief 2 "--template 'alpaca': expected chatml, llama2 or llama3" \
	"an unknown template is a usage error" -- \
	prepare --format chat --template alpaca --tokenizer "$tmp/tok.json" --out "$tmp/chatml" \
	"$tmp/chat.jsonl"
expect_brief 2 "--format 'csv': expected text or chat" "an unknown format is a usage error" -- \
	prepare --format csv --out "$tmp/chatml" "$tmp/chat.jsonl"
[ "$(cat "$tmp/chatml"/* | cksum)" = "$sum_before" ] && ! ls -d "$tmp"/chatml.* >/dev/null 2>&1
ok $? "after every refusal the earlier output is as it was, with nothing left beside it"

echo "1..$n"
exit $failed

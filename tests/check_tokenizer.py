#!/usr/bin/env python3
# Holds lltrain's tokenizer to the Hugging Face `tokenizers` library (TAP).
#
# Usage:
#   check_tokenizer.py [--bin PATH]
#       runs `PATH --dump TMP` (default: $TEST_TOKENIZER, else
#       tests/test_tokenizer under the current directory, as in `make
#       check`), then (1) loads TMP/tokenizer.json with
#       tokenizers.Tokenizer.from_file and checks that it encodes every text
#       of TMP/cases.json to the ids lltrain gave and decodes them back, and
#       (2) trains a GPT-2-style tokenizer with the Hugging Face library on the
#       same corpus, saves it, and checks that `PATH --encode` (lltrain
#       loading that file) gives the library's ids.
#   check_tokenizer.py TOKENIZER_JSON CASES_JSON
#       only (1), on files written before: CASES_JSON is
#       {"cases": [{"text": "...", "ids": [...]}, ...]}.
#
# Exit status 0 only if everything matches; without the library it prints
# "1..0 # SKIP" with the reason and exits 0.
#
# In `make check` it runs on the python of the build directory's virtual
# environment tests/python-env, which tests/python_env.sh fills from
# tests/requirements.txt; where that could not be done, LT_PYTHON_WHY says
# why, and the skips print it.
import json
import os
import subprocess
import sys
import tempfile


def missing(what, error):
    """A skip's reason: what is missing, and why the environment lacks it."""
    why = os.environ.get("LT_PYTHON_WHY")
    return "%s (%s)%s" % (what, error, "; " + why if why else "")


try:
    import tokenizers
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
except ImportError as e:
    print("1..0 # SKIP " + missing("the Python package 'tokenizers' is not installed", e))
    sys.exit(0)

checks = 0
failed = 0


def ok(cond, what):
    global checks, failed
    checks += 1
    if not cond:
        failed += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (checks, what))
    sys.stdout.flush()
    return cond


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line)


def show(ids, at):
    return str(ids[max(0, at - 3):at + 4])


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(label, texts, ours, theirs):
    """One check per text: lltrain's ids against the library's, after one
    check that both gave a result for every text (zip stops at the shortest)."""
    ok(len(ours) == len(texts) and len(theirs) == len(texts),
       "%s: %d texts, lltrain encoded %d, tokenizers %d" % (label, len(texts), len(ours), len(theirs)))
    for i, (text, a, b) in enumerate(zip(texts, ours, theirs)):
        short = text[:40].encode("unicode_escape").decode("ascii")
        if not ok(a == b, "%s: case %d (%d ids) '%s'" % (label, i, len(b), short)):
            at = first_diff(a, b)
            diag("first difference at id %d: lltrain %s, tokenizers %s" % (at, show(a, at), show(b, at)))


def check_dump(tok_path, cases_path):
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    hf = Tokenizer.from_file(tok_path)
    texts = [c["text"] for c in cases]
    ours = [c["ids"] for c in cases]
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
    compare("tokenizers encodes lltrain's tokenizer.json alike", texts, ours, theirs)
    back = [hf.decode(ids, skip_special_tokens=False) for ids in ours]
    ok(back == texts, "tokenizers decodes lltrain's ids back to every text")
    eot = hf.token_to_id("<|endoftext|>")
    ok(eot == 256, "'<|endoftext|>' is id 256 (got %s)" % eot)
    cfg_path = os.path.join(os.path.dirname(tok_path), "tokenizer_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        ok(cfg.get("tokenizer_class") == "PreTrainedTokenizerFast" and cfg.get("eos_token") == "<|endoftext|>",
           "tokenizer_config.json names PreTrainedTokenizerFast and the eos token")
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            print("ok %d # SKIP %s" % (checks + 1, missing("transformers is not installed", e)))
            globals()["checks"] += 1
        else:
            at = AutoTokenizer.from_pretrained(os.path.dirname(tok_path))
            ok(len(texts) == len(ours) and
               all(at.encode(t, add_special_tokens=False) == ids for t, ids in zip(texts, ours)),
               "transformers AutoTokenizer encodes alike")


def encode_with(binary, path, cases_path, what):
    """lltrain's ids for the cases, loading the tokenizer.json at path;
    None, after the check `what` failed, when it cannot load it."""
    run = subprocess.run([binary, "--encode", path, cases_path], capture_output=True, text=True)
    if not ok(run.returncode == 0, what):
        diag(run.stderr)
        return None
    return json.loads(run.stdout)["ids"]


def check_hf_trained(binary, work, cases_path):
    """lltrain loads a file the Hugging Face library wrote itself."""
    with open(cases_path, encoding="utf-8") as f:
        data = json.load(f)
    texts = [c["text"] for c in data["cases"]]
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([data["corpus"]], trainer)
    hf_dir = os.path.join(work, "hf")
    os.makedirs(hf_dir, exist_ok=True)
    path = os.path.join(hf_dir, "tokenizer.json")
    hf.save(path)
    ours = encode_with(binary, path, cases_path, "lltrain loads the library's own tokenizer.json")
    if ours is None:
        return
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
    compare("lltrain encodes the library's tokenizer.json alike", texts, ours, theirs)

    # The same file with ignore_merges (whole-word tokens skip the merges).
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["model"]["ignore_merges"] = True
    path2 = os.path.join(hf_dir, "ignore_merges.json")
    with open(path2, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    hf2 = Tokenizer.from_file(path2)
    ours = encode_with(binary, path2, cases_path, "lltrain loads it with ignore_merges")
    if ours is None:
        return
    theirs = [e.ids for e in hf2.encode_batch(texts, add_special_tokens=True)]
    ok(ours == theirs, "with ignore_merges lltrain encodes all %d cases alike" % len(texts))


# Strings that tell pre-tokenizers and byte fallback apart: digits,
# contractions in both cases, CJK, emoji, runs of white space, newlines,
# added tokens inside text, and characters no small vocabulary has.
HARD = [
    "12345 3.14159 1,000,000 and 2024-12-05, ²³ ①② ٣٤٥ １２３",
    "I'm sure you're right; HE'LL go, we'VE seen it, it's the dog's. DON'T 'tis",
    "中文分词测试，日本語のテキスト。한국어 텍스트!",
    "emoji 🙂👍🏽🚢☕ and 👨‍👩‍👧 family",
    "  leading spaces, a   run\tof\t\ttabs \u00a0nbsp\u3000ideographic  ",
    "lines\n\nwith\r\nbreaks\n   \n\tindented\n",
    "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n42!<|im_end|>",
    "a<|endoftext|>b <s> </s>x<s>",
    "rare: \u20ac \U0001d518 \u0b95 \u2603 \x7f\x01 \u00ad",
    "x",
    " ",
    "\n",
    "don't stop   \n\n  9999 …",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_variant(corpus, pre, extra=None):
    """A byte-level BPE trained by the library with the pre-tokenizer pre."""
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([corpus], trainer)
    return hf


def sentencepiece_variant(corpus, metaspace):
    """A SentencePiece-style BPE as in Llama 2's tokenizer.json: <unk>, <s>,
    </s>, the 256 <0xNN> tokens, then merged text with U+2581 for spaces;
    characters the small alphabet lacks fall back to bytes."""
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.pre_tokenizer = pre_tokenizers.Split(Regex("\u2581[^\u2581]*"), behavior="isolated")
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=70, show_progress=False)
    t.train_from_iterator([corpus], trainer)
    doc = json.loads(t.to_str())
    learned = doc["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for tok, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in doc["model"]["merges"]]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        hf.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first"),
                                        decoders.ByteFallback(), decoders.Fuse()])
    else:
        hf.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens(["<unk>", "<s>", "</s>"])
    hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return hf


def check_variant(binary, work, name, hf, texts, what, ignore_merges=False):
    """lltrain loads the library's file of one variant and encodes every
    text (added tokens split out) and decodes the ids as the library does."""
    path = os.path.join(work, name + ".json")
    hf.save(path)
    if ignore_merges:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        doc["model"]["ignore_merges"] = True
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        hf = Tokenizer.from_file(path)
    cases_path = os.path.join(work, name + ".cases.json")
    with open(cases_path, "w", encoding="utf-8") as f:
        json.dump({"cases": [{"text": t} for t in texts]}, f, ensure_ascii=False)
    run = subprocess.run([binary, "--encode-special", path, cases_path], capture_output=True, text=True)
    if not ok(run.returncode == 0, "%s: lltrain loads the library's tokenizer.json" % what):
        diag(run.stderr)
        return None
    got = json.loads(run.stdout)
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    compare(what, texts, got["ids"], theirs)
    back = [hf.decode(ids, skip_special_tokens=False) for ids in theirs]
    ok(got["decoded"] == back, "%s: lltrain decodes every text as the library does" % what)
    same = [i for i, (t, b) in enumerate(zip(texts, back)) if t == b]
    ok(all(got["decoded"][i] == texts[i] for i in same),
       "%s: decode(encode(s)) == s on the %d texts where the library round-trips" % (what, len(same)))
    return path


def check_variants(binary, work, cases_path):
    """The pre-tokenizers and models of LLaMA-family tokenizer.json files,
    each built and trained by the library itself."""
    with open(cases_path, encoding="utf-8") as f:
        data = json.load(f)
    corpus = data["corpus"]
    texts = HARD + [c["text"] for c in data["cases"]]
    gpt2 = byte_level_variant(corpus, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    check_variant(binary, work, "gpt2", gpt2, texts, "GPT-2 byte-level")
    smollm = byte_level_variant(corpus, pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]))
    check_variant(binary, work, "smollm", smollm, texts, "smollm (Digits + ByteLevel)")
    llama3 = byte_level_variant(corpus, pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    check_variant(binary, work, "llama3", llama3, texts, "llama-bpe (Llama 3's Split + ByteLevel)",
                  ignore_merges=True)
    for behavior in ["removed", "merged_with_previous", "merged_with_next", "contiguous"]:
        t = byte_level_variant(corpus, pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{N}|[.,!?]"), behavior=behavior, invert=behavior == "contiguous"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]))
        check_variant(binary, work, "split_" + behavior, t, texts, "Split %s" % behavior)
    sp = sentencepiece_variant(corpus, metaspace=False)
    check_variant(binary, work, "sentencepiece", sp, texts, "SentencePiece-style BPE (Prepend + Replace)")
    ms = sentencepiece_variant(corpus, metaspace=True)
    check_variant(binary, work, "metaspace", ms, texts, "SentencePiece-style BPE (Metaspace)")


def main(argv):
    diag("tokenizers %s" % tokenizers.__version__)
    if len(argv) == 2 and not argv[0].startswith("--"):
        check_dump(argv[0], argv[1])
    else:
        binary = os.environ.get("TEST_TOKENIZER", os.path.join("tests", "test_tokenizer"))
        if len(argv) == 2 and argv[0] == "--bin":
            binary = argv[1]
        elif argv:
            print("usage: check_tokenizer.py [--bin PATH] | TOKENIZER_JSON CASES_JSON", file=sys.stderr)
            return 2
        if not os.access(binary, os.X_OK):
            print("Bail out! %s is not built (run from the build directory or set TEST_TOKENIZER)" % binary)
            return 1
        with tempfile.TemporaryDirectory(prefix="check_tokenizer.") as work:
            run = subprocess.run([binary, "--dump", work], capture_output=True, text=True)
            if not ok(run.returncode == 0, "%s --dump trains and saves" % binary):
                diag(run.stderr)
            else:
                cases = os.path.join(work, "cases.json")
                check_dump(os.path.join(work, "tokenizer.json"), cases)
                check_hf_trained(binary, work, cases)
                check_variants(binary, work, cases)
    print("1..%d" % checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

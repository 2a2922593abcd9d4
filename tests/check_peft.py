#!/usr/bin/env python3
# Checks `lltrain export --format peft` (TAP): LoRA runs started with
# train --init from a tiny LlamaForCausalLM that transformers makes (every
# target, and a subset) are exported as PEFT adapters; Hugging Face PEFT
# loads each onto the base model, and its logits equal lltrain's own of
# the adapted model (tests/dump_logits) and transformers' of the merged
# --format hf export, in float32; adapter_config.json says what the
# adapters are; --dtype bf16 rounds each value to nearest even; a run
# without adapters, or an output directory that holds files, is refused
# in one line and nothing on disk changes.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus),
# DUMP_LOGITS (default ./tests/dump_logits), LT_PYTHON_WHY (why the
# packages may be missing).
import os
import shutil
import struct
import sys
import tempfile
import json

SRCDIR = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(SRCDIR, "tests"))
import check_export as ce  # noqa: E402  (its TAP helpers)

LLTRAIN = ce.LLTRAIN
DUMP_LOGITS = ce.DUMP_LOGITS
ok, skip, diag, run, must, finish, missing = (ce.ok, ce.skip, ce.diag, ce.run, ce.must,
                                              ce.finish, ce.missing)
N_CHECKS = 24
TOL = 1e-4
# train.lora_targets: PEFT's target_modules
TARGETS = {
    "all": ("q,k,v,o,gate,up,down",
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "subset": ("q,v,down", ["q_proj", "v_proj", "down_proj"]),
}
MODULE_OF = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
             "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
N_LAYERS = 2


def make_base(path, vocab):
    """A tiny untied grouped-query LlamaForCausalLM in float32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, rope_theta=5000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # norms away from 1, so that a wrong one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path, safe_serialization=True)


def run_options(run_dir, steps):
    return ["--run.dir=" + run_dir, "--train.seq=32", "--train.batch=4",
            "--train.steps=%d" % steps, "--train.warmup_steps=1", "--train.max_minutes=0",
            "--train.lr=3e-2", "--train.min_lr=3e-2", "--run.eval_batches=1",
            "--run.sample_tokens=4", "--data.val_fraction=0.2", "--run.threads=2"]


def lora_options(targets):
    return ["--train.lora_rank=4", "--train.lora_alpha=8", "--train.lora_dropout=0.05",
            "--train.lora_targets=" + targets]


def header(path):
    """The safetensors header of path, without __metadata__."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def transformers_logits(model, ids):
    import torch
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()


def peft_logits(base, adapter, ids):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    return transformers_logits(PeftModel.from_pretrained(model, adapter), ids)


def hf_logits(path, ids):
    import torch
    from transformers import LlamaForCausalLM
    return transformers_logits(LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32),
                               ids)


def lltrain_logits(run_dir, ids):
    import numpy as np
    rc, out, err = run([DUMP_LOGITS, run_dir] + [str(i) for i in ids], "dump_logits")
    if rc != 0:
        diag(err)
        return None
    return np.array(json.loads(out), np.float64)


def expected_names(modules):
    return {"base_model.model.model.layers.%d.%s.%s.lora_%s.weight" % (l, MODULE_OF[m], m, ab)
            for l in range(N_LAYERS) for m in modules for ab in "AB"}


def check_config(name, out, base, modules):
    j = ce.read_json(os.path.join(out, "adapter_config.json"))
    ok(j.get("peft_type") == "LORA" and j.get("task_type") == "CAUSAL_LM" and
       j.get("r") == 4 and j.get("lora_alpha") == 8 and abs(j.get("lora_dropout", 0) - 0.05) <
       1e-7 and sorted(j.get("target_modules", [])) == sorted(modules) and
       j.get("bias") == "none" and j.get("base_model_name_or_path") == base and
       j.get("use_rslora") is False and j.get("fan_in_fan_out") is False,
       "%s: adapter_config.json says LORA, CAUSAL_LM, r 4, alpha 8, dropout 0.05, targets %s, "
       "bias none, the base's directory: %s" % (name, ",".join(modules), json.dumps(j)))


def check_tensors(name, out, ckpt, modules, said):
    h = header(os.path.join(out, "adapter_model.safetensors"))
    ck = header(os.path.join(ckpt, "model.safetensors"))
    numel = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in h.values()) // 4
    good = set(h) == expected_names(modules) and all(
        v["dtype"] == "F32" and v["shape"] == ck[k[len("base_model.model."):]]["shape"]
        for k, v in h.items())
    ok(good and "(step 6, %d parameters)" % numel in said,
       "%s: adapter_model.safetensors holds %d adapters (%d parameters, as export says) under "
       "PEFT's names, F32, of the checkpoint's shapes (lora_A [r, in], lora_B [out, r])"
       % (name, len(h), numel))


def check_run(tmp, name, base, corpus, ids):
    """A LoRA run of targets `name`, its PEFT export and the logits."""
    targets, modules = TARGETS[name]
    run_dir, out = os.path.join(tmp, "run_" + name), os.path.join(tmp, "peft_" + name)
    must([LLTRAIN, "train", "--init", base, corpus] + run_options(run_dir, 6) +
         lora_options(targets), "%s: train --init with adapters on %s runs 6 steps" %
         (name, targets))
    said = must([LLTRAIN, "export", "--format", "peft", "--out", out, run_dir],
                "%s: export --format peft" % name)
    check_config(name, out, base, modules)
    check_tensors(name, out, ce.newest_checkpoint(run_dir), modules, said)
    theirs = peft_logits(base, out, ids)
    ours = lltrain_logits(run_dir, ids)
    plain = hf_logits(base, ids)
    e = ce.rel_err(theirs, ours) if ours is not None else 1.0
    moved = ce.rel_err(plain, ours) if ours is not None else 0.0
    ok(e < TOL and moved > 100 * TOL,
       "%s: PEFT's logits of the base with the exported adapters equal lltrain's of the "
       "adapted model in float32 (max rel err %.2e < %g; the adapters move them by %.2e)"
       % (name, e, TOL, moved))
    merged = os.path.join(tmp, "hf_" + name)
    must([LLTRAIN, "export", "--format", "hf", "--out", merged, run_dir],
         "%s: export --format hf (the adapters merged)" % name)
    e = ce.rel_err(theirs, hf_logits(merged, ids))
    ok(e < TOL, "%s: PEFT's logits equal transformers' of the merged export (max rel err %.2e "
       "< %g)" % (name, e, TOL))
    return run_dir, out


def bf16_nearest(x):
    """The bfloat16 bits nearest to float32 array x (ties to even)."""
    import numpy as np
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def check_bf16(tmp, run_dir, f32_out, base, ids):
    import numpy as np
    from safetensors.numpy import load_file
    out = os.path.join(tmp, "peft_bf16")
    rc, so, err = run([LLTRAIN, "export", "--format", "peft", "--dtype", "bf16", "--out", out,
                       run_dir], "export --dtype bf16")
    if not ok(rc == 0, "export --format peft --dtype bf16 (exit %d) %s" % (rc, err.strip())):
        skip(1, "no bf16 export to read")
        return
    h = header(os.path.join(out, "adapter_model.safetensors"))
    wide = load_file(os.path.join(f32_out, "adapter_model.safetensors"))
    with open(os.path.join(out, "adapter_model.safetensors"), "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    same = set(h) == set(wide) and all(
        v["dtype"] == "BF16" and np.array_equal(
            np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                          np.uint16), bf16_nearest(wide[k]).ravel())
        for k, v in h.items())
    e = ce.rel_err(peft_logits(base, out, ids), peft_logits(base, f32_out, ids))
    ok(same and e < 2e-2, "--dtype bf16: every adapter is the f32 export's rounded to nearest "
       "even, and PEFT loads it (logits within %.2e of the f32 adapters' < 2e-2)" % e)


def errors(err):
    """The lines of stderr that say what is wrong (not which checkpoint is used)."""
    return [ln for ln in err.strip().split("\n") if ln and " using checkpoint " not in ln]


def tree(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = ce.read_bytes(p)
    return out


def check_refusals(tmp, corpus, lora_run, lora_out):
    full, out = os.path.join(tmp, "run_full"), os.path.join(tmp, "peft_full")
    must([LLTRAIN, "train", corpus] + ["--model.%s=%d" % kv for kv in ce.SHAPE.items()] +
         run_options(full, 1), "a run without adapters (random init) runs a step")
    rc, so, err = run([LLTRAIN, "export", "--format", "peft", "--out", out, full], "export")
    ok(rc == 1 and len(errors(err)) == 1 and "LoRA" in err and "lora_rank" in err and
       not os.path.exists(out) and not [f for f in os.listdir(tmp) if f.startswith(".peft")],
       "--format peft of a run without adapters: one line, exit %d, nothing written: %s"
       % (rc, " | ".join(errors(err))))
    before = tree(lora_out)
    rc, so, err = run([LLTRAIN, "export", "--format", "peft", "--out", lora_out, lora_run],
                      "export again")
    ok(rc == 1 and len(errors(err)) == 1 and "--force" in err and
       tree(lora_out) == before,
       "an output directory that holds files is refused without --force, as it was: %s"
       % " | ".join(errors(err)))
    with open(os.path.join(lora_out, "notes.txt"), "w") as f:
        f.write("kept\n")
    rc, so, err = run([LLTRAIN, "export", "--format", "peft", "--force", "--out", lora_out,
                       lora_run], "export --force")
    now = tree(lora_out)
    ok(rc == 0 and now.get("notes.txt") == b"kept\n" and
       now.get("adapter_model.safetensors") == before["adapter_model.safetensors"] and
       "adapter_config.json" in so,
       "--force writes the adapter's files into it and leaves its other files (exit %d)" % rc)


def check_random_base(tmp, corpus):
    """A LoRA run on random weights: no base directory to name."""
    run_dir, out = os.path.join(tmp, "run_random"), os.path.join(tmp, "peft_random")
    must([LLTRAIN, "train", corpus] + ["--model.%s=%d" % kv for kv in ce.SHAPE.items()] +
         run_options(run_dir, 1) + lora_options("o,up"), "a LoRA run of random init runs a step")
    rc, so, err = run([LLTRAIN, "export", "--format", "peft", "--out", out, run_dir], "export")
    j = ce.read_json(os.path.join(out, "adapter_config.json")) if rc == 0 else {}
    ok(rc == 0 and "base_model_name_or_path" in j and j["base_model_name_or_path"] is None and
       j.get("target_modules") == ["o_proj", "up_proj"],
       "a run without train.init: base_model_name_or_path is null (exit %d) %s"
       % (rc, err.strip()))


def main():
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        skip(N_CHECKS, missing("numpy, torch, transformers and safetensors are needed", e))
        finish()
    try:
        import peft  # noqa: F401
    except ImportError as e:
        skip(N_CHECKS, missing("Hugging Face PEFT is needed to load the adapters", e))
        finish()
    tmp = tempfile.mkdtemp(prefix="lltrain-peft.")
    try:
        data, corpus = os.path.join(tmp, "data"), os.path.join(tmp, "corpus.txt")
        with open(ce.CORPUS, encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as g:
            for line in f:  # one document per line, so some can be held out
                g.write(line.rstrip("\n") + "\n%\n")
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "300", "--val-fraction", "0.2",
              corpus], "lltrain prepare makes a tokenizer for the base model")
        tok = ce.read_json(os.path.join(data, "tokenizer.json"))
        vocab = len(tok["model"]["vocab"]) + len(tok.get("added_tokens", []))
        ids = [(i * 37 + 11) % vocab for i in range(24)]
        base = os.path.join(tmp, "base")
        make_base(base, vocab)
        shutil.copy(os.path.join(data, "tokenizer.json"), base)
        runs = {name: check_run(tmp, name, base, corpus, ids) for name in TARGETS}
        check_bf16(tmp, runs["all"][0], runs["all"][1], base, ids)
        check_refusals(tmp, corpus, *runs["subset"])
        check_random_base(tmp, corpus)
        ok(True, "the checks ran to the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

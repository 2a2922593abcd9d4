#!/usr/bin/env python3
# Checks `lltrain prune` (TAP). A small model (4 blocks, 8 heads over 4 kv
# heads, 64 MLP channels) is trained on the tiny corpus and pruned to half
# its kv heads, half its channels and three of its blocks:
# - the pruned directory's config.json has the new shape (head_dim kept),
#   and lltrain's logits of it (dump_logits --init) equal a float64 numpy
#   forward of the original model with what was pruned taken out by
#   zeroing (the output projection's columns of removed heads, the down
#   projection's of removed channels, both of a removed block), within
#   1e-5: the kept weights are copied to the right rows and columns;
# - train --init of it continues, lowering the training loss;
# - the importance prune measured (--scores) against brute-force ablation
#   in numpy on training-data windows: keeping the better-scored half of every
#   block's kv heads (or channels) costs less loss than keeping the other
#   half and no more than random halves' median; taking out the
#   lowest-scored block costs less than the highest-scored and no more than
#   the median block; and the Spearman correlation, within each block, of
#   the scores with the loss each query head or channel alone costs when
#   taken out is positive past the bounds below (single units of a model
#   this small cost little each, so this is the noisier measure);
# - bad input (a fraction outside (0, 1], an output that has files)
#   gives one line, exit 2 or 1, and leaves the files as they were.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus and
# check_export.py's numpy forward), DUMP_LOGITS (default
# ./tests/dump_logits), LT_PYTHON_WHY (why the packages may be missing).
import json
import os
import shutil
import sys
import tempfile

SRCDIR = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(SRCDIR, "tests"))
import check_export as ce  # noqa: E402  (its TAP helpers and float64 forward)

LLTRAIN = ce.LLTRAIN
ok, skip, diag, run, must, finish = ce.ok, ce.skip, ce.diag, ce.run, ce.must, ce.finish
SHAPE = ["--model.vocab_size=320", "--model.dim=64", "--model.n_layers=4",
         "--model.n_heads=8", "--model.n_kv_heads=4", "--model.ffn_dim=64",
         "--model.max_seq=32", "--train.seq=32", "--train.batch=8"]
RUN = ["--run.eval_every=0", "--run.sample_tokens=4", "--run.log_every=50",
       "--train.max_minutes=0", "--run.threads=2"]
KEEP = ["--heads-keep", "0.5", "--ffn-keep", "0.5", "--layers-keep", "0.75"]
# Bounds on the mean Spearman correlation of importance and ablation:
# activation magnitudes rank what matters well but not exactly (a head of
# large output can be one the next layers largely cancel).
BOUNDS = {"heads": 0.4, "channels": 0.4}
N_CHECKS = 14


def hf_tensors(path):
    from safetensors.numpy import load_file
    return load_file(os.path.join(path, "model.safetensors"))


def windows_of(data, shard, n, T):
    """n windows of T + 1 tokens, spread over a shard of data."""
    import numpy as np
    raw = open(os.path.join(data, shard), "rb").read()
    width = int.from_bytes(raw[16:20], "little")
    ids = np.frombuffer(raw[64:], dtype=np.uint16 if width == 2 else np.uint32).astype(np.int64)
    step = max(1, (len(ids) - T - 1) // n)
    return [ids[i * step:i * step + T + 1] for i in range(n) if i * step + T + 1 <= len(ids)]


def loss(cfg, w, windows):
    import numpy as np
    total = 0.0
    for win in windows:
        z = ce.numpy_logits(cfg, w, list(win[:-1]))
        m = z.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
        total += float((lse - z[np.arange(len(z)), win[1:]]).sum())
    return total / sum(len(x) - 1 for x in windows)


def zeroed(w, D, layer, heads=(), channels=(), block=False):
    """A copy of w with heads (their o_proj columns), channels (their
    down_proj columns) or the whole block of `layer` taken out."""
    out = dict(w)
    p = "model.layers.%d." % layer
    o, down = w[p + "self_attn.o_proj.weight"].copy(), w[p + "mlp.down_proj.weight"].copy()
    for h in heads:
        o[:, h * D:(h + 1) * D] = 0
    for c in channels:
        down[:, c] = 0
    if block:
        o[:], down[:] = 0, 0
    out[p + "self_attn.o_proj.weight"], out[p + "mlp.down_proj.weight"] = o, down
    return out


def spearman(a, b):
    import numpy as np
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    d = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / d) if d > 0 else 0.0


def check_copy(cfg, w, pruned, scores_kept, D):
    """The pruned model's logits against the original with the rest zeroed."""
    ids = [256, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116]
    blocks, groups, channels = scores_kept
    G = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    z = dict(w)
    for l in range(cfg["num_hidden_layers"]):
        if l not in blocks:
            z = zeroed(z, D, l, block=True)
            continue
        j = blocks.index(l)
        heads = [h for h in range(cfg["num_attention_heads"]) if h // G not in groups[j]]
        gone = [c for c in range(cfg["intermediate_size"]) if c not in channels[j]]
        z = zeroed(z, D, l, heads=heads, channels=gone)
    want = ce.numpy_logits(cfg, z, ids)
    rc, text, err = run([ce.DUMP_LOGITS, "--init", pruned] + [str(i) for i in ids], "dump_logits")
    got = json.loads(text) if rc == 0 else None
    e = ce.rel_err(got, want) if got else None
    ok(e is not None and e < 1e-5,
       "the pruned model's logits equal numpy's of the original with the pruned heads, "
       "channels and block zeroed (max rel err %s)" % e)
    if rc:
        diag(err)


def kept_from(out, scores, cfg):
    """What the pruned model kept, rebuilt from the scores as prune ranks
    them (highest first, ties by index): blocks, kv groups and channels."""
    pc = ce.read_json(os.path.join(out, "config.json"))
    nb, nk, nf = pc["num_hidden_layers"], pc["num_key_value_heads"], pc["intermediate_size"]

    def best(values, k):
        order = sorted(range(len(values)), key=lambda i: (-values[i], i))
        return sorted(order[:k])
    blocks = best([b["block"] for b in scores["blocks"]], nb)
    groups = [best(scores["blocks"][l]["kv_heads"], nk) for l in blocks]
    channels = [best(scores["blocks"][l]["channels"], nf) for l in blocks]
    return pc, (blocks, groups, channels)


def best_half(values):
    k = len(values) // 2
    return sorted(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])


def keeping(cfg, w, D, kind, kept):
    """w with, in every block, all but kept[l] of kind taken out."""
    G = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    z = dict(w)
    for l, keep in enumerate(kept):
        if kind == "heads":
            gone = [h for h in range(cfg["num_attention_heads"]) if h // G not in keep]
            z = zeroed(z, D, l, heads=gone)
        else:
            z = zeroed(z, D, l, channels=[c for c in range(cfg["intermediate_size"])
                                          if c not in keep])
    return z


def check_halves(cfg, w, scores, windows, D):
    """In every block at once: keeping the half the scores rank first
    costs less training-data loss than keeping the other half, and no more
    than the median of five random halves."""
    import numpy as np
    rng = np.random.default_rng(7)
    sizes = {"heads": cfg["num_key_value_heads"], "channels": cfg["intermediate_size"]}
    for kind, key in (("heads", "kv_heads"), ("channels", "channels")):
        top = [best_half(b[key]) for b in scores["blocks"]]
        rest = [sorted(set(range(sizes[kind])) - set(t)) for t in top]
        rand = [[sorted(rng.permutation(sizes[kind])[:sizes[kind] // 2]) for _ in top]
                for _ in range(5)]
        lt, lr = loss(cfg, keeping(cfg, w, D, kind, top), windows), \
            loss(cfg, keeping(cfg, w, D, kind, rest), windows)
        med = float(np.median([loss(cfg, keeping(cfg, w, D, kind, r), windows) for r in rand]))
        ok(lt < lr and lt <= med,
           "%s: keeping the better-scored half of each block: training-data loss %.4f, the other "
           "half %.4f, random halves' median %.4f" % (kind if kind == "channels" else "kv heads",
                                                      lt, lr, med))


def check_ranking(cfg, w, scores, windows, D):
    """Brute force: the loss each query head, channel and block costs when
    it alone is taken out, against the scores (Spearman, within a block)."""
    import numpy as np
    base = loss(cfg, w, windows)
    L, H, F = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"]
    rho = {"heads": [], "channels": []}
    for l in range(L):
        dh = [loss(cfg, zeroed(w, D, l, heads=[h]), windows) - base for h in range(H)]
        dc = [loss(cfg, zeroed(w, D, l, channels=[c]), windows) - base for c in range(F)]
        rho["heads"].append(spearman(scores["blocks"][l]["heads"], dh))
        rho["channels"].append(spearman(scores["blocks"][l]["channels"], dc))
    db = [loss(cfg, zeroed(w, D, l, block=True), windows) - base for l in range(L)]
    bs = [b["block"] for b in scores["blocks"]]
    for kind in ("heads", "channels"):
        diag("%s: Spearman of score and ablation per block %s (mean %.2f)"
             % (kind, " ".join("%.2f" % r for r in rho[kind]), float(np.mean(rho[kind]))))
    ok(np.mean(rho["heads"]) > BOUNDS["heads"] and np.mean(rho["channels"]) > BOUNDS["channels"],
       "single heads and channels: mean Spearman of score and ablation %.2f and %.2f "
       "(> %.1f and %.1f)" % (np.mean(rho["heads"]), np.mean(rho["channels"]),
                               BOUNDS["heads"], BOUNDS["channels"]))
    low, high = int(np.argmin(bs)), int(np.argmax(bs))
    ok(db[low] < db[high] and db[low] <= float(np.median(db)),
       "blocks: taking out the lowest-scored (%d) costs %.4f, the highest-scored (%d) %.4f, "
       "the median %.4f (Spearman %.2f)" % (low, db[low], high, db[high], float(np.median(db)),
                                            spearman(bs, db)))


def check_continues(tmp, pruned, data):
    run_dir = os.path.join(tmp, "continued")
    rc, out, err = run([LLTRAIN, "train", "--init", pruned, "--train.steps=30",
                        "--train.lr=3e-3", "--data.dir=" + data, "--run.dir=" + run_dir,
                        "--train.seq=32", "--train.batch=8"] + RUN, "train --init")
    losses = []
    if rc == 0:
        for line in open(os.path.join(run_dir, "metrics.jsonl")):
            o = json.loads(line)
            if "loss" in o and "val_loss" not in o:
                losses.append(o["loss"])
    first, last = (sum(losses[:5]) / 5, sum(losses[-5:]) / 5) if len(losses) >= 10 else (0, 0)
    ok(rc == 0 and last < first,
       "train --init of the pruned directory continues: loss %.4f -> %.4f over %d steps"
       % (first, last, len(losses)))
    if rc:
        diag(err)


def check_bad(tmp, run_dir, pruned):
    before = open(os.path.join(pruned, "config.json")).read()
    rc, _, err = run([LLTRAIN, "prune", "--ffn-keep", "0", "--out", os.path.join(tmp, "x"),
                      run_dir], "prune --ffn-keep 0")
    lines = err.strip().splitlines()
    ok(rc == 2 and len(lines) == 1 and "--ffn-keep" in err and "(0, 1]" in err
       and not os.path.exists(os.path.join(tmp, "x")),
       "--ffn-keep 0: exit %d, one line: %s" % (rc, err.strip()))
    rc, _, err = run([LLTRAIN, "prune", "--layers-keep", "1.5", run_dir], "--layers-keep 1.5")
    ok(rc == 2 and "--layers-keep" in err, "--layers-keep 1.5: exit %d: %s" % (rc, err.strip()))
    rc, _, err = run([LLTRAIN, "prune"] + KEEP + ["--out", pruned, run_dir], "prune into files")
    lines = [l for l in err.strip().splitlines() if "using checkpoint" not in l]
    ok(rc == 1 and len(lines) == 1 and pruned in lines[0] and "--force" in lines[0]
       and open(os.path.join(pruned, "config.json")).read() == before,
       "an output directory with files: exit %d, one line, its files as they were: %s"
       % (rc, " | ".join(lines)))


def main():
    try:
        import numpy  # noqa: F401
        import safetensors.numpy  # noqa: F401
    except ImportError as e:
        skip(N_CHECKS, ce.missing("numpy and safetensors are needed", e))
        finish()
    tmp = tempfile.mkdtemp(prefix="lt_prune_")
    try:
        corpus, data = os.path.join(tmp, "corpus.txt"), os.path.join(tmp, "data")
        run_dir, hf, pruned = (os.path.join(tmp, n) for n in ("run", "hf", "pruned"))
        with open(ce.CORPUS, encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as g:
            for line in f:
                g.write(line.rstrip("\n") + "\n%\n")
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "320", "--val-fraction", "0.2",
              corpus], "prepare the tiny corpus")
        must([LLTRAIN, "train"] + SHAPE + RUN + ["--train.steps=150", "--train.lr=3e-3",
                                                 "--data.dir=" + data, "--run.dir=" + run_dir],
             "train 150 steps of 4 blocks, 8 heads over 4 kv heads, 64 channels")
        must([LLTRAIN, "export", "--out", hf, run_dir], "export the run as a Hugging Face directory")
        scores_path = os.path.join(tmp, "scores.json")
        text = must([LLTRAIN, "prune"] + KEEP + ["--out", pruned, "--scores", scores_path,
                                                 run_dir], "prune " + " ".join(KEEP))
        diag(text)
        cfg, w = ce.read_json(os.path.join(hf, "config.json")), hf_tensors(hf)
        scores = ce.read_json(scores_path)
        D = cfg["head_dim"]
        pc, kept = kept_from(pruned, scores, cfg)
        ok((pc["num_hidden_layers"], pc["num_attention_heads"], pc["num_key_value_heads"],
            pc["intermediate_size"], pc["head_dim"], pc["hidden_size"]) == (3, 4, 2, 32, 8, 64),
           "config.json: 3 blocks, 4 heads over 2 kv heads of 8 (head_dim), 32 channels, width 64")
        check_copy(cfg, w, pruned, kept, D)
        check_continues(tmp, pruned, data)
        windows = windows_of(data, "train_0000.bin", 12, 32)
        check_halves(cfg, w, scores, windows, D)
        check_ranking(cfg, w, scores, windows, D)
        check_bad(tmp, run_dir, pruned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Checks the TensorBoard event files of a run (TAP) with the `tensorboard`
# package itself: a tiny run made with `lltrain prepare` and `lltrain train`
# is read back by TensorBoard's EventAccumulator, its plugin accumulator, its
# record reader and its Text plugin. Every scalar equals the number
# metrics.jsonl holds for the same step (as a float); the resolved config
# and the samples are text the Text tab shows as written. Then the run is
# killed in effect (its newest checkpoint removed, half a record left at the
# end of its event file): TensorBoard still reads the file, the resumed run
# cuts the torn record off and says so, and across the resume every tag's
# steps strictly increase and its values are the new metrics.jsonl's, both
# through TensorBoard's loader and record by record with no purge at all;
# TensorBoard's own purge (SessionLog START) also cleans the steps of the
# killed launch from a copy of its files as they were. run.tensorboard =
# false writes no event files, and at a resume still cuts the older ones. Under MPI, rank 0 alone writes, with the
# exchange's waits among the scalars.
#
# Environment: LLTRAIN (default ./lltrain), top_srcdir (for the corpus),
# LT_PYTHON_WHY (why the packages may be missing: make check's virtual
# environment, made by tests/python_env.sh, says so where it could not be
# made).
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile

LLTRAIN = os.environ.get("LLTRAIN", "./lltrain")
SRCDIR = os.environ.get("top_srcdir", ".")
CORPUS = os.path.join(SRCDIR, "tests", "data", "tiny_corpus.txt")

SHAPE = {
    "vocab_size": 300, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
    "ffn_dim": 64, "max_seq": 32,
}
TRAIN_OPTIONS = ["--model.%s=%d" % kv for kv in SHAPE.items()] + [
    "--train.seq=32", "--train.batch=4", "--train.warmup_steps=1", "--train.max_minutes=0",
    "--run.eval_batches=1", "--run.sample_tokens=8", "--run.eval_every=2",
    "--run.sample_every=3", "--run.checkpoint_every=3",
]
# metrics.jsonl keys that are no TensorBoard scalar
NOT_SCALARS = {"step", "tokens", "elapsed", "ranks", "skipped"}
# the tag of each key: GROUP/KEY
GROUPS = {
    "loss": "train", "lr": "train", "grad_norm": "train",
    "tokens_per_s": "perf", "tflops": "perf",
    "compute_s": "time", "update_s": "time", "comm_s": "time", "reduce_s": "time",
    "sync_s": "time",
    "mem_bytes": "memory", "mem_peak_bytes": "memory", "rss_bytes": "memory",
    "rss_peak_bytes": "memory",
    "val_loss": "eval", "val_ppl": "eval",
}

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
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=600)
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


def event_files(tb_dir):
    """The event files of tb_dir in the order TensorBoard reads them."""
    return sorted(os.path.join(tb_dir, n) for n in os.listdir(tb_dir) if "tfevents" in n)


def metrics_lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def expected_scalars(lines, np):
    """{tag: [(step, float32 value)]} of metrics.jsonl, in its order."""
    want = {}
    for line in lines:
        for key, value in line.items():
            if key in NOT_SCALARS:
                continue
            v = np.float32("nan") if value is None else np.float32(value)
            want.setdefault("%s/%s" % (GROUPS.get(key, "?"), key), []).append((line["step"], v))
    return want


def same(a, b, np):
    a, b = np.float32(a), np.float32(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare_scalars(got, want, np, what):
    """got {tag: [(step, value)]} equals want exactly, tag by tag."""
    bad = []
    if sorted(got) != sorted(want):
        bad.append("tags %s, metrics.jsonl's %s" % (sorted(got), sorted(want)))
    for tag in sorted(set(got) & set(want)):
        g, w = got[tag], want[tag]
        if len(g) != len(w) or any(gs != ws or not same(gv, wv, np)
                                   for (gs, gv), (ws, wv) in zip(g, w)):
            bad.append("%s: %s against metrics.jsonl's %s" % (tag, g[:8], w[:8]))
    n = sum(len(v) for v in want.values())
    if not ok(not bad, "%s: every scalar (%d over %d tags) equals metrics.jsonl's"
              % (what, n, len(want))):
        diag("\n".join(bad[:6]))


def accumulated(tb, tb_dir, purge=True):
    """TensorBoard's EventAccumulator over tb_dir, everything kept."""
    ea = tb["ea"]
    a = ea.EventAccumulator(tb_dir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0},
                            purge_orphaned_data=purge)
    a.Reload()
    return a


def scalars_of(acc):
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def texts_of(acc, tb, tag):
    """[(step, text)] of a text tag, each string as TensorBoard decodes it."""
    out = []
    for e in acc.Tensors(tag) if tag in acc.Tags()["tensors"] else []:
        arr = tb["tensor_util"].make_ndarray(e.tensor_proto)
        out.append((e.step, arr.item().decode("utf-8")))
    return out


def dedent(block):
    """The text of a Markdown code block: four spaces off each line."""
    return "\n".join(line[4:] for line in block.split("\n"))


def raw_events(tb, path):
    """Every Event of a file as TensorBoard's record reader reads it, as
    written (no conversion of simple values to tensors)."""
    loader = tb["event_file_loader"].RawEventFileLoader(path)
    return [tb["event_pb2"].Event.FromString(record) for record in loader.Load()]


def check_records(tb, path):
    """Reads the file record by record: lengths, and both masked CRCs
    against TensorBoard's own masked_crc32c."""
    crc = tb["masked_crc32c"]
    with open(path, "rb") as f:
        data = f.read()
    at, n, bad = 0, 0, []
    while at < len(data):
        length = int.from_bytes(data[at:at + 8], "little")
        head_crc = int.from_bytes(data[at + 8:at + 12], "little")
        payload = data[at + 12:at + 12 + length]
        tail = int.from_bytes(data[at + 12 + length:at + 16 + length], "little")
        if crc(data[at:at + 8]) != head_crc or crc(payload) != tail or len(payload) != length:
            bad.append("record %d at byte %d" % (n, at))
            break
        at += 16 + length
        n += 1
    ok(not bad and at == len(data) and n > 0,
       "%d records, each with its length and masked CRC-32Cs as TensorBoard computes them%s"
       % (n, ": " + bad[0] if bad else ""))


def check_fresh(tb, np, run_dir):
    tb_dir = os.path.join(run_dir, "tb")
    files = event_files(tb_dir) if os.path.isdir(tb_dir) else []
    if not ok(len(files) == 1, "RUN/tb holds one event file (%s)" % [os.path.basename(f) for f in files]):
        finish()
    check_records(tb, files[0])
    events = raw_events(tb, files[0])
    first_ok = len(events) > 2 and events[0].file_version == "brain.Event:2" and \
        events[1].HasField("session_log") and \
        events[1].session_log.status == tb["event_pb2"].SessionLog.START and events[1].step == 1
    ok(first_ok, "the file begins with file_version brain.Event:2 and a SessionLog START at step 1")
    acc = accumulated(tb, tb_dir)
    lines = metrics_lines(run_dir)
    compare_scalars(scalars_of(acc), expected_scalars(lines, np), np, "a fresh run")
    with open(os.path.join(run_dir, "config.ini"), encoding="utf-8") as f:
        config = f.read()
    got = texts_of(acc, tb, "config")
    ok(len(got) == 1 and got[0][0] == 1 and dedent(got[0][1]) == config,
       "the config is text at step 1, config.ini line for line")
    samples = texts_of(acc, tb, "sample")
    ok([s for s, _ in samples] == [3, 6] and all(t.startswith("    ") for _, t in samples),
       "a sample at steps 3 and 6, each a code block (%s)" % [s for s, _ in samples])
    pacc = tb["pea"].EventAccumulator(tb_dir)
    pacc.Reload()
    text_tags = sorted(pacc.PluginTagToContent("text"))
    html = tb["text_array_to_html"](
        tb["tensor_util"].make_ndarray(acc.Tensors("config")[0].tensor_proto), True)
    first_line = config.split("\n")[0]
    ok(text_tags == ["config", "sample"] and "<pre><code>" in html and first_line in html,
       "the Text plugin has the config and the samples, and renders the config preformatted")
    scalar_tags = set(pacc.PluginTagToContent("scalars"))
    ok(scalar_tags == set(expected_scalars(lines, np)),
       "the Scalars plugin has every scalar tag (%d)" % len(scalar_tags))
    return files[0]


def tear(path):
    """Leaves the first half of a copy of the file's last record at its end,
    as a run killed while writing one would."""
    with open(path, "rb") as f:
        data = f.read()
    at, last = 0, 0
    while at < len(data):
        last = at
        at += 16 + int.from_bytes(data[at:at + 8], "little")
    torn = data[last:at][:(at - last) // 2]
    with open(path, "ab") as f:
        f.write(torn)
    return len(data)


def strictly_increasing(scalars):
    return all(all(a[0] < b[0] for a, b in zip(v, v[1:])) for v in scalars.values())


def train(data, run_dir, steps, what):
    return must([LLTRAIN, "train"] + TRAIN_OPTIONS +
                ["--train.steps=%d" % steps, "--resume", "auto", "--data.dir=" + data,
                 "--run.dir=" + run_dir], what)


def raw_scalars(tb, files):
    """{tag: [(step, value)]} of the files' simple values, record by record."""
    raw = {}
    for path in files:
        for e in raw_events(tb, path):
            for v in e.summary.value:
                if v.HasField("simple_value"):
                    raw.setdefault(v.tag, []).append((e.step, v.simple_value))
    return raw


def check_killed_past_checkpoint(tb, np, tmp, data, run_dir, old_file):
    """A launch killed after step 6 whose last checkpoint is step 3: its
    file ends in a torn record, and steps 4..6 are logged again."""
    tb_dir = os.path.join(run_dir, "tb")
    shutil.rmtree(os.path.join(run_dir, "checkpoints", "step_00000006"))
    tear(old_file)
    killed = os.path.join(tmp, "killed_tb")
    shutil.copytree(tb_dir, killed)
    acc = accumulated(tb, tb_dir)
    steps = [e.step for e in acc.Scalars("train/loss")]
    ok(steps == [1, 2, 3, 4, 5, 6],
       "TensorBoard reads a file with a torn last record up to it (steps %s)" % steps)
    train(data, run_dir, 8, "lltrain train --resume auto resumes at step 3, on to 8")
    files = event_files(tb_dir)
    ok(len(files) == 2 and files[0] == old_file,
       "the resumed run writes a second file, which sorts after the first")
    want = expected_scalars(metrics_lines(run_dir), np)
    acc = accumulated(tb, tb_dir)
    got = scalars_of(acc)
    ok(strictly_increasing(got) and [s for s, _ in got.get("train/loss", [])] == list(range(1, 9)),
       "TensorBoard's loader: every tag's steps strictly increase across the resume, 1..8")
    compare_scalars(got, want, np, "after the resume")
    raw = raw_scalars(tb, files)
    if not ok(strictly_increasing(raw) and sorted(raw) == sorted(want),
              "record by record, with no purge, every tag's steps strictly increase too"):
        diag("raw: %s" % {t: [s for s, _ in v] for t, v in raw.items()})
    texts = [s for s, _ in texts_of(acc, tb, "config")], [s for s, _ in texts_of(acc, tb, "sample")]
    ok(texts == ([1, 4], [3, 6, 8]),
       "the config is text at steps 1 and 4, the samples at 3, 6 and 8 (%s, %s)" % texts)
    # TensorBoard alone: the killed launch's file as it was, and the new one
    shutil.copy(files[1], killed)
    purged = scalars_of(accumulated(tb, killed))
    kept = scalars_of(accumulated(tb, killed, purge=False))
    ok(strictly_increasing(purged) and not strictly_increasing(kept),
       "TensorBoard's purge at the SessionLog START drops the killed launch's steps 4..6 "
       "(without the purge they show twice)")
    compare_scalars(purged, want, np, "TensorBoard's purge of the untrimmed files")


def check_killed_at_checkpoint(tb, np, data, run_dir):
    """A launch killed while writing a record after its last checkpoint
    (step 8): the resumed run cuts the torn record off and says so."""
    tb_dir = os.path.join(run_dir, "tb")
    last = event_files(tb_dir)[-1]
    whole = tear(last)
    out = train(data, run_dir, 10, "lltrain train --resume auto resumes at step 8, on to 10")
    note = [line for line in out.split("\n") if line.startswith("tensorboard:")]
    ok(len(note) == 1 and "torn" in note[0] and os.path.basename(last) in note[0] and
       os.path.getsize(last) == whole,
       "the resumed run cuts off the torn record and says so: %s" % (note or ["(nothing)"])[0])
    files = event_files(tb_dir)
    check_records(tb, last)
    want = expected_scalars(metrics_lines(run_dir), np)
    got = scalars_of(accumulated(tb, tb_dir))
    ok(len(files) == 3 and strictly_increasing(got) and strictly_increasing(raw_scalars(tb, files))
       and [s for s, _ in got.get("train/loss", [])] == list(range(1, 11)),
       "three files; every tag's steps strictly increase, 1..10, loaded and record by record")
    compare_scalars(got, want, np, "after the second resume")


def check_off(data, tmp):
    run_dir = os.path.join(tmp, "off")
    must([LLTRAIN, "train"] + TRAIN_OPTIONS +
         ["--train.steps=2", "--run.tensorboard=false", "--data.dir=" + data,
          "--run.dir=" + run_dir], "lltrain train --run.tensorboard=false")
    ok(not os.path.exists(os.path.join(run_dir, "tb")) and
       os.path.exists(os.path.join(run_dir, "metrics.jsonl")),
       "run.tensorboard = false writes metrics.jsonl and no RUN/tb")


def check_off_at_resume(tb, np, data, run_dir):
    """A resume from step 8 (checkpoints 9 and 10 removed) with
    run.tensorboard = false still cuts the event files to step 8 (the steps
    it trains again are not left there), and writes no file of its own."""
    tb_dir = os.path.join(run_dir, "tb")
    for step in (9, 10):
        shutil.rmtree(os.path.join(run_dir, "checkpoints", "step_%08d" % step))
    before = event_files(tb_dir)
    must([LLTRAIN, "train"] + TRAIN_OPTIONS +
         ["--train.steps=10", "--resume", "auto", "--run.tensorboard=false",
          "--data.dir=" + data, "--run.dir=" + run_dir],
         "lltrain train --resume auto --run.tensorboard=false resumes at step 8")
    raw = raw_scalars(tb, event_files(tb_dir))
    last = max(s for v in raw.values() for s, _ in v)
    after = event_files(tb_dir)
    ok(set(after) < set(before) and last == 8,
       "it writes no event file, and the older ones end at step 8 (%d; the one that began "
       "at step 9 is gone: %d of %d files)" % (last, len(after), len(before)))


def check_ranks(tb, np, data, tmp):
    """Two ranks over MPI: rank 0 alone writes, the exchange's times too."""
    rc, out, _ = run([LLTRAIN, "info"], "lltrain info")
    mpiexec = shutil.which(os.environ.get("MPIEXEC", "mpiexec"))
    if not any(line.startswith("build:") and "MPI" in line for line in out.split("\n")):
        skip(3, "this lltrain was built without MPI")
        return
    if mpiexec is None:
        skip(3, "no mpiexec on PATH (install mpich)")
        return
    launch = [mpiexec]
    if "Open MPI" in run([mpiexec, "--version"], "mpiexec --version")[1]:
        launch += ["--oversubscribe", "--allow-run-as-root"]
    run_dir = os.path.join(tmp, "ranks")
    must(launch + ["-n", "2", LLTRAIN, "train"] + TRAIN_OPTIONS +
         ["--train.steps=3", "--run.threads=1", "--data.dir=" + data, "--run.dir=" + run_dir],
         "mpiexec -n 2 lltrain train runs 3 steps")
    tb_dir = os.path.join(run_dir, "tb")
    want = expected_scalars(metrics_lines(run_dir), np)
    ok(len(event_files(tb_dir)) == 1 and
       {"time/comm_s", "time/reduce_s", "time/sync_s"} <= set(want),
       "2 ranks: one event file (rank 0's), with the exchange's waits")
    compare_scalars(scalars_of(accumulated(tb, tb_dir)), want, np, "2 ranks")


def import_tensorboard():
    """The parts of the tensorboard package the checks use, or None and why."""
    try:
        import numpy as np
        from tensorboard.backend.event_processing import event_accumulator, event_file_loader
        from tensorboard.backend.event_processing import plugin_event_accumulator
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
        from tensorboard.plugins.text.text_plugin import text_array_to_html
        from tensorboard.util import tensor_util
    except ImportError as e:
        return None, None, missing("numpy and the tensorboard package are needed", e)
    return np, {"ea": event_accumulator, "event_file_loader": event_file_loader,
                "pea": plugin_event_accumulator, "event_pb2": event_pb2,
                "masked_crc32c": masked_crc32c, "text_array_to_html": text_array_to_html,
                "tensor_util": tensor_util}, None


def main():
    np, tb, why = import_tensorboard()
    tmp = tempfile.mkdtemp(prefix="lt_tensorboard_")
    try:
        data, run_dir = (os.path.join(tmp, n) for n in ("data", "run"))
        corpus = os.path.join(tmp, "corpus.txt")
        with open(CORPUS, encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as g:
            for line in f:  # one document per line, so some can be held out
                g.write(line.rstrip("\n") + "\n%\n")
        must([LLTRAIN, "prepare", "--out", data, "--vocab", "300", "--val-fraction", "0.2",
              corpus], "lltrain prepare makes a 300-token dataset of the tiny corpus")
        check_off(data, tmp)
        must([LLTRAIN, "train"] + TRAIN_OPTIONS +
             ["--train.steps=6", "--data.dir=" + data, "--run.dir=" + run_dir],
             "lltrain train runs 6 steps of a tiny model")
        if tb is None:
            skip(27, why)
            finish()
        logging.getLogger("tensorboard").setLevel(logging.ERROR)  # its purge's warning
        old_file = check_fresh(tb, np, run_dir)
        check_killed_past_checkpoint(tb, np, tmp, data, run_dir, old_file)
        check_killed_at_checkpoint(tb, np, data, run_dir)
        check_off_at_resume(tb, np, data, run_dir)
        check_ranks(tb, np, data, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

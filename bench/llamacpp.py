#!/usr/bin/env python3
# The llama.cpp side of bench/llamacpp.sh, through llama-cpp-python (and the
# gguf package for the F32 copy); every figure is computed in float64 from
# llama.cpp's own float32 logits:
#   llamacpp.py f32 SRC.gguf DST.gguf         an F32 copy: every tensor
#                                             dequantized by the gguf package,
#                                             the metadata as it was
#   llamacpp.py logits MODEL.gguf LLTRAIN.json ID...
#                                             llama.cpp's logits of the ids
#                                             against lltrain's (dump_logits'
#                                             JSON): the max relative
#                                             difference, max |a - b| / max |b|
#   llamacpp.py nll MODEL.gguf SHARD.bin      the mean negative log-likelihood
#                                             of every token of an lltrain token
#                                             shard after the first, one window
#                                             with the whole shard as context
#   llamacpp.py spm-tokenizer OUT.json TEXT   (Hugging Face's tokenizers) a
#                                             SentencePiece-style BPE as Llama
#                                             2's tokenizer.json is, trained on
#                                             TEXT
#   llamacpp.py tokenize MODEL.gguf TEXT SHARD.bin
#                                             llama.cpp's ids of TEXT against
#                                             the shard's (lltrain prepare's,
#                                             its end-of-text id last)
# KV cache in F32 and no flash attention, so that attention is computed in
# float32 as lltrain does; matrices in a quantized type are multiplied as
# llama.cpp does (activations rounded to 8-bit blocks).
import json
import os
import struct
import sys


def f32_copy(src, dst):
    import numpy as np
    import gguf
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            w.add_uint32(name, 0)  # all F32
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub_type=sub)
    for t in r.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        w.add_tensor(t.name, np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_logits(path, ids):
    """llama.cpp's float32 logits of every position of ids, [len(ids), V]."""
    import numpy as np
    import llama_cpp
    n = len(ids)
    llm = llama_cpp.Llama(model_path=path, n_ctx=max(n, 64), n_batch=n, n_ubatch=n,
                          n_threads=int(os.environ.get("THREADS", "2")), logits_all=True,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                          flash_attn=False, verbose=False)
    llm.eval(ids)
    out = np.array(llm.scores[:n], dtype=np.float32)
    llm.close()
    return out


def compare(path, dump, ids):
    import numpy as np
    with open(dump) as f:
        ours = np.asarray(json.load(f), dtype=np.float64)
    theirs = llama_logits(path, ids).astype(np.float64)
    if ours.shape != theirs.shape:
        sys.exit("llamacpp.py: %s: lltrain's logits are %s, llama.cpp's %s" %
                 (dump, ours.shape, theirs.shape))
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    agree = int((ours.argmax(1) == theirs.argmax(1)).sum())
    print("max_rel_diff %.6g argmax_agree %d positions %d max_abs_logit %.4g" %
          (rel, agree, len(ids), np.abs(theirs).max()))


def shard_tokens(path):
    import numpy as np
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:8] != b"LTTOKENS":
            sys.exit("llamacpp.py: %s: not an lltrain token shard" % path)
        width, = struct.unpack_from("<I", head, 16)
        count, = struct.unpack_from("<Q", head, 24)
        data = f.read(count * width)
    return np.frombuffer(data, dtype=np.uint16 if width == 2 else np.uint32).astype(np.int64)


def nll(path, shard):
    import numpy as np
    ids = shard_tokens(shard)
    z = llama_logits(path, [int(i) for i in ids]).astype(np.float64)[:-1]
    m = z.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(z - m).sum(1)))
    loss = float((lse - z[np.arange(len(z)), ids[1:]]).mean())
    print("loss %.6f perplexity %.4f tokens %d" % (loss, np.exp(loss), len(z)))


def spm_tokenizer(out, text):
    from tokenizers import Tokenizer, Regex, decoders, models, normalizers, pre_tokenizers, trainers
    spm = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = spm
    t.pre_tokenizer = pre_tokenizers.Split(Regex("\u2581[^\u2581]*"), behavior="isolated")
    t.train([text], trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<s>", "</s>"],
                                        limit_alphabet=80, show_progress=False))
    doc = json.loads(t.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for tok, _ in sorted(doc["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in doc["model"]["merges"]]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True))
    hf.normalizer = spm
    hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens(["<unk>", "<s>", "</s>", "<|endoftext|>"])
    hf.save(out)


def tokenize(path, text, shard):
    import llama_cpp
    m = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    theirs = m.tokenize(open(text, "rb").read(), add_bos=False, special=False)
    ours = [int(i) for i in shard_tokens(shard)[:-1]]
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                 None if len(ours) == len(theirs) else min(len(ours), len(theirs)))
    print("%d tokens by lltrain, %d by llama.cpp: %s" % (
        len(ours), len(theirs), "the same ids" if first is None else
        "first difference at %d: lltrain %s, llama.cpp %s" % (first, ours[first:first + 5],
                                                              theirs[first:first + 5])))
    return first is None


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "f32":
        f32_copy(a[1], a[2])
    elif len(a) >= 4 and a[0] == "logits":
        compare(a[1], a[2], [int(i) for i in a[3:]])
    elif len(a) == 3 and a[0] == "nll":
        nll(a[1], a[2])
    elif len(a) == 3 and a[0] == "spm-tokenizer":
        spm_tokenizer(a[1], a[2])
    elif len(a) == 4 and a[0] == "tokenize":
        sys.exit(0 if tokenize(a[1], a[2], a[3]) else 1)
    else:
        sys.exit("usage: llamacpp.py f32 SRC DST | logits MODEL LLTRAIN.json ID... | "
                 "nll MODEL SHARD | spm-tokenizer OUT TEXT | tokenize MODEL TEXT SHARD")


if __name__ == "__main__":
    main()

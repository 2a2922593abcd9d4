#!/usr/bin/env python3
"""Writes a LLaMA model directory in Hugging Face's format (config.json and
model.safetensors) with random weights of a chosen shape, for benchmarks that
import a model of a size no test ships: python3 bench/make_hf_model.py DIR
[--shape 1B|7B|DIM,LAYERS,HEADS,KV_HEADS,FFN,VOCAB] [--dtype bf16|f32]. Needs
numpy only; the safetensors file is written here (an 8-byte header length, a
JSON header, the tensors' bytes)."""
import argparse
import json
import os
import struct
import sys

import numpy as np

SHAPES = {  # dim, layers, heads, kv heads, ffn, vocab (TinyLlama-1.1B, Llama 2 7B)
    "1B": (2048, 22, 32, 4, 5632, 32000),
    "7B": (4096, 32, 32, 32, 11008, 32000),
}


def tensors(dim, layers, heads, kv, ffn, vocab):
    """(name, shape) of every tensor, in the order written."""
    hd = dim // heads
    yield "model.embed_tokens.weight", (vocab, dim)
    for l in range(layers):
        p = "model.layers.%d." % l
        yield p + "input_layernorm.weight", (dim,)
        yield p + "self_attn.q_proj.weight", (dim, dim)
        yield p + "self_attn.k_proj.weight", (kv * hd, dim)
        yield p + "self_attn.v_proj.weight", (kv * hd, dim)
        yield p + "self_attn.o_proj.weight", (dim, dim)
        yield p + "post_attention_layernorm.weight", (dim,)
        yield p + "mlp.gate_proj.weight", (ffn, dim)
        yield p + "mlp.up_proj.weight", (ffn, dim)
        yield p + "mlp.down_proj.weight", (dim, ffn)
    yield "model.norm.weight", (dim,)
    yield "lm_head.weight", (vocab, dim)


def values(rng, name, shape, dtype):
    """Norms at one, matrices normal with std 0.02, as bytes of dtype."""
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        x = np.ones(shape, np.float32)
    else:
        x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
    if dtype == "f32":
        return x.tobytes()
    u = x.view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return u.astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--shape", default="1B")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    shape = SHAPES.get(a.shape) or tuple(int(v) for v in a.shape.split(","))
    if len(shape) != 6:
        sys.exit("make_hf_model.py: --shape %s: expected 1B, 7B or six integers" % a.shape)
    dim, layers, heads, kv, ffn, vocab = shape
    os.makedirs(a.dir, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": dim, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "intermediate_size": ffn, "vocab_size": vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "hidden_act": "silu",
        "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float32",
    }
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    size = 2 if a.dtype == "bf16" else 4
    header, off = {}, 0
    names = list(tensors(*shape))
    for name, shp in names:
        n = int(np.prod(shp)) * size
        header[name] = {"dtype": "BF16" if a.dtype == "bf16" else "F32",
                        "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(a.seed)
    path = os.path.join(a.dir, "model.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shp in names:
            f.write(values(rng, name, shp, a.dtype))
    os.replace(path + ".tmp", path)
    print("%s: %d tensors, %.1f M parameters, %s" % (a.dir, len(names), off / size / 1e6, a.dtype))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a Llama checkpoint with random weights (Llama-3.1-8B's shape by default) for the GPU cluster benchmark.

    python3 bench/cluster/make_random_llama.py OUT_DIR [--layers N --hidden N --heads N --kv-heads N
                                                         --intermediate N --vocab N ...]

OUT_DIR gets config.json, the weights as safetensors (bf16, normal(0, --std), norms 1; sharded at
--max-shard-size, so 8B is 4 files plus model.safetensors.index.json) and a tokenizer.json that decodes every
id below --vocab: the byte-level BPE of --tokenizer-from (tests/data/models/llama3-tiny) with its special
tokens at their ids, and a filler token "<tID>" (printable ASCII, which byte-level BPE maps to itself) for
each id it lacks. Tokenizing text never yields a filler; decoding one yields its visible name.

Weights: with torch and transformers importable, LlamaForCausalLM built on the GPU when there is one and
saved with save_pretrained; without them (a dev box), written here in pure Python (fine for small shapes;
the values are then uniform in magnitude over [2^-9, 2^-5) rather than normal). --writer picks one.
"""
import argparse
import json
import os
import random
import shutil
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=0, help="0: hidden / heads")
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--rope-theta", type=float, default=500000.0)
    p.add_argument("--max-position", type=int, default=131072)
    p.add_argument("--std", type=float, default=0.02, help="of the random weights (norms are 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shard-size", default="5GB", help="as transformers reads it: 5GB = 5e9 bytes, 5GiB = 5*2^30")
    p.add_argument("--tokenizer-from", default=os.path.join(ROOT, "tests/data/models/llama3-tiny"),
                   help="model directory whose tokenizer.json (and tokenizer side files) to extend")
    p.add_argument("--writer", choices=("auto", "transformers", "python"), default="auto",
                   help="auto: transformers when torch and transformers import, else pure Python")
    p.add_argument("--device", default="auto", help="transformers writer: where to build the weights (auto: cuda if any)")
    p.add_argument("--tokenizer-only", action="store_true", help="write tokenizer.json (and side files) only")
    args = p.parse_args(argv)
    if args.head_dim == 0:
        if args.hidden % args.heads:
            p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}: give --head-dim")
        args.head_dim = args.hidden // args.heads
    if args.heads % args.kv_heads:
        p.error(f"--heads {args.heads} is not a multiple of --kv-heads {args.kv_heads}")
    return args


# --- tokenizer ---

def extended_tokenizer(source, vocab_size):
    """The tokenizer.json dict of `source`, its model.vocab filled up to `vocab_size` ids."""
    with open(source, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        sys.exit(f"{source}: model is not a BPE with a vocab object")
    vocab = model["vocab"]
    taken = set(vocab.values())
    for added in tok.get("added_tokens") or []:
        taken.add(added["id"])
        # An added token outside model.vocab keeps its id; the filler must not reuse it.
    top = max(taken)
    if top >= vocab_size:
        sys.exit(f"{source}: has id {top}, which does not fit a vocabulary of {vocab_size}")
    fillers = 0
    for token_id in range(vocab_size):
        if token_id in taken:
            continue
        name = f"<t{token_id}>"
        if name in vocab:
            sys.exit(f"{source}: already has a token '{name}' (id {vocab[name]}); pick another filler scheme")
        vocab[name] = token_id
        fillers += 1
    return tok, fillers


def write_tokenizer(args):
    source_dir = args.tokenizer_from
    tok, fillers = extended_tokenizer(os.path.join(source_dir, "tokenizer.json"), args.vocab)
    with open(os.path.join(args.out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    copied = []
    for name in TOKENIZER_SIDE_FILES:
        if os.path.exists(os.path.join(source_dir, name)):
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(args.out_dir, name))
            copied.append(name)
    print(f"tokenizer.json: {args.vocab} ids ({fillers} fillers '<tID>'), from {source_dir}"
          + (f"; copied {', '.join(copied)}" if copied else ""))
    return tok


def special_ids(tok):
    """bos and eos ids from the tokenizer's added tokens (Llama 3 names), else 0 and 1."""
    ids = {t["content"]: t["id"] for t in tok.get("added_tokens") or []}
    return ids.get("<|begin_of_text|>", 0), ids.get("<|end_of_text|>", ids.get("<|eot_id|>", 1))


# --- config and weights ---

def config_dict(args, bos, eos):
    """config.json as transformers 5.x writes a Llama-3.1 one (rope under rope_parameters)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "dtype": "bfloat16",
        "eos_token_id": eos,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "hidden_size": args.hidden,
        "initializer_range": args.std,
        "intermediate_size": args.intermediate,
        "max_position_embeddings": args.max_position,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": args.heads,
        "num_hidden_layers": args.layers,
        "num_key_value_heads": args.kv_heads,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_theta": args.rope_theta,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": args.vocab,
    }


def tensor_shapes(args):
    """(name, shape) of every tensor, in LlamaForCausalLM's state_dict order."""
    h, q, kv, inter = args.hidden, args.heads * args.head_dim, args.kv_heads * args.head_dim, args.intermediate
    out = [("model.embed_tokens.weight", (args.vocab, h))]
    for i in range(args.layers):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                (p + "mlp.down_proj.weight", (h, inter)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (args.vocab, h))]
    return out


def is_norm(name):
    return name.endswith("norm.weight")


def parse_size(text):
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    upper = text.strip().upper()
    for unit, scale in units.items():
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * scale)
    return int(upper)


def write_weights_transformers(args):
    import torch
    import transformers

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # config.json above is in the format transformers 5.x writes; the build is bench/cuda/pytorch_llama.py's.
    hf_config = transformers.LlamaConfig.from_pretrained(args.out_dir)
    torch.manual_seed(args.seed)
    with torch.device(device):
        try:
            model = transformers.LlamaForCausalLM._from_config(hf_config, dtype=torch.bfloat16)
        except TypeError:  # transformers 4.x
            model = transformers.LlamaForCausalLM._from_config(hf_config, torch_dtype=torch.bfloat16)
    # Our own init, whatever the library's default: normal(0, std), norms 1.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_norm(name):
                param.fill_(1.0)
            else:
                param.normal_(0.0, args.std)
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    wrong = [f"{name} {shape} (got {got.get(name)})" for name, shape in tensor_shapes(args) if got.get(name) != shape]
    if wrong:
        sys.exit(f"transformers built other tensors than a Llama checkpoint has: {'; '.join(wrong[:4])}")
    model.save_pretrained(args.out_dir, max_shard_size=args.max_shard_size)
    print(f"weights: transformers {transformers.__version__}, built on {device}")


def random_bf16(rng, count):
    """`count` bf16 values, little-endian: random sign and mantissa, magnitude in [2^-9, 2^-5)."""
    low = rng.randbytes(count)  # bit 7: exponent's low bit; bits 0-6: mantissa
    # bit 7: sign; bits 0-6: exponent >> 1, 59 or 60 (exponents 118..121 with the low bit)
    high = rng.randbytes(count).translate(bytes((b & 0x80) | (59 + (b & 1)) for b in range(256)))
    out = bytearray(2 * count)
    out[0::2] = low
    out[1::2] = high
    return out


def write_weights_python(args):
    rng = random.Random(args.seed)
    tensors = tensor_shapes(args)
    max_shard = parse_size(args.max_shard_size)
    shards, current, current_bytes = [], [], 0
    for name, shape in tensors:
        nbytes = 2
        for d in shape:
            nbytes *= d
        if current and current_bytes + nbytes > max_shard:
            shards.append(current)
            current, current_bytes = [], 0
        current.append((name, shape, nbytes))
        current_bytes += nbytes
    shards.append(current)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    one = struct.pack("<H", 0x3F80)  # bf16 1.0
    for file_name, shard in zip(names, shards):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, nbytes in shard:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file_name
        total += offset
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(os.path.join(args.out_dir, file_name), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for name, shape, nbytes in shard:
                f.write(one * (nbytes // 2) if is_norm(name) else random_bf16(rng, nbytes // 2))
    if len(shards) > 1:
        with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"weights: pure Python, {len(shards)} file(s), {total / 1e9:.2f} GB")


def main(argv):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    started = time.time()
    tok = write_tokenizer(args)
    if args.tokenizer_only:
        return 0
    bos, eos = special_ids(tok)
    config = config_dict(args, bos, eos)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    writer = args.writer
    if writer == "auto":
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            writer = "transformers"
        except ImportError:
            writer = "python"
    params = sum(1 if len(s) == 1 else s[0] * s[1] for _, s in tensor_shapes(args))
    print(f"{args.out_dir}: {params / 1e9:.2f}B parameters, {args.layers} layers, hidden {args.hidden}, "
          f"{args.heads} heads / {args.kv_heads} KV heads of {args.head_dim}, vocab {args.vocab}")
    if writer == "transformers":
        write_weights_transformers(args)
    else:
        write_weights_python(args)
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

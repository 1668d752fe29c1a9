#!/usr/bin/env python3
"""Makes a tiny Hugging Face checkpoint with random weights and its transformers reference outputs.

Covers what the shared fixtures (tests/data/models/{llama3,qwen2,mistral}-tiny) do not: a sliding
window shorter than the prompt, and Llama's optional o_proj and MLP biases. Run where transformers is
installed (the GPU machine; outputs are computed on the CPU in float32):

    python3 tests/data/tools/make_tiny_golden.py mistral-window-tiny OUT_DIR
    python3 tests/data/tools/make_tiny_golden.py llama-bias-tiny OUT_DIR

Writes OUT_DIR/{config.json, model.safetensors, golden.json} in the format of the shared goldens
(`cpu` results only). Copy tokenizer.json from any tiny model beside them.
"""
import json
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

COMMON = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
              rms_norm_eps=1e-5, initializer_range=0.25, bos_token_id=0, eos_token_id=1,
              tie_word_embeddings=False)


def build(name):
    if name == "mistral-window-tiny":
        return MistralForCausalLM(MistralConfig(sliding_window=64, rope_theta=10000.0, **COMMON))
    if name == "llama-bias-tiny":
        return LlamaForCausalLM(LlamaConfig(attention_bias=True, mlp_bias=True, rope_theta=10000.0, **COMMON))
    raise SystemExit(f"unknown model {name}")


def main():
    name, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(20261123)
    model = build(name).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            # Norms stay near 1; everything else, biases included, is normal(0, 0.25) like the shared fixtures.
            if "norm" in param_name:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.25)
    model.save_pretrained(out, safe_serialization=True)

    prompt = torch.randint(2, 512, (1, 300), generator=torch.Generator().manual_seed(7))
    n = prompt.shape[1]
    with torch.no_grad():
        logits = model(prompt).logits[0].float()
        model.generation_config.eos_token_id = None
        gen = model.generate(prompt, max_new_tokens=24, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=0)
    greedy = gen.sequences[0, n:].tolist()
    margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in gen.scores]
    positions = [0, 1, n // 2, n - 1]
    golden = {
        "model": name,
        "prompt_ids": prompt[0].tolist(),
        "cpu": {
            "last_logits": logits[n - 4:].tolist(),
            "logits_at": {str(p): logits[p].tolist() for p in positions},
            "greedy_ids": greedy,
            "greedy_margin_min": min(margins),
        },
    }
    with open(f"{out}/golden.json", "w") as f:
        json.dump(golden, f)


if __name__ == "__main__":
    main()

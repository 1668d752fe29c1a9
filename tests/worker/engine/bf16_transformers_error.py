#!/usr/bin/env python3
"""How far transformers itself lands from its float32 logits when the tiny models run in bfloat16 on the
GPU: the yardstick for the CUDA backend's BF16 bounds (cuda_golden_test.cc). Prints one line per model:
relative L2 of the last prompt position's logits, bf16 vs the golden's float32 reference.

  python3 tests/worker/engine/bf16_transformers_error.py [tests/data/models]
"""
import json, os, sys

import torch
from transformers import AutoModelForCausalLM

root = sys.argv[1] if len(sys.argv) > 1 else "tests/data/models"
for name in ["llama3-tiny", "qwen2-tiny", "mistral-tiny", "mistral-window-tiny", "llama-bias-tiny"]:
    d = os.path.join(root, name)
    g = json.load(open(os.path.join(d, "golden.json")))
    ref = torch.tensor((g.get("cuda") or g["cpu"])["last_logits"][-1], dtype=torch.float64)
    ids = torch.tensor([g["prompt_ids"]], device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).cuda().eval()
        with torch.no_grad():
            out = m(input_ids=ids).logits[0, -1].double().cpu()
        rel = ((out - ref).norm() / ref.norm()).item()
        print(f"transformers {str(dtype).split('.')[-1]:9s} {name:20s} rel L2 vs float32 golden {rel:.3g}", flush=True)

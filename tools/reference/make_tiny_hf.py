#!/usr/bin/env python3
"""Write a small random Kimi-Linear checkpoint in Hugging Face Hub format.

The output directory gets
  * config.json        -- the key set of the released model's config.json
                          (linear_attn_config with 1-based layer lists, MLA keys,
                          MoE keys, the unused head_dim / rope_theta keys, ...),
  * model.safetensors  -- every tensor under its Hub name (docs/kimi-linear.md §2),
                          i.e. *before* any renaming/fusing done by a runtime.

The shapes are tiny (hidden 128, 8 layers) so that a pure-PyTorch reference
forward runs in about a second on a CPU.  The weights are random but scaled so
that every part of the model matters: the decay gates use the FLA
initialisation (A_log = log U(1,16), dt_bias = softplus^-1 of U(1e-3,1e-1) in
log space), the norms are not all ones, the router correction bias is
non-zero, and so on.

Only numpy, torch and safetensors are needed.

Example:
    python3 tools/reference/make_tiny_hf.py --out /tmp/kimi-tiny --seed 0 --dtype bf16
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def tiny_config(args):
    """A config.json with the same keys as the released Hub config."""
    n_layers = args.layers
    # MLA every 4th layer (1-based 4, 8, ...) and always on the last one, as in the
    # released model ([4, 8, ..., 24, 27] for 27 layers).
    full = sorted({i for i in range(4, n_layers + 1, 4)} | {n_layers})
    kda = [i for i in range(1, n_layers + 1) if i not in full]
    return {
        "architectures": ["KimiLinearForCausalLM"],
        "model_type": "kimi_linear",
        "dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[args.dtype],
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[args.dtype],
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "num_hidden_layers": n_layers,
        "intermediate_size": args.dense_ffn,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": args.vocab - 1,
        "model_max_length": 1048576,
        # Present in the release but meaningless / unused (no RoPE, head_dim = hidden / heads).
        "head_dim": args.hidden // args.mla_heads,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "num_nextn_predict_layers": 0,
        # KDA
        "linear_attn_config": {
            "kda_layers": kda,
            "full_attn_layers": full,
            "num_heads": args.kda_heads,
            "head_dim": args.kda_head_dim,
            "short_conv_kernel_size": 4,
        },
        # MLA
        "num_attention_heads": args.mla_heads,
        "num_key_value_heads": args.mla_heads,
        "q_lora_rank": None,
        "kv_lora_rank": args.kv_lora,
        "qk_nope_head_dim": args.nope,
        "qk_rope_head_dim": args.rope,
        "v_head_dim": args.v_dim,
        "mla_use_nope": True,
        # MoE
        "num_experts": args.experts,
        "num_experts_per_token": args.top_k,
        "num_shared_experts": 1,
        "moe_intermediate_size": args.expert_ffn,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "moe_router_activation_func": "sigmoid",
        "moe_renormalize": True,
        "routed_scaling_factor": 2.446,
        "use_grouped_topk": True,
        "num_expert_group": 1,
        "topk_group": 1,
    }


def make_tensors(cfg, gen, dtype):
    """Random tensors under their Hub names; A_log, dt_bias, e_score_correction_bias in fp32."""
    D = cfg["hidden_size"]
    lac = cfg["linear_attn_config"]
    H, K = lac["num_heads"], lac["head_dim"]
    P = H * K
    conv = lac["short_conv_kernel_size"]
    Hm = cfg["num_attention_heads"]
    nope, rope, vdim, kvr = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    E, Fe, Fd = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]
    V = cfg["vocab_size"]

    def randn(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    def linear(out_f, in_f, gain=1.0):
        # std ~ gain / sqrt(fan_in): keeps activations O(1) through the tiny network
        return randn(out_f, in_f, std=gain / math.sqrt(in_f))

    def norm_w(n):
        return 1.0 + randn(n, std=0.1)

    t = {}
    t["model.embed_tokens.weight"] = randn(V, D, std=1.0)
    t["model.norm.weight"] = norm_w(D)
    t["lm_head.weight"] = linear(V, D)
    kda_layers = {i - 1 for i in lac["kda_layers"]}  # 1-based in config.json
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm_w(D)
        t[p + "post_attention_layernorm.weight"] = norm_w(D)
        a = p + "self_attn."
        if i in kda_layers:
            t[a + "q_proj.weight"] = linear(P, D)
            t[a + "k_proj.weight"] = linear(P, D)
            t[a + "v_proj.weight"] = linear(P, D)
            for n in ("q", "k", "v"):
                t[a + f"{n}_conv1d.weight"] = randn(P, 1, conv, std=0.5)
            t[a + "f_a_proj.weight"] = linear(K, D)
            t[a + "f_b_proj.weight"] = linear(P, K)
            # FLA initialisation: dt ~ exp(U(log 1e-3, log 1e-1)), dt_bias = softplus^-1(dt)
            dt = torch.exp(torch.rand(P, generator=gen) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp_min(1e-4)
            t[a + "dt_bias"] = dt + torch.log(-torch.expm1(-dt))
            t[a + "A_log"] = torch.log(1.0 + 15.0 * torch.rand(1, 1, H, 1, generator=gen))
            t[a + "b_proj.weight"] = linear(H, D)
            t[a + "g_a_proj.weight"] = linear(K, D)
            t[a + "g_b_proj.weight"] = linear(P, K)
            t[a + "o_norm.weight"] = norm_w(K)
            t[a + "o_proj.weight"] = linear(D, P)
        else:
            t[a + "q_proj.weight"] = linear(Hm * (nope + rope), D)
            t[a + "kv_a_proj_with_mqa.weight"] = linear(kvr + rope, D)
            t[a + "kv_a_layernorm.weight"] = norm_w(kvr)
            t[a + "kv_b_proj.weight"] = linear(Hm * (nope + vdim), kvr)
            t[a + "o_proj.weight"] = linear(D, Hm * vdim)
        if i < cfg["first_k_dense_replace"]:
            m = p + "mlp."
            t[m + "gate_proj.weight"] = linear(Fd, D)
            t[m + "up_proj.weight"] = linear(Fd, D)
            t[m + "down_proj.weight"] = linear(D, Fd)
        else:
            m = p + "block_sparse_moe."
            t[m + "gate.weight"] = linear(E, D)
            t[m + "gate.e_score_correction_bias"] = randn(E, std=0.05)
            for e in range(E):
                t[m + f"experts.{e}.w1.weight"] = linear(Fe, D)
                t[m + f"experts.{e}.w3.weight"] = linear(Fe, D)
                t[m + f"experts.{e}.w2.weight"] = linear(D, Fe)
            Fs = Fe * cfg["num_shared_experts"]
            t[m + "shared_experts.gate_proj.weight"] = linear(Fs, D)
            t[m + "shared_experts.up_proj.weight"] = linear(Fs, D)
            t[m + "shared_experts.down_proj.weight"] = linear(D, Fs)

    fp32_names = ("A_log", "dt_bias", "e_score_correction_bias")
    return {
        k: (v if k.endswith(fp32_names) else v.to(dtype)).contiguous()
        for k, v in t.items()
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                    help="storage dtype of the weights (A_log/dt_bias/router bias stay fp32)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=640)
    ap.add_argument("--kda-heads", type=int, default=4)
    ap.add_argument("--kda-head-dim", type=int, default=32)
    ap.add_argument("--mla-heads", type=int, default=4)
    ap.add_argument("--kv-lora", type=int, default=32)
    ap.add_argument("--nope", type=int, default=32)
    ap.add_argument("--rope", type=int, default=16)
    ap.add_argument("--v-dim", type=int, default=32)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--expert-ffn", type=int, default=64)
    ap.add_argument("--dense-ffn", type=int, default=256)
    args = ap.parse_args()

    cfg = tiny_config(args)
    gen = torch.Generator().manual_seed(args.seed)
    tensors = make_tensors(cfg, gen, DTYPES[args.dtype])

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    n = sum(v.numel() for v in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} tensors, {n} parameters, dtype {args.dtype}, "
          f"MLA layers (1-based) {cfg['linear_attn_config']['full_attn_layers']}")


if __name__ == "__main__":
    main()

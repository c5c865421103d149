#!/usr/bin/env python3
"""Reference logits for a Kimi-Linear checkpoint, computed in fp32 on the CPU.

Given a Hugging Face Hub-format Kimi-Linear checkpoint (config.json with the
released key set, safetensors with the Hub tensor names of
docs/kimi-linear.md §2) and a list of token ids, this script

  1. loads the checkpoint with the native transformers `KimiLinearForCausalLM`
     (transformers >= 5, pure-PyTorch paths; flash-linear-attention's Triton
     kernels are deliberately *not* used), upcasting every weight to fp32;
  2. verifies that transformers' load-time renaming/fusing of the Hub names
     reproduced every Hub tensor exactly, and that the few places where
     revisions of that port have differed are right (gated-norm activation
     must be sigmoid, no RoPE, 1-based layer lists, router in fp32, ...);
     a wrong gated-norm activation is patched to sigmoid and reported;
  3. runs one prefill over all tokens and writes the logits as raw
     little-endian float32, shape [n_tokens][vocab];
  4. cross-checks (each can be switched off):
       * KDA core: every call into transformers' KDA core (its chunked or
         recurrent PyTorch form) is recorded and re-run with
         flash-linear-attention's naive recurrence `naive_recurrent_kda`
         (and `naive_chunk_kda`) from `fla/ops/kda/naive.py`;
       * decode: token-by-token decoding with transformers' cache, and a
         two-part prefill, against the one-shot prefill;
       * independent forward: a from-scratch PyTorch forward that reads the
         Hub tensors directly (no transformers code), written from
         docs/kimi-linear.md §3-§6 (absorbed MLA, fla's naive KDA recurrence),
         against transformers' logits;
  5. writes a JSON summary next to the logits (versions, argmax per position,
     eps values, what was checked and the max abs differences).

Usage:
    python3 tools/reference/hf_logits.py --model DIR --tokens 1,2,3 --out FILE.bin

The script needs only the checkpoint's config.json and *.safetensors; tokenizer
files that may sit in the same directory are ignored (the input is token ids).
"""

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time

# ---------------------------------------------------------------------------
# Imports.  transformers binds its KDA core at import time: if the `fla`
# package (flash-linear-attention / fla-core) can be imported, it uses fla's
# Triton `chunk_kda` / `fused_recurrent_kda`, which need a GPU.  To get the
# pure-PyTorch reference path, `fla` is hidden while transformers' Kimi-Linear
# module is imported.  fla's naive reference (plain PyTorch + einops) is then
# loaded straight from its file, without importing the `fla` package.
# ---------------------------------------------------------------------------
import torch
import torch.nn.functional as F


def _locate_fla_naive():
    """Path of fla/ops/kda/naive.py, found without importing fla."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "ops", "kda", "naive.py")
    return path if os.path.isfile(path) else None


FLA_NAIVE_PATH = _locate_fla_naive()

_saved_fla = sys.modules.get("fla", "absent")
sys.modules["fla"] = None  # makes `import fla` raise ImportError
try:
    import transformers
    from transformers.models.kimi_linear import modeling_kimi_linear as hf_kimi
    from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearForCausalLM
    from transformers.cache_utils import DynamicCache
finally:
    if _saved_fla == "absent":
        del sys.modules["fla"]
    else:
        sys.modules["fla"] = _saved_fla

from safetensors import safe_open


def load_fla_naive():
    if FLA_NAIVE_PATH is None:
        return None
    spec = importlib.util.spec_from_file_location("fla_kda_naive", FLA_NAIVE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pkg_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Checkpoint access (Hub names, any of f32/bf16/f16, single file or sharded)
# ---------------------------------------------------------------------------

def safetensors_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
    if not files:
        raise SystemExit(f"no .safetensors files in {model_dir}")
    return [os.path.join(model_dir, n) for n in files]


def load_hub_tensors(model_dir):
    """All tensors under their Hub names, upcast to fp32; also their stored dtypes."""
    tensors, dtypes = {}, {}
    for path in safetensors_files(model_dir):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                dtypes[name] = str(t.dtype).replace("torch.", "")
                tensors[name] = t.to(torch.float32)
    return tensors, dtypes


def worst_of(a, b):
    """The larger error of a and b, NaN when either is NaN (max() keeps its first argument against
    a NaN, so a NaN difference would vanish from a running maximum); None counts as no error."""
    if a is None:
        return b
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def sha256_file(path, bufsize=1 << 24):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Config checks: the raw config.json against what transformers derived from it
# ---------------------------------------------------------------------------

def check_config(raw, cfg):
    """Assert transformers read every key that matters the way the Hub config means it."""
    problems = []

    def expect(what, got, want):
        if got != want:
            problems.append(f"{what}: transformers has {got!r}, config.json means {want!r}")

    if raw.get("model_type") != "kimi_linear":
        problems.append(f"model_type is {raw.get('model_type')!r}, expected 'kimi_linear'")
    if raw.get("mla_use_nope", True) is not True:
        problems.append("mla_use_nope is false: this reference has no RoPE path (Kimi-Linear is NoPE)")
    act = raw.get("moe_router_activation_func", "sigmoid")
    if act != "sigmoid":
        problems.append(f"moe_router_activation_func {act!r}: transformers hard-codes sigmoid")
    if raw.get("moe_layer_freq", 1) != 1:
        problems.append("moe_layer_freq != 1 is not modelled by transformers")
    if raw.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {raw.get('hidden_act')!r}: expected silu")

    lac = raw["linear_attn_config"]
    n = raw["num_hidden_layers"]
    kda = sorted(lac["kda_layers"])
    full = sorted(lac["full_attn_layers"])
    if sorted(kda + full) != list(range(1, n + 1)):
        problems.append(f"kda_layers + full_attn_layers are not a partition of 1..{n} (they are 1-based)")
    want_types = ["linear_attention" if (i + 1) in kda else "full_attention" for i in range(n)]
    expect("layer_types", list(cfg.layer_types), want_types)
    fk = raw.get("first_k_dense_replace", 1)
    expect("mlp_layer_types", list(cfg.mlp_layer_types), ["dense" if i < fk else "sparse" for i in range(n)])

    expect("linear_num_heads", cfg.linear_num_heads, lac["num_heads"])
    expect("linear_head_dim", cfg.linear_head_dim, lac["head_dim"])
    expect("linear_conv_kernel_dim", cfg.linear_conv_kernel_dim, lac["short_conv_kernel_size"])
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "rms_norm_eps",
                "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                "q_lora_rank", "moe_intermediate_size", "routed_scaling_factor", "tie_word_embeddings"):
        if key in raw:
            expect(key, getattr(cfg, key), raw[key])
    expect("num_local_experts", cfg.num_local_experts, raw["num_experts"])
    expect("num_experts_per_tok", cfg.num_experts_per_tok, raw["num_experts_per_token"])
    expect("n_shared_experts", cfg.n_shared_experts, raw.get("num_shared_experts", 1))
    expect("norm_topk_prob", cfg.norm_topk_prob, raw.get("moe_renormalize", True))
    expect("n_group", cfg.n_group, raw.get("num_expert_group", 1))
    expect("topk_group", cfg.topk_group, raw.get("topk_group", 1))
    if problems:
        raise SystemExit("config check failed:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------
# Weight check: transformers' converted parameters against the Hub tensors
# ---------------------------------------------------------------------------

def expected_hf_params(hub, cfg):
    """The parameters transformers' KimiLinearForCausalLM should hold, built from Hub names.

    This restates transformers' load-time conversion (conversion_mapping.py,
    "kimi_linear") explicitly, so that the check below is independent of it:
      self_attn.{f_a_proj,f_b_proj,dt_bias,A_log}  -> self_attn.forget_gate.*
      self_attn.{q,k,v}_conv1d.weight              -> self_attn.conv1d.weight (concatenated q|k|v)
      block_sparse_moe.*                           -> mlp.*
      experts.{e}.w1 / w3                          -> experts.gate_up_proj [E, 2F, D] (w1 rows first)
      experts.{e}.w2                               -> experts.down_proj    [E, D, F]
    """
    exp = {}
    E = cfg.num_local_experts
    for name, t in hub.items():
        if ".self_attn." in name:
            for part in ("f_a_proj.", "f_b_proj.", "dt_bias", "A_log"):
                if ".self_attn." + part in name:
                    name = name.replace(".self_attn.", ".self_attn.forget_gate.")
                    break
            if name.endswith("_conv1d.weight"):
                continue  # handled below
        elif ".block_sparse_moe." in name:
            if ".experts." in name and ".shared_experts." not in name:
                continue  # handled below
            name = name.replace(".block_sparse_moe.", ".mlp.")
        exp[name] = t
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        if cfg.layer_types[i] == "linear_attention":
            exp[p + "self_attn.conv1d.weight"] = torch.cat(
                [hub[p + f"self_attn.{n}_conv1d.weight"] for n in ("q", "k", "v")], dim=0)
        if cfg.mlp_layer_types[i] == "sparse":
            m = p + "block_sparse_moe.experts."
            exp[p + "mlp.experts.gate_up_proj"] = torch.stack(
                [torch.cat([hub[m + f"{e}.w1.weight"], hub[m + f"{e}.w3.weight"]], dim=0) for e in range(E)])
            exp[p + "mlp.experts.down_proj"] = torch.stack([hub[m + f"{e}.w2.weight"] for e in range(E)])
    if not cfg.tie_word_embeddings and "lm_head.weight" not in exp:
        raise SystemExit("tie_word_embeddings is false but lm_head.weight is missing")
    return exp


def check_weights(model, hub, cfg):
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))
    exp = expected_hf_params(hub, cfg)
    missing = sorted(set(state) - set(exp))
    unused = sorted(set(exp) - set(state))
    if missing or unused:
        raise SystemExit(f"weight name mismatch:\n  not in checkpoint: {missing}\n  not in model: {unused}")
    worst = 0.0
    for name, want in exp.items():
        got = state[name].detach()
        if got.dtype != torch.float32:
            raise SystemExit(f"{name} is {got.dtype} after loading, expected float32")
        if tuple(got.shape) != tuple(want.shape):
            raise SystemExit(f"{name}: shape {tuple(got.shape)} after loading, {tuple(want.shape)} expected")
        worst = worst_of(worst, (got - want).abs().max().item())
    if worst != 0.0:
        raise SystemExit(f"loaded weights differ from the checkpoint (max abs {worst})")
    return len(exp)


# ---------------------------------------------------------------------------
# Implementation checks / patches on transformers' modules
# ---------------------------------------------------------------------------

def sigmoid_gated_rmsnorm(self, hidden_states, gate=None):
    """o_norm of KDA: RMSNorm(o) * sigmoid(gate), in fp32 (docs/kimi-linear.md §3.1 step 8)."""
    input_dtype = hidden_states.dtype
    x = hidden_states.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    x = self.weight.to(torch.float32) * x
    x = x * torch.sigmoid(gate.to(torch.float32))
    return x.to(input_dtype)


def check_gated_norm(model):
    """Probe the gated norm numerically; patch it to a sigmoid gate if it is anything else.

    One revision of the port hard-coded SiLU for this gate; the released model
    uses sigmoid (FusedRMSNormGated(activation="sigmoid")).
    """
    norms = [m for m in model.modules() if isinstance(m, hf_kimi.KimiLinearRMSNormGated)]
    if not norms:
        return {"activation_reported": None, "probe": "no KDA layers", "patched": False}
    m = norms[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, m.weight.shape[0], generator=g) * 3
    z = torch.randn(3, m.weight.shape[0], generator=g) * 3
    with torch.no_grad():
        got = m(x, z)
        want = sigmoid_gated_rmsnorm(m, x, z)
        silu = want / torch.sigmoid(z) * F.silu(z)
    info = {"activation_reported": getattr(m, "activation", None), "eps": m.variance_epsilon}
    if torch.allclose(got, want, rtol=1e-6, atol=1e-6):
        info.update(probe="sigmoid", patched=False)
    else:
        info.update(probe="silu" if torch.allclose(got, silu, rtol=1e-6, atol=1e-6) else "unknown",
                    patched=True)
        hf_kimi.KimiLinearRMSNormGated.forward = sigmoid_gated_rmsnorm
        with torch.no_grad():
            assert torch.allclose(m(x, z), want)
    return info


def check_modules(model, cfg):
    """Facts about the loaded module tree that the reference relies on."""
    facts = {}
    mla = [m for m in model.modules() if isinstance(m, hf_kimi.KimiLinearAttention)]
    kda = [m for m in model.modules() if isinstance(m, hf_kimi.KimiLinearDeltaAttention)]
    facts["mla_layers_0based"] = [m.layer_idx for m in mla]
    facts["kda_layers_0based"] = [m.layer_idx for m in kda]
    if mla:
        eps = {m.kv_a_layernorm.variance_epsilon for m in mla}
        assert len(eps) == 1
        facts["kv_a_layernorm_eps"] = eps.pop()
        facts["mla_softmax_scale"] = mla[0].scaling
        # NoPE: the port has no rotary module at all; assert no revision sneaks one in.
        rot = [n for n, _ in model.named_modules() if "rotary" in n.lower() or "rope" in n.lower()]
        if rot:
            raise SystemExit(f"unexpected rotary modules in the model: {rot}")
        facts["rope_applied"] = False
    if kda:
        facts["kda_o_norm_eps"] = kda[0].o_norm.variance_epsilon
        facts["kda_conv_activation"] = kda[0].activation
    facts["rms_norm_eps"] = cfg.rms_norm_eps
    gates = [m for m in model.modules() if isinstance(m, hf_kimi.KimiLinearTopkRouter)]
    if gates:
        g = gates[0]
        facts["router_weight_dtype"] = str(g.weight.dtype).replace("torch.", "")
        facts["router_bias_dtype"] = str(g.e_score_correction_bias.dtype).replace("torch.", "")
        facts["routed_scaling_factor"] = g.routed_scaling_factor
        facts["router_renormalize"] = g.norm_topk_prob
    return facts


# ---------------------------------------------------------------------------
# KDA core recording (for the fla naive cross-check)
# ---------------------------------------------------------------------------

class KdaRecorder:
    """Wraps transformers' two KDA core functions and records every call."""

    def __init__(self):
        self.calls = []
        self.enabled = False
        self._orig = {}

    def install(self):
        for name in ("chunk_kimi_delta_attention", "recurrent_kimi_delta_attention"):
            orig = getattr(hf_kimi, name)
            self._orig[name] = orig
            setattr(hf_kimi, name, self._wrap(name, orig))

    def uninstall(self):
        for name, orig in self._orig.items():
            setattr(hf_kimi, name, orig)

    def _wrap(self, name, orig):
        def wrapped(query, key, value, g, beta, initial_state=None, output_final_state=False, **kw):
            out, state = orig(query, key, value, g=g, beta=beta, initial_state=initial_state,
                              output_final_state=output_final_state, **kw)
            if self.enabled:
                assert kw.get("use_qk_l2norm_in_kernel", False), "KDA core called without q/k L2 norm"
                clone = lambda t: None if t is None else t.detach().clone()
                self.calls.append(dict(kind=name, q=clone(query), k=clone(key), v=clone(value), g=clone(g),
                                       beta=clone(beta), h0=clone(initial_state), o=clone(out),
                                       ht=clone(state)))
            return out, state
        return wrapped


def fla_l2norm(x, eps=1e-6):
    """flash-linear-attention's l2norm: x / sqrt(sum(x^2) + eps) (fla/modules/l2norm.py)."""
    return x * torch.rsqrt((x.float() * x.float()).sum(-1, keepdim=True) + eps)


def check_kda_against_fla(calls, naive, chunk_size=64):
    """Re-run every recorded KDA core call with fla's naive recurrence (and naive chunk form)."""
    worst = {"o_vs_naive_recurrent": 0.0, "state_vs_naive_recurrent": None,
             "o_vs_naive_chunk": None, "state_vs_naive_chunk": None}
    upd = lambda key, d: worst.__setitem__(key, worst_of(worst[key], d))
    for c in calls:
        q, k = fla_l2norm(c["q"].float()), fla_l2norm(c["k"].float())
        v, g, beta = c["v"].float(), c["g"].float(), c["beta"].float()
        o, s = naive.naive_recurrent_kda(q, k, v, g, beta, initial_state=c["h0"], output_final_state=True)
        upd("o_vs_naive_recurrent", (o - c["o"]).abs().max().item())
        if c["ht"] is not None:  # final state only exists when transformers was asked for it (cache)
            upd("state_vs_naive_recurrent", (s - c["ht"]).abs().max().item())
        T = q.shape[1]
        if T == 1:
            continue  # a single decode step: the chunked form adds nothing over the recurrence
        # naive_chunk_kda needs T % chunk_size == 0: pad the tail with k = v = g = beta = 0,
        # which leaves the state untouched (docs/kimi-linear.md §3.3).
        pad = (-T) % chunk_size
        padT = lambda t: F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        oc, sc = naive.naive_chunk_kda(padT(q), padT(k), padT(v), padT(g), F.pad(beta, (0, 0, 0, pad)),
                                       initial_state=c["h0"], output_final_state=True, chunk_size=chunk_size)
        oc = oc[:, :T]
        upd("o_vs_naive_chunk", (oc - c["o"]).abs().max().item())
        if c["ht"] is not None:
            upd("state_vs_naive_chunk", (sc - c["ht"]).abs().max().item())
    return worst


# ---------------------------------------------------------------------------
# Independent forward from the Hub tensors (no transformers code involved)
# ---------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def swiglu(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def independent_forward(raw, W, ids, naive, kv_norm_eps=1e-6):
    """fp32 forward of one sequence straight from the Hub tensors, following docs/kimi-linear.md.

    KDA core: fla's naive_recurrent_kda.  MLA: the absorbed (latent) form of §4,
    a different computation order from transformers' decompressed attention.
    """
    eps = raw["rms_norm_eps"]
    lac = raw["linear_attn_config"]
    kda_layers = {i - 1 for i in lac["kda_layers"]}  # 1-based in config.json
    H, K = lac["num_heads"], lac["head_dim"]
    Hm = raw["num_attention_heads"]
    nope, rope, vd, kvr = raw["qk_nope_head_dim"], raw["qk_rope_head_dim"], raw["v_head_dim"], raw["kv_lora_rank"]
    top_k = raw["num_experts_per_token"]
    T = len(ids)

    h = W["model.embed_tokens.weight"][torch.tensor(ids)]  # [T, D]
    for i in range(raw["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        x = rmsnorm(h, W[p + "input_layernorm.weight"], eps)
        if i in kda_layers:
            def conv_silu(y, w):
                # causal depthwise conv over the projected values; tap j=last is the current token
                taps = w.shape[-1]
                yp = F.pad(y, (0, 0, taps - 1, 0))
                out = sum(w[:, 0, j] * yp[j:j + T] for j in range(taps))
                return F.silu(out)
            q = conv_silu(x @ W[a + "q_proj.weight"].T, W[a + "q_conv1d.weight"]).view(1, T, H, K)
            k = conv_silu(x @ W[a + "k_proj.weight"].T, W[a + "k_conv1d.weight"]).view(1, T, H, K)
            v = conv_silu(x @ W[a + "v_proj.weight"].T, W[a + "v_conv1d.weight"]).view(1, T, H, K)
            q, k = fla_l2norm(q), fla_l2norm(k)
            beta = torch.sigmoid(x @ W[a + "b_proj.weight"].T).view(1, T, H)
            f = (x @ W[a + "f_a_proj.weight"].T) @ W[a + "f_b_proj.weight"].T
            gk = -torch.exp(W[a + "A_log"].reshape(H, 1)) * F.softplus(
                (f + W[a + "dt_bias"]).view(T, H, K), beta=1.0, threshold=20.0)
            o, _ = naive.naive_recurrent_kda(q, k, v, gk.view(1, T, H, K), beta, scale=K ** -0.5)
            z = ((x @ W[a + "g_a_proj.weight"].T) @ W[a + "g_b_proj.weight"].T).view(T, H, K)
            y = rmsnorm(o.view(T, H, K), W[a + "o_norm.weight"], eps) * torch.sigmoid(z)
            h = h + y.reshape(T, H * K) @ W[a + "o_proj.weight"].T
        else:
            qh = (x @ W[a + "q_proj.weight"].T).view(T, Hm, nope + rope)
            qn, qp = qh[..., :nope], qh[..., nope:]
            ckv = x @ W[a + "kv_a_proj_with_mqa.weight"].T
            c = rmsnorm(ckv[:, :kvr], W[a + "kv_a_layernorm.weight"], kv_norm_eps)  # [T, kvr]
            kp = ckv[:, kvr:]                                                       # [T, rope], no RoPE
            kvb = W[a + "kv_b_proj.weight"].view(Hm, nope + vd, kvr)
            w_uk, w_uv = kvb[:, :nope], kvb[:, nope:]                               # [Hm, nope, kvr], [Hm, vd, kvr]
            q_lat = torch.einsum("thn,hnc->thc", qn, w_uk)                          # absorbed query [T, Hm, kvr]
            s = (torch.einsum("thc,sc->hts", q_lat, c) + torch.einsum("thr,sr->hts", qp, kp))
            s = s * (nope + rope) ** -0.5
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            pr = torch.softmax(s, dim=-1)
            o_lat = torch.einsum("hts,sc->thc", pr, c)                              # [T, Hm, kvr]
            o = torch.einsum("thc,hvc->thv", o_lat, w_uv)                           # [T, Hm, vd]
            h = h + o.reshape(T, Hm * vd) @ W[a + "o_proj.weight"].T
        x = rmsnorm(h, W[p + "post_attention_layernorm.weight"], eps)
        if i < raw.get("first_k_dense_replace", 1):
            m = p + "mlp."
            h = h + swiglu(x, W[m + "gate_proj.weight"], W[m + "up_proj.weight"], W[m + "down_proj.weight"])
        else:
            m = p + "block_sparse_moe."
            prob = torch.sigmoid(x @ W[m + "gate.weight"].T)                 # [T, E]
            choice = prob + W[m + "gate.e_score_correction_bias"]              # bias only selects
            sel = choice.topk(top_k, dim=-1).indices
            wsel = prob.gather(1, sel)
            if raw.get("moe_renormalize", True):
                wsel = wsel / wsel.sum(-1, keepdim=True)
            wsel = wsel * raw["routed_scaling_factor"]
            out = swiglu(x, W[m + "shared_experts.gate_proj.weight"], W[m + "shared_experts.up_proj.weight"],
                         W[m + "shared_experts.down_proj.weight"])
            for t in range(T):
                for j in range(top_k):
                    e = int(sel[t, j])
                    ex = f"{m}experts.{e}."
                    out[t] += wsel[t, j] * swiglu(x[t], W[ex + "w1.weight"], W[ex + "w3.weight"], W[ex + "w2.weight"])
            h = h + out
    h = rmsnorm(h, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return h @ head.T


# ---------------------------------------------------------------------------
# Decode check with transformers' cache
# ---------------------------------------------------------------------------

def decode_logits(model, ids, split):
    """Logits from a prefill of ids[:split] followed by one-token steps with the cache."""
    cache = DynamicCache(config=model.config)
    out = []
    chunks = [ids[:split]] + [[t] for t in ids[split:]] if split > 0 else [[t] for t in ids]
    for chunk in chunks:
        r = model(input_ids=torch.tensor([chunk]), cache=cache, use_cache=True)
        cache = r.cache
        out.append(r.logits[0].float())
    return torch.cat(out, dim=0)


# ---------------------------------------------------------------------------

def parse_tokens(args):
    text = args.tokens
    if args.tokens_file:
        with open(args.tokens_file) as f:
            text = f.read()
    if not text:
        raise SystemExit("give --tokens or --tokens-file")
    ids = [int(t) for t in text.replace(",", " ").split()]
    if not ids:
        raise SystemExit("empty token list")
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + *.safetensors)")
    ap.add_argument("--tokens", help="comma- or space-separated token ids")
    ap.add_argument("--tokens-file", help="file with token ids (comma/space/newline separated)")
    ap.add_argument("--out", required=True, help="output: raw little-endian float32 logits [n_tokens][vocab]")
    ap.add_argument("--summary", help="JSON summary path (default: OUT with .json appended)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: reproducible reductions; 0: torch default)")
    ap.add_argument("--no-fla-check", action="store_true", help="skip the KDA core check against fla naive")
    ap.add_argument("--no-decode-check", action="store_true", help="skip prefill-vs-decode with the cache")
    ap.add_argument("--no-independent-check", action="store_true",
                    help="skip the from-scratch forward from the Hub tensors")
    ap.add_argument("--no-hash", action="store_true", help="do not hash the checkpoint files")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="max abs logit / KDA-output difference accepted by the checks (default 1e-4)")
    args = ap.parse_args()

    ids = parse_tokens(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()

    with open(os.path.join(args.model, "config.json")) as f:
        raw = json.load(f)
    vocab = raw["vocab_size"]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise SystemExit(f"token ids out of range [0, {vocab}): {bad[:10]}")

    naive = None
    if not args.no_fla_check or not args.no_independent_check:
        naive = load_fla_naive()
        if naive is None:
            raise SystemExit("fla-core is not installed (needed for fla/ops/kda/naive.py); "
                             "pip install fla-core, or pass --no-fla-check --no-independent-check")

    # ---- load with transformers, everything in fp32, plain eager paths
    model, info = KimiLinearForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    model.eval()
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            raise SystemExit(f"transformers loading reported {key}: {info[key]}")
    cfg = model.config
    check_config(raw, cfg)

    hub, stored_dtypes = load_hub_tensors(args.model)
    n_checked = check_weights(model, hub, cfg)
    gated = check_gated_norm(model)
    facts = check_modules(model, cfg)

    summary = {
        "model_dir": os.path.abspath(args.model),
        "tokens": ids,
        "n_tokens": len(ids),
        "vocab": vocab,
        "logits_file": os.path.abspath(args.out),
        "logits_format": "raw little-endian float32, row-major [n_tokens][vocab]",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "fla-core": pkg_version("fla-core"),
            "flash-linear-attention": pkg_version("flash-linear-attention"),
            "safetensors": pkg_version("safetensors"),
            "numpy": pkg_version("numpy"),
        },
        "transformers_kimi_linear_file": hf_kimi.__file__,
        "fla_naive_file": FLA_NAIVE_PATH,
        "compute_dtype": "float32",
        "checkpoint_dtypes": sorted(set(stored_dtypes.values())),
        "weights_checked_against_hub_names": n_checked,
        "gated_norm": gated,
        "facts": facts,
    }
    if not args.no_hash:
        files = [os.path.join(args.model, "config.json")] + safetensors_files(args.model)
        summary["sha256"] = {os.path.basename(p): sha256_file(p) for p in files}

    # ---- the reference prefill (KDA core calls recorded for the fla check)
    rec = KdaRecorder()
    rec.install()
    rec.enabled = not args.no_fla_check
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    rec.enabled = False
    assert logits.shape == (len(ids), vocab)
    if not torch.isfinite(logits).all():
        raise SystemExit("non-finite logits")

    checks, failed = {}, []

    def judge(name, value):
        checks[name] = value
        if value is not None and not value <= args.tol:
            failed.append(f"{name} = {value:.3e} > tol {args.tol:.1e}")

    if not args.no_fla_check:
        kda_calls = rec.calls
        rec.calls = []
        worst = check_kda_against_fla(kda_calls, naive)
        checks["kda_core_calls"] = len(kda_calls)
        checks["kda_core_kinds"] = sorted({c["kind"] for c in kda_calls})
        for k, v in worst.items():
            judge("kda_" + k, v)

    if not args.no_decode_check:
        with torch.inference_mode():
            rec.enabled = not args.no_fla_check
            dec = decode_logits(model, ids, 0)
            split = len(ids) // 2
            two = decode_logits(model, ids, split) if split > 1 else None
            rec.enabled = False
        judge("decode_token_by_token_vs_prefill_max_abs", (dec - logits).abs().max().item())
        if two is not None:
            judge(f"prefill_{split}_then_decode_vs_prefill_max_abs", (two - logits).abs().max().item())
        checks["decode_argmax_equal"] = bool((dec.argmax(-1) == logits.argmax(-1)).all())
        if not args.no_fla_check:
            # decode steps run transformers' recurrent form with a carried state; re-check those too
            worst = check_kda_against_fla(rec.calls, naive)
            checks["kda_core_calls_during_decode"] = len(rec.calls)
            for k, v in worst.items():
                judge("kda_decode_" + k, v)
            rec.calls = []
    rec.uninstall()

    if not args.no_independent_check:
        with torch.inference_mode():
            ind = independent_forward(raw, hub, ids, naive, kv_norm_eps=facts.get("kv_a_layernorm_eps", 1e-6))
        judge("independent_forward_vs_transformers_max_abs", (ind - logits).abs().max().item())
        checks["independent_argmax_equal"] = bool((ind.argmax(-1) == logits.argmax(-1)).all())

    summary["checks"] = checks
    summary["checks_tolerance"] = args.tol
    summary["checks_failed"] = failed
    summary["argmax"] = logits.argmax(-1).tolist()
    summary["max_logit"] = [round(v, 6) for v in logits.max(-1).values.tolist()]
    summary["logits_abs_max"] = logits.abs().max().item()
    summary["seconds"] = round(time.time() - t0, 2)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    logits.contiguous().numpy().astype("<f4").tofile(args.out)
    summary_path = args.summary or args.out + ".json"
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")

    print(f"wrote {args.out} ({len(ids)} x {vocab} float32) and {summary_path}")
    for k, v in checks.items():
        print(f"  {k}: {v}")
    print(f"  gated norm: {gated}")
    print(f"  argmax: {summary['argmax']}")
    if failed:
        print("CHECKS FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Hostile-file cases for the model formats: GGUF fields, GGUF metadata values, safetensors
fields and config.json (see builder.py for what a case is)."""
import json
import struct

from builder import MODEL, MODEL_SERVE, first_2d, key_offset, patch_u64
from formats import F32, I32, U32, U64, Gguf

def gguf_cases(b):
    G = "formats"
    blob = b.gguf_blob
    b.gguf_case(G, "gguf.magic", "gguf_magic", lambda g: b"GGUX" + blob[4:], r"magic|GGUF")
    b.gguf_case(G, "gguf.version", "gguf_version", lambda g: setattr(g, "version", 99), r"version")
    b.gguf_case(G, "gguf.counts", "gguf_tensor_count", lambda g: patch_u64(blob, 8, 2**64 - 1),
                r"tensor|count")
    b.gguf_case(G, "gguf.counts", "gguf_kv_count", lambda g: patch_u64(blob, 16, 2**63),
                r"count|key|kv")
    b.gguf_case(G, "gguf.strings", "gguf_key_length", lambda g: patch_u64(blob, 24, 2**63),
                r"length|string|key")
    name_at = key_offset(blob, "general.name") + 4
    b.gguf_case(G, "gguf.strings", "gguf_string_value_length",
                lambda g: patch_u64(blob, name_at, 2**40), r"general\.name|string|length")
    tokens_at = key_offset(blob, "tokenizer.ggml.tokens") + 8
    b.gguf_case(G, "gguf.arrays", "gguf_array_length", lambda g: patch_u64(blob, tokens_at, 2**40),
                r"tokenizer\.ggml\.tokens|array")

    def kv_type(g):
        g.find("general.file_type")[1] = 99
    b.gguf_case(G, "gguf.kv_types", "gguf_unknown_value_type", kv_type, r"type")

    def array_type(g):
        kv = g.find("tokenizer.ggml.tokens")
        kv[2] = struct.pack("<I", 99) + kv[2][4:]
    b.gguf_case(G, "gguf.arrays", "gguf_array_elem_type", array_type, r"tokenizer\.ggml\.tokens|type")

    def wrong_kv_type(g):
        g.set_string("kimi-linear.block_count", "eight")
    b.gguf_case(G, "gguf.kv_types", "gguf_block_count_string", wrong_kv_type, r"block_count")

    def missing_key(g):
        g.remove("kimi-linear.embedding_length")
    b.gguf_case(G, "gguf.metadata", "gguf_missing_key", missing_key, r"embedding_length")
    b.gguf_case(G, "gguf.metadata", "gguf_architecture",
                lambda g: g.set_string("general.architecture", "llama"), r"architecture")

    def dup_key(g):
        g.kvs.append(list(g.find("general.name")))
    b.gguf_case(G, "gguf.metadata", "gguf_duplicate_key", dup_key, r"general\.name|duplicate|twice")

    def dup_tensor(g):
        g.tensors[1][0] = g.tensors[0][0]
    b.gguf_case(G, "gguf.tensors", "gguf_duplicate_tensor", dup_tensor, r"duplicate|twice")

    def ndims(g):
        g.tensors[0][1] = g.tensors[0][1] + [1, 1, 1, 1]
    b.gguf_case(G, "gguf.tensors", "gguf_ndims", ndims, r"dim")

    def zero_dim(g):
        g.tensors[0][1][0] = 0
    b.gguf_case(G, "gguf.tensors", "gguf_zero_dim", zero_dim, r"dim|zero|shape")

    def overflow_dims(g):
        g.tensors[0][1] = [2**62, 2**62]
    b.gguf_case(G, "gguf.tensors", "gguf_overflow_dims", overflow_dims, r"overflow|dim|size|large")

    def tensor_type(g):
        g.tensors[0][2] = 99
    b.gguf_case(G, "gguf.tensors", "gguf_tensor_type", tensor_type, r"type")

    def offset_range(g):
        g.tensors[-1][3] = len(g.data) + 4096
    b.gguf_case(G, "gguf.offsets", "gguf_offset_out_of_range", offset_range,
                r"offset|beyond|range|data")

    def offset_misaligned(g):
        g.tensors[-1][3] += 1
    b.gguf_case(G, "gguf.offsets", "gguf_offset_misaligned", offset_misaligned, r"align|offset")
    for value, label in ((0, "zero"), (3, "odd"), (2**31, "huge")):
        def alignment(g, value=value):
            blob2 = g.serialize()  # padded at 32; then only the key's value changes
            g2 = Gguf(blob2)
            out = bytearray(blob2)
            at = key_offset(blob2, "general.alignment") + 4 if g2.find("general.alignment") else None
            if at is None:
                g.set_scalar("general.alignment", U32, 32)
                out = bytearray(g.serialize())
                at = key_offset(bytes(out), "general.alignment") + 4
            struct.pack_into("<I", out, at, value)
            return bytes(out)
        b.gguf_case(G, "gguf.alignment", f"gguf_alignment_{label}", alignment, r"align")
    b.gguf_case(G, "gguf.truncation", "gguf_truncated_data", lambda g: blob[:-4096],
                r"beyond|truncat|short|range|offset|data", commands=MODEL_SERVE)
    b.gguf_case(G, "gguf.truncation", "gguf_truncated_header", lambda g: blob[:200],
                r"truncat|beyond|end|remain")
    b.gguf_case(G, "gguf.truncation", "gguf_empty", lambda g: b"", r"model\.gguf")

    def shape_mismatch(g):
        t = g.tensor("token_embd.weight")
        t[1] = list(reversed(t[1]))
    b.gguf_case(G, "gguf.model_tensors", "gguf_tensor_shape", shape_mismatch, r"token_embd")

    b.gguf_case(G, "gguf.model_tensors", "gguf_vocab_size_mismatch",
                lambda g: g.set_scalar("kimi-linear.vocab_size", U32,
                                       struct.unpack("<I", g.find("kimi-linear.vocab_size")[2])[0] + 1),
                r"token_embd|output|vocab")

    def missing_tensor(g):
        g.tensor("output_norm.weight")[0] = "output_norm.renamed"
    b.gguf_case(G, "gguf.model_tensors", "gguf_missing_tensor", missing_tensor, r"output_norm")


def gguf_value_cases(b):
    """Config values in GGUF metadata: validated against their meaning (positive, finite, within
    what the shapes allow)."""
    M = "model-values"
    ctx = "kimi-linear.context_length"
    for label, vtype, value in (("0", U32, 0), ("neg5", I32, -5), ("2p40", U64, 2**40),
                                ("2p62", U64, 2**62)):
        b.gguf_case(M, "gguf.context_length", f"gguf_context_{label}",
                    lambda g, t=vtype, v=value: g.set_scalar(ctx, t, v), r"context", MODEL_SERVE)
    for label, value in (("inf", float("inf")), ("nan", float("nan"))):
        b.gguf_case(M, "gguf.float_values", f"gguf_expert_scale_{label}",
                    lambda g, v=value: g.set_scalar("kimi-linear.expert_weights_scale", F32, v),
                    r"expert_weights_scale|routed_scaling_factor")
        b.gguf_case(M, "gguf.float_values", f"gguf_rms_eps_{label}",
                    lambda g, v=value: g.set_scalar("kimi-linear.attention.layer_norm_rms_epsilon",
                                                    F32, v), r"epsilon|eps")
    b.gguf_case(M, "gguf.int_values", "gguf_block_count_2p40",
                lambda g: g.set_scalar("kimi-linear.block_count", U64, 2**40), r"block_count|layer")
    b.gguf_case(M, "gguf.int_values", "gguf_embedding_length_0",
                lambda g: g.set_scalar("kimi-linear.embedding_length", U32, 0),
                r"embedding_length|hidden")
    b.gguf_case(M, "gguf.int_values", "gguf_expert_count_huge",
                lambda g: g.set_scalar("kimi-linear.expert_count", U32, 2**31), r"expert")

    def one_token_more(g):
        vocab = struct.unpack("<I", g.find("kimi-linear.vocab_size")[2])[0]
        tokens = g.string_array("tokenizer.ggml.tokens")[:vocab]
        tokens.append(b"<|evil|>")
        g.set_string_array("tokenizer.ggml.tokens", tokens)
        kv = g.find("tokenizer.ggml.token_type")
        if kv is not None:
            count = len(tokens)
            kv[2] = struct.pack("<IQ", I32, count) + struct.pack(f"<{count}i", *([1] * (count - 1) + [3]))
    # A tokenizer longer than the model loads (with a warning; requests naming the extra id get a
    # 400, tests/api/model_vocab_test.cpp); the id itself cannot be embedded.
    b.gguf_case(M, "gguf.vocab", "gguf_tokens_beyond_vocab", one_token_more,
                r"token id 640 is outside \[0, 640\)", ("eval",), extra={"eval": ["--tokens", "1,640"]})


def safetensors_cases(b):
    G = "formats"
    blob = b.st_blob
    b.st_case(G, "st.header_len", "st_header_len_huge", lambda s: patch_u64(blob, 0, 2**63),
              r"header")
    b.st_case(G, "st.header_len", "st_header_len_beyond_file",
              lambda s: patch_u64(blob, 0, len(blob)), r"header")
    b.st_case(G, "st.header_json", "st_header_not_json",
              lambda s: s.serialize(b'{"a": [1, 2'), r"header|JSON")
    b.st_case(G, "st.header_json", "st_header_not_utf8",
              lambda s: s.serialize(b'{"\xff\xfe": {}}'), r"UTF-8|utf|header")

    def dup(s):
        text = json.dumps(s.header)
        first = s.tensor_names()[0]
        entry = json.dumps(s.header[first])
        return s.serialize(("{" + json.dumps(first) + ": " + entry + ", " + text[1:]).encode())
    b.st_case(G, "st.header_json", "st_duplicate_key", dup, r"duplicate|twice")

    def dtype(s):
        s.header[s.tensor_names()[0]]["dtype"] = "F99"
    b.st_case(G, "st.dtypes", "st_unknown_dtype", dtype, r"dtype|F99", MODEL_SERVE)

    def offsets_beyond(s):
        last = s.tensor_names()[-1]
        s.header[last]["data_offsets"][1] += 4096
    b.st_case(G, "st.offsets", "st_offset_beyond_data", offsets_beyond, r"offset|data|bytes")

    def offsets_overlap(s):
        names = s.tensor_names()
        s.header[names[1]]["data_offsets"] = list(s.header[names[0]]["data_offsets"])
    b.st_case(G, "st.offsets", "st_offsets_overlap", offsets_overlap, r"offset|overlap|gap")

    def offsets_reversed(s):
        t = s.header[s.tensor_names()[0]]["data_offsets"]
        t.reverse()
    b.st_case(G, "st.offsets", "st_offsets_reversed", offsets_reversed, r"offset")

    def shape_bytes(s):
        s.header[s.tensor_names()[0]]["shape"] = [1]
    b.st_case(G, "st.shapes", "st_shape_vs_bytes", shape_bytes, r"shape|bytes")

    def shape_negative(s):
        s.header[s.tensor_names()[0]]["shape"] = [-1, 4]
    b.st_case(G, "st.shapes", "st_shape_negative", shape_negative, r"shape|dim")

    def shape_huge(s):
        s.header[s.tensor_names()[0]]["shape"] = [2**62, 2**62]
    b.st_case(G, "st.shapes", "st_shape_overflow", shape_huge, r"shape|overflow|bytes|large")
    b.st_case(G, "st.truncation", "st_truncated_data", lambda s: blob[:-1000],
              r"bytes|data|offset|truncat")
    b.st_case(G, "st.truncation", "st_empty", lambda s: b"", r"model\.safetensors")

    def renamed(s):
        h = {("model.norm.renamed" if k == "model.norm.weight" else k): v for k, v in s.header.items()}
        s.header = h
    b.st_case(G, "st.model_tensors", "st_missing_tensor", renamed, r"model\.norm")

    def transposed(s):
        name = first_2d((k, v["shape"]) for k, v in s.header.items() if k != "__metadata__")
        s.header[name]["shape"] = list(reversed(s.header[name]["shape"]))
    b.st_case(G, "st.model_tensors", "st_tensor_shape", transposed, r"shape|\[")


def config_cases(b):
    G = "formats"
    b.config_case(G, "config.syntax", "config_not_json", lambda c: "{\"hidden_size\": ",
                  r"config\.json")
    b.config_case(G, "config.syntax", "config_not_object", lambda c: "[1, 2]", r"config\.json")
    b.config_case(G, "config.syntax", "config_nan_literal",
                  lambda c: json.dumps(dict(c, rms_norm_eps=float("nan"))), r"config\.json")

    def missing(c):
        del c["hidden_size"]
    b.config_case(G, "config.types", "config_missing_key", missing, r"hidden_size")
    b.config_case(G, "config.types", "config_string_for_int",
                  lambda c: c.update(hidden_size="128"), r"hidden_size")
    b.config_case(G, "config.types", "config_float_for_int",
                  lambda c: c.update(num_hidden_layers=8.5), r"num_hidden_layers")
    b.config_case(G, "config.types", "config_null_object",
                  lambda c: c.update(linear_attn_config=None), r"linear_attn_config")
    b.config_case(G, "config.shapes", "config_heads_not_dividing",
                  lambda c: c.update(num_attention_heads=3), r"head")
    b.config_case(G, "config.shapes", "config_vocab_size_mismatch",
                  lambda c: c.update(vocab_size=c["vocab_size"] + 1), r"embed_tokens|lm_head|vocab")
    b.config_case(G, "config.shapes", "config_layer_out_of_range",
                  lambda c: c["linear_attn_config"].update(kda_layers=[1, 2, 99]),
                  r"kda_layers|layer")
    M = "model-values"
    for key in ("model_max_length", "max_position_embeddings"):
        for label, value in (("0", 0), ("neg5", -5), ("2p40", 2**40), ("2p62", 2**62)):
            def edit(c, key=key, value=value):
                c.pop("model_max_length", None)
                c[key] = value
            b.config_case(M, "config.context", f"config_{key}_{label}", edit,
                          r"context|max_position|model_max_length", MODEL_SERVE)
    for key, value in (("hidden_size", -1), ("hidden_size", 0), ("vocab_size", 0),
                       ("num_hidden_layers", 2**40), ("intermediate_size", 2**62),
                       ("num_experts", 2**31)):
        b.config_case(M, "config.int_values", f"config_{key}_{value}",
                      lambda c, k=key, v=value: c.update({k: v}), key)
    b.config_case(M, "config.float_values", "config_routed_scale_inf",
                  lambda c: json.dumps(c).replace(
                      f"\"routed_scaling_factor\": {json.dumps(c['routed_scaling_factor'])}",
                      "\"routed_scaling_factor\": 1e999"), r"routed_scaling_factor")
    b.config_case(M, "config.float_values", "config_rms_eps_negative",
                  lambda c: c.update(rms_norm_eps=-1e-6), r"rms_norm_eps")

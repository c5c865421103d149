"""The cases of hostile_files.py: each builds one defective model (or flag) from the micro model.

A case names its group (who owns the rule it tests), its class (the field class), the commands
that read the damaged file, and `expect`: a regex the single `kiln: error:` line must match (the
file, key or field at fault).
"""
import json
import os
import struct

from formats import ARRAY, F32, I32, STRING, U32, U64, Gguf, Safetensors

MODEL = ("inspect", "eval")
MODEL_SERVE = ("inspect", "eval", "serve")
TOKENIZER = ("generate",)
TOKENIZER_SERVE = ("generate", "serve")
IS_ROOT = os.geteuid() == 0


class Case:
    def __init__(self, group, cls, name, model, commands, expect, extra=None, expect_ok=False):
        self.group, self.cls, self.name, self.model = group, cls, name, model
        self.commands, self.expect, self.extra = commands, expect, extra or {}
        self.expect_ok, self.cwd = expect_ok, None


# --- special files put in the place of a file --------------------------------------------------

def fifo(path):
    os.mkfifo(path)


def dev_zero(path):
    os.symlink("/dev/zero", path)


def directory(path):
    os.mkdir(path)


def dangling(path):
    os.symlink(path + ".absent", path)


def loop(path):
    os.symlink(os.path.basename(path), path)


def sparse(size):
    def make(path):
        with open(path, "wb") as f:
            f.truncate(size)
    return make


def unreadable(path):
    with open(path, "w") as f:
        f.write("{}")
    os.chmod(path, 0)


SPECIAL = {"fifo": fifo, "dev_zero": dev_zero, "directory": directory, "dangling": dangling,
           "symlink_loop": loop}
if not IS_ROOT:  # root reads a mode-000 file anyway
    SPECIAL["unreadable"] = unreadable


class Builder:
    def __init__(self, base, out):
        self.hf = os.path.join(base, "hf")
        self.gguf_path = os.path.join(base, "model.gguf")
        with open(self.gguf_path, "rb") as f:
            self.gguf_blob = f.read()
        with open(os.path.join(self.hf, "model.safetensors"), "rb") as f:
            self.st_blob = f.read()
        with open(os.path.join(self.hf, "config.json")) as f:
            self.config = json.load(f)
        with open(os.path.join(self.hf, "tokenizer_config.json")) as f:
            self.tok_config = json.load(f)
        self.out = out
        self.cases = []
        os.makedirs(out)

    def dir_for(self, name):
        d = os.path.join(self.out, name.replace("/", "_"))
        os.makedirs(d)
        return d

    def hf_variant(self, name, replace):
        """An HF directory linking every base file except those in `replace` (file name -> bytes,
        str, or a maker called with the path; None deletes the file)."""
        d = self.dir_for(name)
        for f in os.listdir(self.hf):
            if f not in replace:
                os.symlink(os.path.join(self.hf, f), os.path.join(d, f))
        for f, what in replace.items():
            p = os.path.join(d, f)
            if what is None:
                continue
            if callable(what):
                what(p)
            else:
                with open(p, "wb") as fh:
                    fh.write(what.encode() if isinstance(what, str) else what)
        return d

    def gguf_file(self, name, blob_or_maker):
        p = os.path.join(self.dir_for(name), "model.gguf")
        if callable(blob_or_maker):
            blob_or_maker(p)
        else:
            with open(p, "wb") as f:
                f.write(blob_or_maker)
        return p

    def add(self, group, cls, name, model, commands, expect, **kw):
        self.cases.append(Case(group, cls, name, model, commands, expect, **kw))

    # -- GGUF helpers
    def gguf(self):
        return Gguf(self.gguf_blob)

    def gguf_case(self, group, cls, name, edit, expect, commands=MODEL):
        g = self.gguf()
        blob = edit(g)
        self.add(group, cls, name, self.gguf_file(name, blob if blob is not None else g.serialize()),
                 commands, expect)

    # -- safetensors / config helpers
    def st(self):
        return Safetensors(self.st_blob)

    def st_case(self, group, cls, name, edit, expect, commands=MODEL):
        s = self.st()
        blob = edit(s)
        self.add(group, cls, name,
                 self.hf_variant(name, {"model.safetensors": blob if blob is not None else s.serialize()}),
                 commands, expect)

    def config_case(self, group, cls, name, edit, expect, commands=MODEL):
        c = json.loads(json.dumps(self.config))
        text = edit(c)
        self.add(group, cls, name,
                 self.hf_variant(name, {"config.json": text if text is not None else json.dumps(c)}),
                 commands, expect)

    def tok_config_case(self, group, cls, name, edit, expect, commands=TOKENIZER):
        c = json.loads(json.dumps(self.tok_config))
        text = edit(c)
        self.add(group, cls, name,
                 self.hf_variant(name, {"tokenizer_config.json":
                                        text if text is not None else json.dumps(c)}),
                 commands, expect)


def patch_u64(blob, offset, value):
    b = bytearray(blob)
    struct.pack_into("<Q", b, offset, value)
    return bytes(b)


def key_offset(blob, key):
    """Offset of the value type field of `key` in a GGUF blob."""
    k = key.encode()
    return blob.index(struct.pack("<Q", len(k)) + k) + 8 + len(k)


def first_2d(names_shapes):
    for name, shape in names_shapes:
        if len(shape) == 2 and shape[0] != shape[1]:
            return name
    raise ValueError("no 2-D tensor")


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
    b.gguf_case(M, "gguf.vocab", "gguf_tokens_beyond_vocab", one_token_more,
                r"vocab|token", TOKENIZER_SERVE)


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


def index_cases(b):
    G = "files"
    names = Safetensors(b.st_blob).tensor_names()
    good = {"metadata": {}, "weight_map": {n: "model.safetensors" for n in names}}

    def index_case(cls, name, index, expect, commands=MODEL, more=None):
        replace = {"model.safetensors.index.json": index}
        replace.update(more or {})
        b.add(G, cls, name, b.hf_variant(name, replace), commands, expect)
    index_case("index.json", "index_not_json", "{\"weight_map\": {", r"index")
    index_case("index.json", "index_no_weight_map", json.dumps({"metadata": {}}), r"weight_map")
    bad = json.loads(json.dumps(good))
    bad["weight_map"][names[0]] = 7
    index_case("index.json", "index_value_not_string", json.dumps(bad), r"weight_map|string")
    bad = json.loads(json.dumps(good))
    bad["weight_map"][names[0]] = "../model.safetensors"
    index_case("index.json", "index_shard_path_escape", json.dumps(bad), r"plain file name|\.\.")
    bad = json.loads(json.dumps(good))
    bad["weight_map"][names[0]] = "model-00002-of-00002.safetensors"
    index_case("index.json", "index_shard_missing", json.dumps(bad), r"model-00002")
    bad = json.loads(json.dumps(good))
    bad["weight_map"]["model.bogus.weight"] = "model.safetensors"
    index_case("index.json", "index_tensor_not_in_shard", json.dumps(bad), r"model\.bogus")
    dup = json.dumps(good)
    dup = dup.replace("{\"metadata\"", "{\"weight_map\": {}, \"metadata\"", 1)
    index_case("index.json", "index_duplicate_key", dup, r"duplicate|twice|weight_map")
    for kind, maker in SPECIAL.items():
        index_case("special_files", f"index_{kind}", maker, r"index\.json", MODEL)
    index_case("size_caps", "index_huge", sparse(101_000_000), r"index\.json.*(bytes|limit)")
    # A FIFO as the shard the index names.
    b.add(G, "special_files", "index_shard_fifo",
          b.hf_variant("index_shard_fifo", {"model.safetensors.index.json": json.dumps(good),
                                            "model.safetensors": fifo}),
          MODEL_SERVE, r"model\.safetensors.*FIFO")


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


def special_file_cases(b):
    """Every model file replaced by something that is not a regular file."""
    G = "files"
    for kind, maker in SPECIAL.items():
        serve = MODEL_SERVE if kind == "fifo" else MODEL
        b.add(G, "special_files", f"config_{kind}", b.hf_variant(f"config_{kind}",
                                                                 {"config.json": maker}),
              serve, r"config\.json")
        b.add(G, "special_files", f"shard_{kind}", b.hf_variant(f"shard_{kind}",
                                                                {"model.safetensors": maker}),
              MODEL, r"model\.safetensors")
        b.add(G, "special_files", f"gguf_{kind}", b.gguf_file(f"gguf_{kind}", maker), MODEL,
              r"model\.gguf")
    b.add(G, "special_files", "config_missing", b.hf_variant("config_missing", {"config.json": None}),
          MODEL, r"config\.json")
    b.add(G, "size_caps", "config_huge", b.hf_variant("config_huge",
                                                      {"config.json": sparse((16 << 20) + 1)}),
          MODEL, r"config\.json.*bytes")
    b.add(G, "special_files", "model_path_missing", os.path.join(b.out, "no-such-model"), MODEL,
          r"no-such-model")


def tokenizer_cases(b):
    G = "files"
    for kind, maker in SPECIAL.items():
        serve = TOKENIZER_SERVE if kind in ("fifo", "dev_zero") else TOKENIZER
        b.add(G, "special_files", f"tiktoken_{kind}",
              b.hf_variant(f"tiktoken_{kind}", {"tiktoken.model": maker}), serve, r"tiktoken\.model")
        b.add(G, "special_files", f"tokenizer_config_{kind}",
              b.hf_variant(f"tokenizer_config_{kind}", {"tokenizer_config.json": maker}), TOKENIZER,
              r"tokenizer_config\.json")
    b.add(G, "size_caps", "tiktoken_huge",
          b.hf_variant("tiktoken_huge", {"tiktoken.model": sparse((64 << 20) + 1)}), TOKENIZER,
          r"tiktoken\.model.*bytes")
    b.add(G, "size_caps", "tokenizer_config_huge",
          b.hf_variant("tokenizer_config_huge", {"tokenizer_config.json": sparse((16 << 20) + 1)}),
          TOKENIZER, r"tokenizer_config\.json.*bytes")
    for kind in ("fifo", "directory"):
        b.add(G, "special_files", f"chat_template_{kind}",
              b.hf_variant(f"chat_template_{kind}", {"chat_template.jinja": SPECIAL[kind]}),
              TOKENIZER_SERVE, r"chat_template\.jinja", extra={"generate": ["--chat"]})

    with open(os.path.join(b.hf, "tiktoken.model"), "rb") as f:
        lines = f.read().decode().splitlines()
    T = "tokenizer"

    def tiktoken_case(name, text, expect):
        b.add(T, "tiktoken.lines", name, b.hf_variant(name, {"tiktoken.model": text}), TOKENIZER,
              expect)
    tiktoken_case("tiktoken_bad_base64", "\n".join(lines[:5] + ["@@@@ 5"] + lines[6:]),
                  r"tiktoken\.model:6")
    tiktoken_case("tiktoken_rank_negative", "\n".join(lines[:5] + ["IQ== -1"] + lines[6:]),
                  r"tiktoken\.model:6.*rank")
    tiktoken_case("tiktoken_rank_huge", "\n".join(lines + ["IQ== 1099511627776"]),
                  r"tiktoken\.model.*rank")
    tiktoken_case("tiktoken_rank_twice", "\n".join(lines + [lines[3]]), r"tiktoken\.model.*twice")
    tiktoken_case("tiktoken_rank_gap", "\n".join(lines[:3] + lines[4:]), r"tiktoken\.model.*gap")
    tiktoken_case("tiktoken_empty", "", r"tiktoken\.model")
    tiktoken_case("tiktoken_no_space", "\n".join(lines[:2] + ["IQ==5"] + lines[3:]),
                  r"tiktoken\.model:3")

    def added(key, entry=None):
        def edit(c):
            c.setdefault("added_tokens_decoder", {})[key] = entry or {"content": "<|x|>",
                                                                      "special": True}
        return edit
    for label, key in (("int32_max", "2147483647"), ("2p40", "1099511627776"), ("negative", "-1"),
                       ("not_a_number", "abc"), ("past_the_added_range", str(608 + 65536))):
        b.tok_config_case(T, "tokenizer.added_ids", f"added_id_{label}", added(key),
                          r"added_tokens_decoder", TOKENIZER_SERVE if label == "int32_max" else TOKENIZER)
    b.tok_config_case(T, "tokenizer.added_ids", "added_id_twice_by_leading_zero",
                      lambda c: c["added_tokens_decoder"].update(
                          {"0" + next(iter(c["added_tokens_decoder"])): {"content": "<|y|>"}}),
                      r"added_tokens_decoder.*twice")

    def dup_key_text(c):
        text = json.dumps(c)
        first = next(iter(c["added_tokens_decoder"]))
        return text.replace("\"added_tokens_decoder\": {",
                            "\"added_tokens_decoder\": {" + json.dumps(first) +
                            ": {\"content\": \"<|z|>\"}, ", 1)
    b.tok_config_case(T, "tokenizer.added_ids", "added_id_duplicate_key", dup_key_text,
                      r"duplicate|twice")
    b.tok_config_case(T, "tokenizer.added_ids", "added_no_content",
                      added("700", {"special": True}), r"content")
    b.tok_config_case(T, "tokenizer.syntax", "tokenizer_config_not_json", lambda c: "{\"a\": ",
                      r"tokenizer_config\.json")
    b.tok_config_case(T, "tokenizer.syntax", "added_not_object",
                      lambda c: c.update(added_tokens_decoder=[1, 2]), r"added_tokens_decoder")
    b.tok_config_case("model-values", "tokenizer.vocab", "added_id_above_vocab_size",
                      added("900"), r"vocab", TOKENIZER_SERVE)


def flag_file_cases(b):
    """Files named by flags: --config (topology), --api-key-file, --tokens-file."""
    G = "files"
    gguf = b.gguf_path
    d = b.dir_for("flag_files")
    for kind, maker in list(SPECIAL.items()) + [("huge", sparse((1 << 20) + 1))]:
        p = os.path.join(d, f"topology_{kind}.yaml")
        maker(p)
        b.add(G, "special_files" if kind != "huge" else "size_caps", f"topology_{kind}", gguf,
              ("eval", "serve") if kind in ("fifo", "huge") else ("eval",), rf"topology_{kind}",
              extra={"*": ["--config", p]})
        p = os.path.join(d, f"keys_{kind}")
        maker(p)
        b.add(G, "special_files" if kind != "huge" else "size_caps", f"api_key_file_{kind}", gguf,
              ("serve",), rf"api_key_file.*keys_{kind}", extra={"serve": ["--api-key-file", p]})
        p = os.path.join(d, f"tokens_{kind}")
        (sparse((64 << 20) + 1) if kind == "huge" else maker)(p)
        b.add(G, "special_files" if kind != "huge" else "size_caps", f"tokens_file_{kind}", gguf,
              ("eval",), rf"--tokens-file.*tokens_{kind}", extra={"eval": ["--tokens-file", p]})


def memory_cases(b):
    """Topology keys inside their documented ranges whose cache cannot fit in memory."""
    G = "files"
    gguf = b.gguf_path
    for label, sets in (("max_pages_int32_max", ["cache.max_pages=2147483647"]),
                        ("max_pages_2p40", ["cache.max_pages=1099511627776"]),
                        ("pages_of_4096_tokens", ["cache.page_tokens=4096",
                                                  "cache.max_pages=1048576"])):
        args = [a for s in sets for a in ("--set", s)]
        b.add(G, "memory", f"cache_{label}", gguf, ("serve",), r"cache\.max_pages.*(needs|pages)",
              extra={"serve": args})
    # A model whose context is long enough that cache.max_context=1e8 really sizes the cache.
    c = json.loads(json.dumps(b.config))
    c["model_max_length"] = 100_000_000
    hf = b.hf_variant("cache_max_context_1e8", {"config.json": json.dumps(c)})
    b.add(G, "memory", "cache_max_context_1e8", hf, ("serve",),
          r"cache\.max_context|model_max_length|context",
          extra={"serve": ["--set", "cache.max_context=100000000"]})


def control_cases(b):
    b.add("control", "valid", "control_gguf", b.gguf_path, ("inspect", "eval"), "", expect_ok=True)
    b.add("control", "valid", "control_hf", b.hf, ("inspect", "eval"), "", expect_ok=True)
    b.add("control", "valid", "control_gguf_generate", b.gguf_path, ("generate",), "",
          expect_ok=True)
    b.add("model-values", "valid", "control_hf_generate", b.hf, ("generate",), "", expect_ok=True)


def build_all(base, out):
    b = Builder(base, out)
    for make in (control_cases, gguf_cases, gguf_value_cases, safetensors_cases, index_cases,
                 config_cases, special_file_cases, tokenizer_cases, flag_file_cases,
                 memory_cases):
        make(b)
    return b.cases

"""Hostile-file cases for everything around the weights: the safetensors index, special files in
the place of each file, tokenizer files, files named by flags, cache keys too large for memory,
and the valid controls (see builder.py for what a case is)."""
import json
import os

import cases_formats
from builder import (MODEL, MODEL_SERVE, SPECIAL, TOKENIZER, TOKENIZER_SERVE, Builder, fifo,
                     sparse)
from formats import Safetensors

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
                       ("not_a_number", "abc"), ("past_the_added_range", str(1 << 20))):
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
    for make in (control_cases, cases_formats.gguf_cases, cases_formats.gguf_value_cases,
                 cases_formats.safetensors_cases, index_cases, cases_formats.config_cases,
                 special_file_cases, tokenizer_cases, flag_file_cases, memory_cases):
        make(b)
    return b.cases

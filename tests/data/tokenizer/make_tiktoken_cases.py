#!/usr/bin/env python3
"""Builds the tiktoken cross-check data for kiln's tokenizer tests: the micro Kimi GGUF's vocabulary
(tests/data/golden/kimi-micro-f32.gguf) rewritten in Kimi's Hugging Face layout
(kimi_micro_hf/tiktoken.model + tokenizer_config.json), and kimi_micro_tiktoken_cases.jsonl: texts
with the ids tiktoken itself produces with Kimi's pre-tokenizer pattern and allowed_special="all".

Needs `pip install gguf tiktoken`. Deterministic (fixed seed).
"""
import base64
import json
import os
import random

import gguf
import tiktoken

HERE = os.path.dirname(os.path.abspath(__file__))
GGUF = os.path.join(HERE, "..", "golden", "kimi-micro-f32.gguf")

KIMI_PAT = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


def gpt2_byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def read_vocab():
    reader = gguf.GGUFReader(GGUF)
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    tfield = reader.fields["tokenizer.ggml.token_type"]
    types = [int(tfield.parts[i][0]) for i in tfield.data]
    dec = gpt2_byte_decoder()
    ranks, specials = {}, {}
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == 1:
            ranks[bytes(dec[c] for c in t)] = i
        else:
            specials[t] = i
    return ranks, specials


PIECES = ["the", "The", " quick", "brown", "fox", "DON'T", "he's", "we'LL", "I'm", "you're",
          "1234567", "3.14159", "65536", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ",
          "中文", "测试", "日本語", "、", "。", "😀", "👍🏽", "x\u0301", "e\u0301\u0302", "ǅ", "Ǆungla",
          "ЗДРАВСТВУЙ", "мир", "١٢٣", "café", "naïve", "(", ")", "()", "{}", "!!", "?", ".", ",",
          "'", "\"", "#", "$", "%", "->", "==", "<|im_end|>", "<|im_user|>", "[BOS]", "<|im_middle|>",
          "\u0085", "\u00a0", "\u3000", "\u2028", "hello", "world", "model", "attention", "layer",
          "HTTPServer", "isOK", "foo.bar", "a", "A", "0", "_", "-", "—", "…"]


def random_text(rng):
    n = rng.randint(1, 12)
    return "".join(rng.choice(PIECES) for _ in range(n))


def main():
    ranks, specials = read_vocab()
    n_ranks = len(ranks)
    assert sorted(ranks.values()) == list(range(n_ranks))
    out_dir = os.path.join(HERE, "kimi_micro_hf")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tiktoken.model"), "w") as f:
        for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(b).decode()} {r}\n")
    config = {
        "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for c, i in sorted(specials.items(), key=lambda kv: kv[1])},
        "bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]", "unk_token": "[UNK]",
        "tokenizer_class": "TikTokenTokenizer",
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    enc = tiktoken.Encoding("kimi-micro", pat_str=KIMI_PAT, mergeable_ranks=ranks,
                            special_tokens=specials)
    rng = random.Random(20240917)
    texts = [random_text(rng) for _ in range(400)]
    texts += [" " * 40 + "x", "A" * 300, "a" * 301 + "B", "9" * 50, "\n" * 7 + " " * 3]
    with open(os.path.join(HERE, "kimi_micro_tiktoken_cases.jsonl"), "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "ids": enc.encode(t, allowed_special="all")},
                               ensure_ascii=False) + "\n")
    print(f"{n_ranks} ranks, {len(specials)} specials, {len(texts)} cases")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns a CUDA .cu file into a host .cpp for the CUDA emulator (tools/cuda_emu/emu.h).

Rewrites, outside comments and string literals:
  name<<<grid, block[, smem[, stream]]>>>(args);   (name may be qualified or a template-id)
      -> ::kiln_emu::launch("name", __FILE__, __LINE__, grid, block, smem, stream, &name, args);
  extern __shared__ [__align__(n)] T name[];
      -> T* const name = ::kiln_emu::dynamic_shared<T>();
  __shared__ [__align__(n)] T name[dims]...;
      -> auto& name = ::kiln_emu::block_shared<T[dims]...>([] {});
and registers every __global__ function with the emulator (::kiln_emu::register_kernel, appended
to the line of the kernel's closing brace): its __launch_bounds__ maximum and the static
__shared__ declarations of its call tree (the kernel and every function of the file its body
names, transitively; a conservative bound: nvcc may drop unused ones), which the emulator counts
against the target's limits at every launch. Both are evaluated at namespace scope after the
kernel, so they must not name the kernel's template parameters or its local constants.
Every rewrite keeps the line count of the text it replaces, and the output starts with a #line
directive naming the original file, so diagnostics and __FILE__/__LINE__ point into the .cu.

Usage: cu2cpp.py IN.cu OUT.cpp
"""
import re
import sys


def code_mask(src):
    """A list of booleans: True where src[i] is code (not a comment, string or char literal)."""
    mask = [True] * len(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                mask[k] = False
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                mask[k] = False
            i = j
        elif c in "\"'":
            # A digit separator (1'000) is not a character literal.
            if c == "'" and i > 0 and src[i - 1].isalnum():
                i += 1
                continue
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                mask[k] = False
            i = j + 1
        else:
            i += 1
    return mask


def match_forward(src, i, mask=None):
    """Index just past the bracket that closes the one at src[i] ((), [] and {} nested; with a
    code_mask, brackets in comments and literals do not count)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    j = i
    while j < len(src):
        ch = src[j]
        if mask is not None and not mask[j]:
            pass
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                raise ValueError(f"unbalanced '{ch}' at offset {j}")
            if not stack:
                return j + 1
        j += 1
    raise ValueError(f"no closing bracket for offset {i}")


def split_top_level(text):
    """Splits on commas outside (), [] and {}."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def callee_start(src, end):
    """Start of the callee expression that ends at src[end - 1] (identifier, ::, template-id)."""
    j = end
    while True:
        while j > 0 and src[j - 1].isspace():
            j -= 1
        if j > 0 and src[j - 1] == ">":  # a template argument list: match '<' backwards
            depth = 0
            k = j - 1
            while k >= 0:
                if src[k] in ">)":
                    depth += 1
                elif src[k] in "<(":
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            j = k
            while j > 0 and src[j - 1].isspace():
                j -= 1
        name = ident_before(src, j)
        if not name:
            raise ValueError(f"no kernel name before <<< at offset {end}")
        j -= len(name)
        if j >= 2 and src[j - 2:j] == "::":
            j -= 2
            continue
        return j


def rewrite_launches(src):
    mask = code_mask(src)
    out, pos = [], 0
    i = src.find("<<<")
    while i >= 0:
        if not mask[i]:
            i = src.find("<<<", i + 3)
            continue
        start = callee_start(src, i)
        callee = src[start:i].strip()
        cfg_end = src.find(">>>", i + 3)
        if cfg_end < 0:
            raise ValueError(f"unterminated <<< at offset {i}")
        cfg = split_top_level(src[i + 3:cfg_end])
        if not 2 <= len(cfg) <= 4:
            raise ValueError(f"launch configuration of {callee} has {len(cfg)} parts")
        cfg += ["0"] * (3 - len(cfg)) + ([] if len(cfg) == 4 else ["0"])
        j = cfg_end + 3
        while src[j].isspace():
            j += 1
        if src[j] != "(":
            raise ValueError(f"no argument list after the launch of {callee}")
        args_end = match_forward(src, j)
        args = src[j + 1:args_end - 1].strip()
        k = args_end
        while src[k].isspace():
            k += 1
        if src[k] != ";":
            raise ValueError(f"a launch of {callee} is not a statement of its own")
        original = src[start:k + 1]
        name = re.sub(r"\s+", " ", callee)
        parts = [f'"{name}"', "__FILE__", "__LINE__"] + [f"({c})" for c in cfg] + [f"&{callee}"]
        if args:
            parts.append(args)
        call = "::kiln_emu::launch(" + ", ".join(parts) + ");"
        call = call.replace("\n", " ")
        out.append(src[pos:start])
        out.append(call + "\n" * original.count("\n"))
        pos = k + 1
        i = src.find("<<<", pos)
    out.append(src[pos:])
    return "".join(out)


EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([\w:\s<>,*]+?)\s*(\w+)\s*\[\s*\]\s*;")
STATIC_SHARED = re.compile(
    r"__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([\w:<>,\s]+?)\s+(\w+)\s*((?:\[[^\];]*\]\s*)*);")


def rewrite_shared(src):
    def sub_all(pattern, repl, text):
        mask = code_mask(text)
        out, pos = [], 0
        for m in pattern.finditer(text):
            if not mask[m.start()]:
                continue
            out.append(text[pos:m.start()])
            new = repl(m)
            out.append(new + "\n" * (m.group(0).count("\n") - new.count("\n")))
            pos = m.end()
        out.append(text[pos:])
        return "".join(out)

    src = sub_all(EXTERN_SHARED,
                  lambda m: f"{m.group(1).strip()}* const {m.group(2)} = "
                            f"::kiln_emu::dynamic_shared<{m.group(1).strip()}>();", src)
    def static_decl(m):
        dims = re.sub(r"\s+", "", m.group(3))
        return f"auto& {m.group(2)} = ::kiln_emu::block_shared<{m.group(1).strip()}{dims}>([] {{}});"

    src = sub_all(STATIC_SHARED, static_decl, src)
    return src


FUNC_KEYWORD = re.compile(r"\b(__global__|__device__)\b")
IDENT = re.compile(r"[A-Za-z_]\w*")


def ident_before(src, end):
    """The identifier that ends at src[end - 1], skipping spaces ("" when none)."""
    j = end
    while j > 0 and src[j - 1].isspace():
        j -= 1
    k = j
    while k > 0 and (src[k - 1].isalnum() or src[k - 1] == "_"):
        k -= 1
    return src[k:j]


def next_code(src, mask, i, chars):
    """The first index >= i of a code character in chars (len(src) when none)."""
    while i < len(src) and not (mask[i] and src[i] in chars):
        i += 1
    return i


def find_functions(src):
    """The __global__ and __device__ function definitions: dicts of name, kind, bounds (the
    __launch_bounds__ maximum's text or None) and body [begin, end) (end just past the '}')."""
    mask = code_mask(src)
    funcs = []
    for m in FUNC_KEYWORD.finditer(src):
        if not mask[m.start()] or any(f["begin"] <= m.start() < f["end"] for f in funcs):
            continue
        j, bounds = m.end(), None
        while True:
            k = next_code(src, mask, j, "(;{=")
            if k == len(src) or src[k] != "(":
                k = -1  # a variable, not a function
                break
            name = ident_before(src, k)
            if name == "__launch_bounds__":
                bounds = split_top_level(src[k + 1:match_forward(src, k, mask) - 1])[0]
            elif name not in ("__align__", "alignas", "decltype"):
                break
            j = match_forward(src, k, mask)
        if k < 0:
            continue
        b = next_code(src, mask, match_forward(src, k, mask), ";{")
        if b == len(src) or src[b] == ";":
            continue  # a declaration
        funcs.append({"name": name, "kind": m.group(1), "bounds": bounds, "begin": b,
                      "end": match_forward(src, b, mask)})
    return funcs


def static_shared_decls(src, mask, begin, end):
    """(type, dims, align) of each static __shared__ declaration in src[begin:end]."""
    decls = []
    for m in STATIC_SHARED.finditer(src, begin, end):
        if not mask[m.start()] or src[:m.start()].rstrip().endswith("extern"):
            continue
        align = re.match(r"__shared__\s+__align__\s*\(\s*(\d+)", m.group(0))
        decls.append((m.group(1).strip(), re.sub(r"\s+", "", m.group(3)),
                      align.group(1) if align else None))
    return decls


def kernel_registrations(src):
    """(offset, text) pairs: the registration to append after each kernel's closing brace."""
    mask = code_mask(src)
    funcs = find_functions(src)
    by_name = {}
    for f in funcs:
        f["decls"] = static_shared_decls(src, mask, f["begin"], f["end"])
        by_name.setdefault(f["name"], []).append(f)
    for f in funcs:
        names = {m.group(0) for m in IDENT.finditer(src, f["begin"], f["end"]) if mask[m.start()]}
        f["calls"] = [g for n in names if n in by_name for g in by_name[n] if g is not f]
    out = []
    for idx, f in enumerate(x for x in funcs if x["kind"] == "__global__"):
        seen, todo, decls = set(), [f], []
        while todo:
            g = todo.pop()
            if id(g) in seen:
                continue
            seen.add(id(g))
            decls += g["decls"]
            todo += g["calls"]
        parts = []
        for t, dims, align in decls:
            al = f"alignof({t}{dims})" if align is None else f"{align}"
            parts.append(f"::kiln_emu::SharedDecl{{sizeof({t}{dims}), {al}}}")
        text = (f" [[maybe_unused]] static const bool kiln_emu_kernel_{idx}_{f['name']} = "
                f"::kiln_emu::register_kernel(__FILE__, \"{f['name']}\", "
                f"{f['bounds'] or '0'}, {{{', '.join(parts)}}});")
        out.append((f["end"], text))
    return out


def register_kernels(src):
    out, pos = [], 0
    for end, text in kernel_registrations(src):
        out += [src[pos:end], text]
        pos = end
    out.append(src[pos:])
    return "".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: cu2cpp.py IN.cu OUT.cpp")
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    try:
        body = rewrite_shared(rewrite_launches(register_kernels(src)))
    except ValueError as e:
        sys.exit(f"{src_path}: {e}")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{src_path}"\n')
        f.write(body)


if __name__ == "__main__":
    main()

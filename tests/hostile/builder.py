"""The case builder of hostile_files.py: a Case, the special files put in the place of a file,
and the Builder that writes each defective model from the micro model.

A case names its group (who owns the rule it tests), its class (the field class), the commands
that read the damaged file, and `expect`: a regex the single `kiln: error:` line must match (the
file, key or field at fault).
"""
import json
import os
import struct

from formats import Gguf, Safetensors

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

    def gguf_case(self, group, cls, name, edit, expect, commands=MODEL, **kw):
        g = self.gguf()
        blob = edit(g)
        self.add(group, cls, name, self.gguf_file(name, blob if blob is not None else g.serialize()),
                 commands, expect, **kw)

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

    def tok_config_case(self, group, cls, name, edit, expect, commands=TOKENIZER, **kw):
        c = json.loads(json.dumps(self.tok_config))
        text = edit(c)
        self.add(group, cls, name,
                 self.hf_variant(name, {"tokenizer_config.json":
                                        text if text is not None else json.dumps(c)}),
                 commands, expect, **kw)


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

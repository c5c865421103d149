"""Minimal GGUF and safetensors readers/writers for the hostile-file generator.

They keep every field as found (GGUF key/values as raw value bytes, tensor infos as parsed
numbers, the data section as bytes), so a case changes one field and writes the file back with
everything else intact. Not a general-purpose library: just enough of both formats (GGUF v3,
safetensors) to build defective variants of a valid file.
"""
import json
import struct

# GGUF value types and the bytes of one scalar of each (string and array are variable).
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_BYTES = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8, I64: 8,
                F64: 8}
SCALAR_FORMAT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
                 BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}


def _value_size(buf, pos, vtype):
    """Bytes taken by one value of type vtype starting at buf[pos]."""
    if vtype in SCALAR_BYTES:
        return SCALAR_BYTES[vtype]
    if vtype == STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return 8 + n
    if vtype == ARRAY:
        etype, count = struct.unpack_from("<IQ", buf, pos)
        size = 12
        if etype in SCALAR_BYTES:
            return size + count * SCALAR_BYTES[etype]
        for _ in range(count):
            size += _value_size(buf, pos + size, etype)
        return size
    raise ValueError(f"unknown GGUF value type {vtype}")


class Gguf:
    """A parsed GGUF file: kvs = [[key, type, raw value bytes]], tensors = [[name, dims, type,
    offset]], data = the bytes after the aligned tensor-info section."""

    def __init__(self, blob):
        if blob[:4] != b"GGUF":
            raise ValueError("not a GGUF file")
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
        pos = 24
        self.kvs = []
        for _ in range(n_kv):
            (n,) = struct.unpack_from("<Q", blob, pos)
            key = blob[pos + 8:pos + 8 + n].decode()
            pos += 8 + n
            (vtype,) = struct.unpack_from("<I", blob, pos)
            pos += 4
            size = _value_size(blob, pos, vtype)
            self.kvs.append([key, vtype, bytes(blob[pos:pos + size])])
            pos += size
        self.tensors = []
        for _ in range(n_tensors):
            (n,) = struct.unpack_from("<Q", blob, pos)
            name = blob[pos + 8:pos + 8 + n].decode()
            pos += 8 + n
            (ndims,) = struct.unpack_from("<I", blob, pos)
            dims = list(struct.unpack_from(f"<{ndims}Q", blob, pos + 4))
            pos += 4 + 8 * ndims
            ttype, offset = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            self.tensors.append([name, dims, ttype, offset])
        align = self.alignment()
        self.data = bytes(blob[(pos + align - 1) // align * align:])

    def alignment(self):
        kv = self.find("general.alignment")
        return struct.unpack("<I", kv[2])[0] if kv is not None else 32

    def find(self, key):
        for kv in self.kvs:
            if kv[0] == key:
                return kv
        return None

    def set_scalar(self, key, vtype, value):
        """Sets (or adds) key to a scalar of vtype."""
        raw = struct.pack(SCALAR_FORMAT[vtype], value)
        kv = self.find(key)
        if kv is None:
            self.kvs.append([key, vtype, raw])
        else:
            kv[1], kv[2] = vtype, raw

    def set_string(self, key, text):
        raw = text.encode() if isinstance(text, str) else text
        kv = self.find(key)
        value = struct.pack("<Q", len(raw)) + raw
        if kv is None:
            self.kvs.append([key, STRING, value])
        else:
            kv[1], kv[2] = STRING, value

    def remove(self, key):
        self.kvs = [kv for kv in self.kvs if kv[0] != key]

    def tensor(self, name):
        for t in self.tensors:
            if t[0] == name:
                return t
        raise KeyError(name)

    def string_array(self, key):
        kv = self.find(key)
        etype, count = struct.unpack_from("<IQ", kv[2], 0)
        assert etype == STRING
        out, pos = [], 12
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", kv[2], pos)
            out.append(kv[2][pos + 8:pos + 8 + n])
            pos += 8 + n
        return out

    def set_string_array(self, key, items):
        body = b"".join(struct.pack("<Q", len(s)) + s for s in items)
        kv = self.find(key)
        kv[1], kv[2] = ARRAY, struct.pack("<IQ", STRING, len(items)) + body

    def serialize(self):
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors), len(self.kvs))
        for key, vtype, raw in self.kvs:
            k = key.encode()
            out += struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + raw
        for name, dims, ttype, offset in self.tensors:
            n = name.encode()
            out += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(dims))
            out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ttype, offset)
        align = self.alignment() or 32
        out += b"\0" * ((-len(out)) % align)
        return bytes(out + self.data)


class Safetensors:
    """A parsed safetensors file: header (dict, insertion order kept) and data bytes."""

    def __init__(self, blob):
        (n,) = struct.unpack_from("<Q", blob, 0)
        self.header = json.loads(blob[8:8 + n])
        self.data = bytes(blob[8 + n:])

    def serialize(self, header_text=None):
        text = header_text if header_text is not None else json.dumps(self.header).encode()
        return struct.pack("<Q", len(text)) + text + self.data

    def tensor_names(self):
        return [k for k in self.header if k != "__metadata__"]

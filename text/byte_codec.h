// Byte-level helpers shared by the tokenizer, its loaders and writers: strict UTF-8 scanning,
// the GPT-2 byte<->unicode mapping that GGUF vocabularies store tokens in, and base64 as used by
// tiktoken.model files. Pure functions, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::text {

// Length (1..4) of the well-formed UTF-8 character starting at s[i] (no overlongs, surrogates or
// values above U+10FFFF), or 0 when the bytes there are not a complete valid character.
size_t utf8_char_len(std::string_view s, size_t i);
// True when s[i..] is a proper prefix of some valid UTF-8 character (more bytes could complete it).
bool utf8_incomplete_prefix(std::string_view s, size_t i);
// Length of the maximal invalid subpart at s[i] (>= 1): the longest prefix of a valid sequence,
// or 1 byte. One U+FFFD replaces each such subpart.
size_t utf8_invalid_len(std::string_view s, size_t i);
// Appends the UTF-8 encoding of code point `cp` (must be <= 0x10FFFF and not a surrogate).
void append_utf8(std::string& out, uint32_t cp);

// GPT-2 byte-to-unicode form of raw bytes (each byte becomes one code point).
std::string gpt2_bytes_to_unicode(std::string_view bytes);
// Inverse; nullopt when a character is not in the GPT-2 byte alphabet.
std::optional<std::string> gpt2_unicode_to_bytes(std::string_view text);

std::string base64_encode(std::string_view bytes);
// Standard alphabet with '=' padding (padding optional); nullopt on any other character.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace kiln::text

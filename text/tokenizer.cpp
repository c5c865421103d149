// Tokenizer encode/decode and the streaming decoder. Loading lives in tokenizer_hf.cpp and
// tokenizer_gguf.cpp.
#include "text/tokenizer.h"

#include <algorithm>

#include "text/byte_codec.h"
#include "text/tokenizer_state.h"

namespace kiln::text {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Position, length and id of the first special token in text[from..], longest match first.
struct SpecialHit {
  size_t pos = std::string_view::npos;
  size_t len = 0;
  int32_t id = -1;
};

SpecialHit next_special(const TokenizerState& s, std::string_view text, size_t from) {
  for (size_t p = from; p < text.size(); ++p) {
    const auto& bucket = s.special_by_first_byte[static_cast<uint8_t>(text[p])];
    for (int32_t id : bucket) {
      const std::string& content = s.id_bytes[id];
      if (text.compare(p, content.size(), content) == 0) return SpecialHit{p, content.size(), id};
    }
  }
  return {};
}

void encode_ordinary(const TokenizerState& s, std::string_view text, std::vector<int32_t>& out) {
  std::vector<std::string_view> pieces;
  s.pre.split(text, pieces);
  for (std::string_view piece : pieces) s.bpe.encode_piece(piece, out);
}

}  // namespace

void index_specials(TokenizerState& state) {
  for (auto& bucket : state.special_by_first_byte) bucket.clear();
  state.special_ids.clear();
  for (size_t id = 0; id < state.id_bytes.size(); ++id) {
    const std::string& content = state.id_bytes[id];
    if (!state.special[id] || content.empty()) continue;
    if (!state.special_ids.emplace(content, static_cast<int32_t>(id)).second) continue;
    state.special_by_first_byte[static_cast<uint8_t>(content[0])].push_back(static_cast<int32_t>(id));
  }
  for (auto& bucket : state.special_by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
      return state.id_bytes[a].size() > state.id_bytes[b].size();
    });
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  const TokenizerState& s = *state_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (!allow_special || s.special_ids.empty()) {
    encode_ordinary(s, text, out);
    return out;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const SpecialHit hit = next_special(s, text, pos);
    const size_t end = hit.pos == std::string_view::npos ? text.size() : hit.pos;
    if (end > pos) encode_ordinary(s, text.substr(pos, end - pos), out);
    if (hit.id < 0) break;
    out.push_back(hit.id);
    pos = hit.pos + hit.len;
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || id >= vocab_size()) return kEmpty;
  return state_->id_bytes[id];
}

std::optional<int32_t> Tokenizer::find_token(std::string_view content) const {
  const auto it = state_->special_ids.find(content);
  if (it != state_->special_ids.end()) return it->second;
  const int32_t id = state_->bpe.find(content);
  if (id >= 0) return id;
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(state_->id_bytes.size()); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && state_->special[id] != 0;
}

std::vector<int32_t> Tokenizer::eos_ids() const {
  std::vector<int32_t> ids;
  for (std::string_view name : {"[EOS]", "<|im_end|>", "[EOT]"}) {
    const auto it = state_->special_ids.find(name);
    if (it != state_->special_ids.end()) ids.push_back(it->second);
  }
  const auto eos = state_->file_eos;
  if (eos && std::find(ids.begin(), ids.end(), *eos) == ids.end()) ids.push_back(*eos);
  return ids;
}

std::optional<int32_t> Tokenizer::bos_id() const { return state_->bos; }

PreTokenizer Tokenizer::pre_tokenizer() const { return state_->pre.kind(); }

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  return drain(false);
}

std::string StreamDecoder::flush() { return drain(true); }

std::string StreamDecoder::drain(bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const size_t n = utf8_char_len(pending_, i);
    if (n > 0) {
      out.append(pending_, i, n);
      i += n;
    } else if (!final && utf8_incomplete_prefix(pending_, i)) {
      break;  // may still complete with the next token
    } else {
      out += kReplacement;
      i += utf8_invalid_len(pending_, i);
    }
  }
  pending_.erase(0, i);
  return out;
}

}  // namespace kiln::text

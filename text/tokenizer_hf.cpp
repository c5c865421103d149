// Tokenizer::from_hf_dir: Kimi's Hugging Face tokenizer files. tiktoken.model gives the BPE ranks
// (id = rank); tokenizer_config.json gives the added (special) tokens, bos_token and eos_token.
#include <algorithm>
#include <charconv>
#include <map>

#include <boost/json.hpp>

#include "text/byte_codec.h"
#include "text/tokenizer.h"
#include "text/tokenizer_state.h"
#include "shard/input_file.h"
#include "shard/json_strict.h"

namespace kiln::text {
namespace {

constexpr int32_t kReservedSpecials = 256;
// Added (special) token ids lie in [ranks, ranks + kMaxAddedIds): the id table is dense, so an id
// from the file sizes an allocation. Real vocabularies add a few hundred (Kimi: 256).
constexpr int64_t kMaxAddedIds = int64_t{1} << 16;

StatusOr<std::vector<std::string>> parse_tiktoken(const std::string& path, std::string_view text) {
  std::map<int64_t, std::string> by_rank;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos) {
      return invalid_argument("{}:{}: expected '<base64> <rank>'", path, line_no);
    }
    const auto bytes = base64_decode(line.substr(0, sp));
    if (!bytes || bytes->empty()) {
      return invalid_argument("{}:{}: bad base64 token '{}'", path, line_no, line.substr(0, sp));
    }
    const std::string_view rank_text = line.substr(sp + 1);
    int64_t rank = -1;
    const auto [end, ec] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    if (ec != std::errc() || end != rank_text.data() + rank_text.size() || rank < 0 || rank > INT32_MAX) {
      return invalid_argument("{}:{}: bad rank '{}'", path, line_no, rank_text);
    }
    if (!by_rank.emplace(rank, *bytes).second) {
      return invalid_argument("{}:{}: rank {} appears twice", path, line_no, rank);
    }
  }
  if (by_rank.empty()) return invalid_argument("{}: no tokens", path);
  if (by_rank.rbegin()->first + 1 != static_cast<int64_t>(by_rank.size())) {
    return invalid_argument("{}: ranks are not 0..{} without gaps", path, by_rank.size() - 1);
  }
  std::vector<std::string> ranks;
  ranks.reserve(by_rank.size());
  for (auto& [rank, bytes] : by_rank) ranks.push_back(std::move(bytes));
  return ranks;
}

// Parses JSON; a syntax error names the file and line, a key given twice in one object the key.
StatusOr<boost::json::value> parse_json(const std::string& path, const std::string& text) {
  boost::json::stream_parser parser;
  boost::system::error_code ec;
  const size_t used = parser.write(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    const size_t at = std::min(used, text.size());
    const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + at, '\n'));
    return invalid_argument("{}:{}: invalid JSON: {}", path, line, ec.message());
  }
  if (auto strict = parse_json_strict(text, "JSON"); !strict.ok()) {
    return strict.status().with_context(path);
  }
  return parser.release();
}

// "bos_token": "[BOS]" or {"content": "[BOS]", ...}.
std::optional<std::string> token_content(const boost::json::object& config, std::string_view key) {
  const auto* v = config.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_object()) {
    const auto* c = v->get_object().if_contains("content");
    if (c != nullptr && c->is_string()) return std::string(c->get_string());
  }
  return std::nullopt;
}

Status add_specials(const std::string& path, const boost::json::object& config, int32_t n_ranks,
                    std::map<int64_t, std::string>& specials) {
  const auto* decoder = config.if_contains("added_tokens_decoder");
  if (decoder == nullptr) return Status::ok_status();
  if (!decoder->is_object()) return invalid_argument("{}: added_tokens_decoder is not an object", path);
  for (const auto& [key, entry] : decoder->get_object()) {
    int64_t id = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || end != key.data() + key.size() || id < n_ranks ||
        id >= n_ranks + kMaxAddedIds) {
      return invalid_argument("{}: added_tokens_decoder key '{}' is not an id in [{}, {}) (the "
                              "tiktoken ranks, then at most {} added ids)", path,
                              std::string_view(key), n_ranks, n_ranks + kMaxAddedIds, kMaxAddedIds);
    }
    const auto* content = entry.is_object() ? entry.get_object().if_contains("content") : nullptr;
    if (content == nullptr || !content->is_string() || content->get_string().empty()) {
      return invalid_argument("{}: added_tokens_decoder[{}] has no string 'content'", path, id);
    }
    if (!specials.emplace(id, std::string(content->get_string())).second) {
      return invalid_argument("{}: added_tokens_decoder gives id {} twice", path, id);
    }
  }
  return Status::ok_status();
}

}  // namespace

StatusOr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  const std::string model_path = dir + "/tiktoken.model";
  const std::string config_path = dir + "/tokenizer_config.json";
  KILN_ASSIGN_OR_RETURN(const std::string model_text, read_input_file(model_path, kMaxVocabFileBytes));
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> ranks, parse_tiktoken(model_path, model_text));
  KILN_ASSIGN_OR_RETURN(const std::string config_text, read_input_file(config_path, kMaxJsonFileBytes));
  KILN_ASSIGN_OR_RETURN(const boost::json::value config_value, parse_json(config_path, config_text));
  if (!config_value.is_object()) return invalid_argument("{}: not a JSON object", config_path);
  const boost::json::object& config = config_value.get_object();

  auto state = std::make_shared<TokenizerState>();
  auto bpe = BytePairEncoder::from_ranks(ranks);
  if (!bpe.ok()) return bpe.status().with_context(model_path);
  state->bpe = std::move(bpe).value();
  KILN_ASSIGN_OR_RETURN(state->pre, PreTokenizerRegex::create(PreTokenizer::kKimiK2));

  const auto n_ranks = static_cast<int32_t>(ranks.size());
  std::map<int64_t, std::string> specials;
  KILN_RETURN_IF_ERROR(add_specials(config_path, config, n_ranks, specials));
  for (int32_t id = n_ranks; id < n_ranks + kReservedSpecials; ++id) {
    specials.emplace(id, fmt::format("<|reserved_token_{}|>", id));
  }
  const int64_t vocab = specials.rbegin()->first + 1;
  state->id_bytes = std::move(ranks);
  state->id_bytes.resize(vocab);
  state->special.assign(vocab, 0);
  for (int64_t id = n_ranks; id < vocab; ++id) {
    const auto it = specials.find(id);
    state->id_bytes[id] = it != specials.end() ? it->second : fmt::format("<|reserved_token_{}|>", id);
    state->special[id] = 1;
  }
  index_specials(*state);
  auto lookup = [&](std::string_view key) -> std::optional<int32_t> {
    const auto content = token_content(config, key);
    if (!content) return std::nullopt;
    const auto it = state->special_ids.find(*content);
    if (it != state->special_ids.end()) return it->second;
    const int32_t id = state->bpe.find(*content);
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  };
  state->bos = lookup("bos_token");
  state->file_eos = lookup("eos_token");
  return Tokenizer(std::move(state));
}

}  // namespace kiln::text

// API keys: the key file and the constant-time check of an Authorization header.
#include "cluster/api/auth.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>
#include <string_view>

#include "shard/input_file.h"

namespace kiln::serve {

namespace {

// The credentials of "Bearer <token>" (scheme in any case, then spaces/tabs); nullopt for any
// other scheme or shape.
std::optional<std::string_view> bearer_token(std::string_view header) {
  static constexpr std::string_view kBearer = "bearer";
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  if (header.size() <= kBearer.size() || !blank(header[kBearer.size()])) return std::nullopt;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kBearer[i]) return std::nullopt;
  }
  std::string_view token = header.substr(kBearer.size());
  while (!token.empty() && blank(token.front())) token.remove_prefix(1);
  while (!token.empty() && blank(token.back())) token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace

bool authorized(const std::string& header, const std::vector<std::string>& keys) {
  const std::optional<std::string_view> token = bearer_token(header);
  if (!token) return false;
  const std::string_view given = *token;
  bool ok = false;
  for (const std::string& key : keys) {
    // Every byte of the longer string is looked at whatever matches, so the time taken does not
    // tell how much of a key was right.
    const size_t n = std::max(given.size(), key.size());
    unsigned diff = given.size() == key.size() ? 0u : 1u;
    for (size_t i = 0; i < n; ++i) {
      const unsigned char a = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
      const unsigned char b = i < key.size() ? static_cast<unsigned char>(key[i]) : 0;
      diff |= static_cast<unsigned>(a ^ b);
    }
    ok |= diff == 0;
  }
  return ok;
}

StatusOr<std::vector<std::string>> read_api_keys(const std::string& path) {
  auto text = read_input_file(path, kMaxKeyFileBytes);
  if (!text.ok()) return text.status().with_context("server.api_key_file");
  std::vector<std::string> keys;
  std::string line;
  std::istringstream in(*text);
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    keys.push_back(line.substr(b));
  }
  if (keys.empty()) return kiln::invalid_argument("server.api_key_file: {} holds no key", path);
  return keys;
}

}  // namespace kiln::serve

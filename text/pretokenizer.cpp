// PCRE2 pre-tokenizers. The Kimi K2 pattern (kimi-linear.md §6.2) is written for Rust's regex
// (tiktoken), whose `[X&&[^\p{Han}]]` intersection PCRE2 cannot parse; each such class becomes
// `(?:(?!\p{sc:Han})[X])`. Rust's bare `\p{Han}` is the Script property while PCRE2's is Script
// Extensions (which adds CJK punctuation such as U+3001), hence `sc:`. `\s` is spelled out as the
// Unicode White_Space set that Rust matches (PCRE2's UCP `\s` leaves out U+0085).
#include "text/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text/byte_codec.h"

namespace kiln::text {
namespace {

#define KILN_WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define KILN_UPPERISH "(?:(?!\\p{sc:Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define KILN_LOWERISH "(?:(?!\\p{sc:Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define KILN_CONTRACTION "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

constexpr std::string_view kKimiPattern =
    "\\p{sc:Han}+"
    "|[^\\r\\n\\p{L}\\p{N}]?" KILN_UPPERISH "*" KILN_LOWERISH "+" KILN_CONTRACTION "?"
    "|[^\\r\\n\\p{L}\\p{N}]?" KILN_UPPERISH "+" KILN_LOWERISH "*" KILN_CONTRACTION "?"
    "|\\p{N}{1,3}"
    "| ?[^" KILN_WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" KILN_WS "]*[\\r\\n]+"
    "|[" KILN_WS "]+(?![^" KILN_WS "])"
    "|[" KILN_WS "]+";

constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" KILN_WS "\\p{L}\\p{N}]+"
    "|[" KILN_WS "]+(?![^" KILN_WS "])|[" KILN_WS "]+";

#undef KILN_WS
#undef KILN_UPPERISH
#undef KILN_LOWERISH
#undef KILN_CONTRACTION

pcre2_code* as_code(const std::shared_ptr<void>& p) { return static_cast<pcre2_code*>(p.get()); }

// Per-thread JIT stack: repeated groups such as `(?:(?!\p{sc:Han})[...])*` keep one frame per
// character, so the 32 KiB default overflows on long letter runs. The reservation is virtual
// memory; pages are committed only as a match needs them.
constexpr size_t kJitStackMax = size_t{256} << 20;

pcre2_match_context* thread_match_context() {
  struct Holder {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, kJitStackMax, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    Holder() {
      if (stack != nullptr && context != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
    }
    ~Holder() {
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local Holder holder;
  return holder.context;
}

bool is_white_space(std::string_view text, size_t pos) {
  static constexpr std::string_view kAscii = "\t\n\v\f\r ";
  return kAscii.find(text[pos]) != std::string_view::npos;
}

// Fallback when PCRE2 gives up (a resource limit): the run of characters up to the next change
// between whitespace and non-whitespace becomes one piece. Never hit on ordinary text.
size_t fallback_piece_len(std::string_view text, size_t pos) {
  const bool ws = is_white_space(text, pos);
  size_t end = pos;
  while (end < text.size() && is_white_space(text, end) == ws) {
    const size_t n = utf8_char_len(text, end);
    end += n > 0 ? n : 1;
  }
  return end - pos;
}

}  // namespace

std::string_view pretokenizer_pattern(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::kKimiK2: return kKimiPattern;
    case PreTokenizer::kGpt2: return kGpt2Pattern;
  }
  return kKimiPattern;
}

StatusOr<PreTokenizerRegex> PreTokenizerRegex::create(PreTokenizer kind) {
  const std::string_view pattern = pretokenizer_pattern(kind);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return internal_error("pre-tokenizer regex does not compile at offset {}: {}", err_offset,
                          reinterpret_cast<const char*>(msg));
  }
  // JIT is an optimisation only: without it pcre2_match interprets the same pattern.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  PreTokenizerRegex r;
  r.kind_ = kind;
  r.code_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
  return r;
}

void PreTokenizerRegex::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  // Regex matching runs only over well-formed UTF-8 runs; each invalid byte is its own piece.
  size_t run_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = utf8_char_len(text, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (i > run_start) split_valid(text.substr(run_start, i - run_start), pieces);
    pieces.push_back(text.substr(i, 1));
    run_start = ++i;
  }
  if (i > run_start) split_valid(text.substr(run_start, i - run_start), pieces);
}

void PreTokenizerRegex::split_valid(std::string_view text,
                                    std::vector<std::string_view>& pieces) const {
  pcre2_code* code = as_code(code_);
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    // The caller validated the UTF-8, so the per-call check (O(n) each time) is skipped.
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md.get(),
                               thread_match_context());
    if (rc == PCRE2_ERROR_NOMATCH) {
      pieces.push_back(text.substr(pos));
      return;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    if (rc < 0 || ov[1] <= pos) {
      const size_t n = fallback_piece_len(text, pos);
      pieces.push_back(text.substr(pos, n));
      pos += n;
      continue;
    }
    if (ov[0] > pos) pieces.push_back(text.substr(pos, ov[0] - pos));
    pieces.push_back(text.substr(ov[0], ov[1] - ov[0]));
    pos = ov[1];
  }
}

}  // namespace kiln::text

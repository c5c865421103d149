// The Kimi K2 chat format, rendered in C++ exactly as the Kimi-K2-Instruct jinja template renders
// under Hugging Face transformers (byte-for-byte; tests/data/chat/kimi_k2_cases.json): turns are
// role token + role name + <|im_middle|> + content + <|im_end|>, a default system turn when the
// first message is not a system one, tool declarations, tool calls and tool results.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::text {

// The Kimi K2 template's default system prompt.
inline constexpr std::string_view kKimiK2DefaultSystem =
    "You are Kimi, an AI assistant created by Moonshot AI.";

struct ToolCall {
  std::string id;         // not rendered: the template numbers calls "functions.{name}:{n}" itself
  std::string name;
  std::string arguments;  // JSON text; emitted verbatim, as for an OpenAI "arguments" string
  // When true, `arguments` is JSON to re-serialise the way the template's tojson does (the
  // caller passed an object rather than a string).
  bool arguments_is_json = false;
};

struct ChatMessage {
  std::string role;          // "system", "user", "assistant", "tool" or any other (rendered as system)
  std::string content;
  std::string name;          // replaces the role name in the turn header when not empty
  std::string tool_call_id;  // not rendered by the K2 template (results are matched by order)
  std::vector<ToolCall> tool_calls;
};

struct ChatOptions {
  std::string default_system = std::string(kKimiK2DefaultSystem);
  std::string tools_json;    // JSON array of tool declarations; empty or "[]" declares none
  bool add_generation_prompt = true;
};

// Renders the conversation. tools_json that is not valid JSON is inserted verbatim.
std::string render_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options);

// The default system text a Kimi chat template injects ("<|im_system|>system<|im_middle|>TEXT
// <|im_end|>" written literally in the template), or nullopt when the template has none.
std::optional<std::string> default_system_from_template(std::string_view template_text);

}  // namespace kiln::text

// Kimi K2 chat rendering (see chat_template.h). Mirrors Kimi-K2-Instruct.jinja statement by
// statement; the '\n' after the injected default system turn is what the template's
// `{% endif %}` line leaves behind under trim_blocks/lstrip_blocks.
#include "text/chat_template.h"

#include <deque>

#include "text/python_json.h"

namespace kiln::text {
namespace {

constexpr std::string_view kSystemHeader = "<|im_system|>system<|im_middle|>";
constexpr std::string_view kImEnd = "<|im_end|>";

// Jinja truthiness of the tools value: an empty array/object/string is false.
bool tools_declared(const std::string& tools_json, std::string& rendered) {
  if (tools_json.empty()) return false;
  auto dumped = python_json_reformat(tools_json);
  rendered = dumped.ok() ? *dumped : tools_json;
  return rendered != "[]" && rendered != "{}" && rendered != "\"\"" && rendered != "null" &&
         rendered != "false" && rendered != "0";
}

std::string_view role_token(const std::string& role) {
  if (role == "user") return "<|im_user|>";
  if (role == "assistant") return "<|im_assistant|>";
  return "<|im_system|>";
}

struct ToolCallState {
  std::deque<std::string> pending_ids;  // ids of calls whose results have not been rendered
  int counter = 0;
};

void render_tool_calls(const ChatMessage& m, ToolCallState& state, std::string& out) {
  out += m.content;
  out += "<|tool_calls_section_begin|>";
  for (const ToolCall& call : m.tool_calls) {
    std::string id = "functions." + call.name + ":" + std::to_string(state.counter++);
    out += "<|tool_call_begin|>";
    out += id;
    out += "<|tool_call_argument_begin|>";
    if (call.arguments_is_json) {
      auto dumped = python_json_reformat(call.arguments);
      out += dumped.ok() ? *dumped : call.arguments;
    } else {
      out += call.arguments;
    }
    out += "<|tool_call_end|>";
    state.pending_ids.push_back(std::move(id));
  }
  out += "<|tool_calls_section_end|>";
}

void render_tool_result(const ChatMessage& m, ToolCallState& state, std::string& out) {
  std::string id;
  if (!state.pending_ids.empty()) {
    id = std::move(state.pending_ids.front());
    state.pending_ids.pop_front();
  } else {
    id = "functions." + (m.name.empty() ? std::string("unknown") : m.name) + ":" +
         std::to_string(state.counter);
  }
  out += "## Return of ";
  out += id;
  out += '\n';
  out += m.content;
}

}  // namespace

std::string render_chat(const std::vector<ChatMessage>& messages, const ChatOptions& options) {
  std::string out;
  std::string tools;
  if (tools_declared(options.tools_json, tools)) {
    out += "<|im_system|>tool_declare<|im_middle|>";
    out += tools;
    out += kImEnd;
  }
  ToolCallState state;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system") {
      out += kSystemHeader;
      out += options.default_system;
      out += kImEnd;
      out += '\n';
    }
    out += role_token(m.role);
    out += m.name.empty() ? m.role : m.name;
    out += "<|im_middle|>";
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      render_tool_calls(m, state, out);
    } else if (m.role == "tool") {
      render_tool_result(m, state, out);
    } else {
      out += m.content;
    }
    out += kImEnd;
  }
  if (options.add_generation_prompt) out += "<|im_assistant|>assistant<|im_middle|>";
  return out;
}

std::optional<std::string> default_system_from_template(std::string_view template_text) {
  // The injected turn is the one whose text between the header and <|im_end|> is literal (no
  // template syntax); the header that opens a real system message is followed by `{{`/`{%`/`'`.
  for (size_t pos = template_text.find(kSystemHeader); pos != std::string_view::npos;
       pos = template_text.find(kSystemHeader, pos + 1)) {
    const size_t start = pos + kSystemHeader.size();
    const size_t end = template_text.find(kImEnd, start);
    if (end == std::string_view::npos) break;
    const std::string_view text = template_text.substr(start, end - start);
    if (text.empty() || text.find_first_of("{}%'\"\n") != std::string_view::npos) continue;
    return std::string(text);
  }
  return std::nullopt;
}

}  // namespace kiln::text

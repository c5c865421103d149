// Chat template: every conversation in tests/data/chat/kimi_k2_cases.json (rendered by jinja2 with
// tools/chat_template/render_reference.py) must render byte-for-byte; plus default-system
// extraction and Python-compatible JSON.
#include <fstream>
#include <sstream>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "text/chat_template.h"
#include "text/python_json.h"

namespace kiln::text {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string string_or_empty(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

ChatMessage to_message(const boost::json::object& o) {
  ChatMessage m;
  m.role = string_or_empty(o, "role");
  m.content = string_or_empty(o, "content");
  m.name = string_or_empty(o, "name");
  m.tool_call_id = string_or_empty(o, "tool_call_id");
  if (const auto* calls = o.if_contains("tool_calls"); calls != nullptr && calls->is_array()) {
    for (const auto& c : calls->get_array()) {
      const auto& fn = c.at("function").as_object();
      ToolCall call;
      call.id = string_or_empty(c.as_object(), "id");
      call.name = string_or_empty(fn, "name");
      const auto& args = fn.at("arguments");
      call.arguments_is_json = !args.is_string();
      call.arguments = args.is_string() ? std::string(args.get_string()) : boost::json::serialize(args);
      m.tool_calls.push_back(std::move(call));
    }
  }
  return m;
}

TEST(ChatTemplate, MatchesJinjaReferenceByteForByte) {
  const std::string text = read_all(std::string(KILN_TEST_DATA_DIR) + "/chat/kimi_k2_cases.json");
  boost::system::error_code ec;
  const boost::json::value cases = boost::json::parse(text, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_GE(cases.as_array().size(), 20u);
  for (const auto& c : cases.as_array()) {
    const auto& obj = c.as_object();
    std::vector<ChatMessage> messages;
    for (const auto& m : obj.at("messages").as_array()) messages.push_back(to_message(m.as_object()));
    ChatOptions options;
    if (!obj.at("tools").is_null()) options.tools_json = boost::json::serialize(obj.at("tools"));
    options.add_generation_prompt = obj.at("add_generation_prompt").as_bool();
    EXPECT_EQ(render_chat(messages, options), std::string(obj.at("expected").as_string()))
        << "case " << obj.at("name").as_string();
  }
}

TEST(ChatTemplate, DefaultSystemFromTemplateText) {
  const std::string dir = std::string(KILN_TEST_DATA_DIR) + "/chat_templates/";
  EXPECT_EQ(default_system_from_template(read_all(dir + "Kimi-K2-Instruct.jinja")),
            std::string(kKimiK2DefaultSystem));
  EXPECT_EQ(default_system_from_template(read_all(dir + "moonshotai-Kimi-K2.jinja")),
            "You are a helpful assistant");
  // The single-line form written into GGUF files.
  EXPECT_EQ(default_system_from_template(
                "{%- if loop.first and messages[0]['role'] != 'system' -%}{{- "
                "'<|im_system|>system<|im_middle|>You are a helpful assistant provided by "
                "Moonshot-AI.<|im_end|>' -}}{%- endif -%}{%- if message['role'] == 'system' -%}{{- "
                "'<|im_system|>system<|im_middle|>' -}}"),
            "You are a helpful assistant provided by Moonshot-AI.");
  EXPECT_EQ(default_system_from_template("{{ messages }}"), std::nullopt);
}

TEST(ChatTemplate, ConfigurableDefaultSystem) {
  ChatOptions options;
  options.default_system = "Custom.";
  EXPECT_EQ(render_chat({{"user", "Hi", "", "", {}}}, options),
            "<|im_system|>system<|im_middle|>Custom.<|im_end|>\n<|im_user|>user<|im_middle|>Hi"
            "<|im_end|><|im_assistant|>assistant<|im_middle|>");
}

TEST(PythonJson, MatchesJsonDumps) {
  EXPECT_EQ(*python_json_reformat(R"({"a":[1,2.5,-0.0,1e16,1e15,0.0001,1e-5,123456789.125,true,null],"b":{}})"),
            R"({"a": [1, 2.5, -0.0, 1e+16, 1000000000000000.0, 0.0001, 1e-05, 123456789.125, true, null], "b": {}})");
  EXPECT_EQ(*python_json_reformat(R"(["é\u00e9\n\t\u0001\"\\/<>&'", 2.0, 1.5e300, -2.5e-7])"),
            "[\"éé\\n\\t\\u0001\\\"\\\\/<>&'\", 2.0, 1.5e+300, -2.5e-07]");
  EXPECT_FALSE(python_json_reformat("{not json").ok());
  EXPECT_FALSE(python_json_reformat("[1] [2]").ok());
  // Doubles are read correctly rounded, as json.loads does (Boost.JSON 1.81 alone gives
  // 1.1000000000000001e+33 for the first two); expected text from Python 3.11's json.dumps.
  EXPECT_EQ(*python_json_reformat(
                "[1.1e+33, 11e+32, 115101910.5e3, 2.2250738585072014e-308, 9007199254740993.0] \n"),
            "[1.1e+33, 1.1e+33, 115101910500.0, 2.2250738585072014e-308, 9007199254740992.0]");
}

}  // namespace
}  // namespace kiln::text

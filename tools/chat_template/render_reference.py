#!/usr/bin/env python3
"""Renders conversations with the Kimi K2 chat template through jinja2, set up the way Hugging Face
transformers renders chat templates (trim_blocks and lstrip_blocks, a tojson filter that is
json.dumps without ASCII escaping or key sorting), and writes them with the expected text to
tests/data/chat/kimi_k2_cases.json for kiln's byte-for-byte chat template test.

transformers uses an ImmutableSandboxedEnvironment, which refuses the template's
`tool_response_queue.ids.append(...)`; the mutable SandboxedEnvironment renders it.

Usage: python3 tools/chat_template/render_reference.py [--template PATH] [--out PATH]
"""
import argparse
import json
import os

from jinja2.sandbox import SandboxedEnvironment
import jinja2.ext

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def hf_environment():
    env = SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                              extensions=[jinja2.ext.loopcontrols])

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def call(name, arguments, call_id=None):
    return {"id": call_id or f"call_{name}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web <fast> & cheap; it's 'free'.\nSecond line\ttab.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "limit": {"type": "integer", "default": 10, "maximum": 1e16},
        "threshold": {"type": "number", "default": 0.5, "minimum": 1e-05, "scale": 2.0},
        "strict": {"type": "boolean", "default": False}, "extra": {"default": None},
        "nested": {"type": "array", "items": [], "meta": {}}},
        "required": ["query"]}}}
UNICODE_TOOL = {"type": "function", "function": {
    "name": "翻译", "description": "Traduire le texte — 翻译文本 😀, ЗДРАВСТВУЙ",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}


def cases():
    u = lambda c, **kw: {"role": "user", "content": c, **kw}
    a = lambda c, **kw: {"role": "assistant", "content": c, **kw}
    s = lambda c: {"role": "system", "content": c}
    t = lambda c, **kw: {"role": "tool", "content": c, **kw}
    yield "user_only", [u("Hello!")], None, True
    yield "system_and_user", [s("You are terse."), u("Hi")], None, True
    yield "multi_turn", [s("Be kind."), u("What is 2+2?"), a("4."), u("And 3+3?")], None, True
    yield "multi_turn_no_system", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")], None, True
    yield "no_generation_prompt", [u("Hi"), a("Hello.")], None, False
    yield "system_only", [s("Only a system prompt.")], None, True
    yield "empty_conversation", [], None, True
    yield "empty_contents", [s(""), u(""), a("")], None, True
    yield "tools_declared", [u("Weather in Paris?")], [WEATHER_TOOL], True
    yield "tools_with_system", [s("Use tools."), u("Search kiln")], [WEATHER_TOOL, SEARCH_TOOL], True
    yield "tool_call_and_result", [
        u("Weather in Paris?"),
        a(None, tool_calls=[call("get_weather", "{\"city\": \"Paris\"}")]),
        t("{\"temp\": 21, \"sky\": \"clear\"}", tool_call_id="call_get_weather"),
        a("It is 21 degrees and clear in Paris.")], [WEATHER_TOOL], True
    yield "tool_call_with_content", [
        u("Find kiln"), a("Let me search.", tool_calls=[call("search", "{\"query\": \"kiln\"}")]),
        t("3 results", tool_call_id="call_search")], [SEARCH_TOOL], True
    yield "parallel_tool_calls", [
        u("Weather in Paris and Rome?"),
        a("", tool_calls=[call("get_weather", "{\"city\": \"Paris\"}", "c1"),
                          call("get_weather", "{\"city\": \"Rome\"}", "c2")]),
        t("18C", tool_call_id="c1"), t("25C", tool_call_id="c2"),
        a("Paris 18C, Rome 25C.")], [WEATHER_TOOL], True
    yield "tool_calls_across_turns", [
        s("sys"), u("q1"), a(None, tool_calls=[call("search", "{\"query\": \"a\"}")]), t("r1"),
        a("done 1"), u("q2"), a(None, tool_calls=[call("get_weather", "{\"city\": \"Oslo\"}")]),
        t("r2", name="get_weather"), a("done 2")], [WEATHER_TOOL, SEARCH_TOOL], False
    yield "dict_arguments", [
        u("Weather?"), a(None, tool_calls=[call("get_weather", {"city": "Zürich", "unit": "celsius",
                                                                "days": 3, "ratio": 0.25})]),
        t("cold")], [WEATHER_TOOL], True
    yield "tool_result_named_without_call", [u("x"), t("orphan result", name="lookup")], None, True
    yield "tool_result_unnamed_without_call", [u("x"), t("orphan result")], None, True
    yield "first_message_tool", [t("result first", name="lookup"), u("ok?")], None, True
    yield "user_and_assistant_names", [s("sys"), u("Hi, I am Ann.", name="ann"),
                                      a("Hello Ann.", name="kimi")], None, True
    yield "system_name", [{"role": "system", "content": "Named system.", "name": "rules"},
                          u("go")], None, True
    yield "unicode", [s("Réponds en français. 日本語も可。"),
                      u("Ünïcödé 😀 ЗДРАВСТВУЙ 中文 x\u0301 \u0000\u007f end"),
                      a("D'accord — 好的 👍")], None, True
    yield "unicode_tools", [u("翻译 hello")], [UNICODE_TOOL], True
    yield "multiline_and_special_text", [u("line 1\nline 2\r\n\ttabbed\n\n<|im_end|> inside"),
                                         a("```python\nprint('hi')\n```")], None, True
    yield "custom_role", [{"role": "developer", "content": "Dev note."}, u("hey")], None, True
    yield "unicode_tool_call", [u("翻译"), a(None, tool_calls=[call("翻译", "{\"text\": \"猫\"}")]),
                                t("cat", name="翻译")], [UNICODE_TOOL], True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default=os.path.join(
        ROOT, "tests/data/chat_templates/Kimi-K2-Instruct.jinja"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/data/chat/kimi_k2_cases.json"))
    args = parser.parse_args()
    with open(args.template, encoding="utf-8") as f:
        template = hf_environment().from_string(f.read())
    out = []
    for name, messages, tools, add_generation_prompt in cases():
        kwargs = {"messages": messages, "add_generation_prompt": add_generation_prompt}
        if tools is not None:
            kwargs["tools"] = tools
        expected = template.render(**kwargs)
        out.append({"name": name, "messages": messages, "tools": tools,
                    "add_generation_prompt": add_generation_prompt, "expected": expected})
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {args.out}")


if __name__ == "__main__":
    main()

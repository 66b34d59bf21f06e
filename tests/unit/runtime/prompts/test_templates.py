"""Prompt templates: Ollama TEMPLATE translation, the model's Jinja template, the default."""

from __future__ import annotations

import pytest

from slm_runtime.prompts import (
    ChatMessage,
    DefaultTemplate,
    JinjaChatTemplate,
    OllamaTemplate,
    TemplateError,
    select_template,
)

GEMMA_MESSAGES = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

CHAT = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "Again"),
]


def test_messages_template_like_ollamas_gemma3() -> None:
    text = OllamaTemplate(GEMMA_MESSAGES).render_chat(CHAT)
    assert text == (
        "<start_of_turn>user\nBe brief.<end_of_turn>\n"
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nAgain<end_of_turn>\n<start_of_turn>model\n"
    )


def test_legacy_prompt_response_template_renders_per_turn() -> None:
    template = OllamaTemplate(
        "{{ if .System }}<|system|>{{ .System }}\n{{ end }}<|user|>{{ .Prompt }}\n<|assistant|>{{ .Response }}<|end|>\n"
    )
    text = template.render_chat(CHAT)
    assert text == ("<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello!<|end|>\n<|user|>Again\n<|assistant|>")
    assert template.render_generate("P", None) == "<|user|>P\n<|assistant|>"
    assert template.render_generate("P", "S") == "<|system|>S\n<|user|>P\n<|assistant|>"


def test_trim_markers_and_with_and_comments() -> None:
    template = OllamaTemplate("{{/* a comment */}}A  {{- with .System }} [{{ . }}] {{- end }}  B{{ .Prompt }}")
    assert template.render_generate("p", "sys") == "A [sys]  Bp"
    assert template.render_generate("p", None) == "A  Bp"


def test_unsupported_forms_are_refused_with_a_message() -> None:
    with pytest.raises(TemplateError, match="not supported"):
        OllamaTemplate('{{ template "x" . }}')
    with pytest.raises(TemplateError, match="end"):
        OllamaTemplate("{{ if .System }}open")


def test_models_own_jinja_template() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    template = JinjaChatTemplate(source, bos_token="<bos>")
    assert template.render_chat(CHAT[1:2]) == "<bos><user>Hi</user><assistant>"
    assert template.render_generate("Q", "S") == "<bos><system>S</system><user>Q</user><assistant>"


def test_default_template_and_selection() -> None:
    default = DefaultTemplate()
    assert default.render_chat(CHAT) == "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Again\nAssistant:"
    assert default.stop == ("\nUser:",)
    assert default.render_generate("go", None) == "go"
    assert isinstance(select_template(None, None), DefaultTemplate)
    assert isinstance(select_template("{{ .Prompt }}", "{{ messages }}"), OllamaTemplate)
    assert isinstance(select_template(None, "{{ messages }}"), JinjaChatTemplate)


QWEN25 = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""


def test_qwen25_style_template_with_tools_branches() -> None:
    template = OllamaTemplate(QWEN25)
    assert template.render_chat(CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render_generate("P", None) == "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n"

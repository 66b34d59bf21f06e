"""Prompts: templates (the model's Jinja, an Ollama TEMPLATE translated from Go, or a default), the prompt of a
request built from them, and its tokens fitted into the context. Not engine code: engines see only tokens.

- :mod:`~slm_runtime.prompts.base`: ChatMessage, the PromptTemplate protocol, TemplateError.
- :mod:`~slm_runtime.prompts.gotemplate`: the Ollama (Go text/template) to Jinja translator.
- :mod:`~slm_runtime.prompts.govalues`: the Go-shaped values (tools, calls) an Ollama template sees.
- :mod:`~slm_runtime.prompts.templates`: the three templates and :func:`select_template`.
- :mod:`~slm_runtime.prompts.capabilities`, :mod:`~slm_runtime.prompts.polyfill`: what a template can show
  (probed), and the rewriting of what it cannot.
- :mod:`~slm_runtime.prompts.thinking`: reasoning text apart from the answer, while a reply streams.
- :mod:`~slm_runtime.prompts.builder`: :class:`PromptBuilder`, system prompt and preset messages included.
- :mod:`~slm_runtime.prompts.tokens`: tokenizing, token-id checks, fitting the prompt into the context.
"""

from __future__ import annotations

from slm_runtime.prompts.base import ChatMessage, PromptTemplate, TemplateCapabilities, TemplateError
from slm_runtime.prompts.builder import PromptBuilder
from slm_runtime.prompts.gotemplate import translate_go_template
from slm_runtime.prompts.templates import DefaultTemplate, JinjaChatTemplate, OllamaTemplate, select_template
from slm_runtime.prompts.thinking import ThinkingSplitter, opens_thinking, thinking_tags
from slm_runtime.prompts.tokens import check_token_ids, fit_context, tokenize, tokenize_prompt

__all__ = [
    "ChatMessage",
    "DefaultTemplate",
    "JinjaChatTemplate",
    "OllamaTemplate",
    "PromptBuilder",
    "PromptTemplate",
    "TemplateCapabilities",
    "TemplateError",
    "ThinkingSplitter",
    "check_token_ids",
    "fit_context",
    "opens_thinking",
    "select_template",
    "thinking_tags",
    "tokenize",
    "tokenize_prompt",
    "translate_go_template",
]

"""Ollama TEMPLATE (Go text/template) to Jinja: the translator behind :class:`slm_runtime.prompts.OllamaTemplate`.

The forms Ollama's own library uses are translated: ``{{ .System }}``, ``{{ .Prompt }}``, ``{{ .Response }}``,
``{{ if ... }}``, ``{{ else if ... }}``, ``{{ else }}``, ``{{ end }}``, ``{{ range .Messages }}`` (and
``range $i, $m := ...``, over slices and maps), ``{{ with ... }}``, ``{{ break }}``, ``{{ continue }}``, ``$``
variables with ``:=`` and ``=`` (an ``=`` inside a ``range`` changes the variable outside it, as in Go), the
functions eq ne lt le gt ge and or not len index slice json, ``{{-``/``-}}`` trimming and comments. Anything else
raises a TemplateError that names it.

The values live under ``root`` in the Jinja context; ``.`` follows ``range`` and ``with``. Variables other than a
``range``'s own live in a Jinja namespace (``go_vars``), the only way Jinja lets a loop body change a variable
declared outside it. The rendering environment provides ``go_json``, ``go_range_values`` and ``go_range_pairs``
(:mod:`slm_runtime.prompts.govalues`) and Jinja's loop controls.
"""

from __future__ import annotations

import re

from slm_runtime.prompts.base import TemplateError

__all__ = ["translate_go_template"]

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<open>\()
      | (?P<close>\))
      | (?P<pipe>\|)
      | (?P<field>\$?[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|\$[A-Za-z_][A-Za-z0-9_]*|\$)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_FUNCTIONS = {*_COMPARE, "and", "or", "not", "len", "index", "slice", "json"}
_STATEMENTS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_NAMESPACE = "go_vars"


class _Translator:
    """Translates one Go template to Jinja, keeping a stack of open blocks and of what ``.`` means."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.blocks: list[str] = []
        self.dots: list[str] = ["root"]
        self.loop_variables: list[set[str]] = []
        self.counter = 0

    def fail(self, what: str) -> TemplateError:
        return TemplateError(f"template: {what} (supported: Ollama's common TEMPLATE forms)")

    # expressions

    def tokens(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise self.fail(f"cannot read {text[pos:]!r}")
            kind = match.lastgroup or ""
            out.append((kind, match.group(kind)))
            pos = match.end()
        return out

    def variable(self, name: str) -> str:
        """A ``range``'s own variables are Jinja loop variables; all others live in the namespace."""
        if any(name in names for names in self.loop_variables):
            return "v_" + name
        return f"{_NAMESPACE}.v_{name}"

    def field(self, token: str) -> str:
        if token == ".":
            return self.dots[-1]
        if token == "$":
            return "root"
        head, _, rest = token.partition(".")
        if head == "":
            base = self.dots[-1]
        elif head == "$":
            base = "root"
        elif head.startswith("$"):
            base = self.variable(head[1:])
        else:
            raise self.fail(f"unknown name {token!r}")
        return base + ("." + rest if rest else "")

    def expression(self, text: str) -> str:
        tokens = self.tokens(text)
        expr, rest = self.pipeline(tokens)
        if rest:
            raise self.fail(f"unexpected {rest[0][1]!r} in {text!r}")
        return expr

    def pipeline(self, tokens: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        expr, tokens = self.command(tokens)
        while tokens and tokens[0][0] == "pipe":
            tokens = tokens[1:]
            if not tokens or tokens[0][0] != "ident":
                raise self.fail("a pipe must name a function")
            name = tokens[0][1]
            args, tokens = self.arguments(tokens[1:])
            expr = self.call(name, [*args, expr])
        return expr, tokens

    def command(self, tokens: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        if not tokens:
            raise self.fail("empty expression")
        kind, value = tokens[0]
        if kind == "ident" and value in _FUNCTIONS:
            args, rest = self.arguments(tokens[1:])
            return self.call(value, args), rest
        return self.operand(tokens)

    def arguments(self, tokens: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
        args: list[str] = []
        while tokens and tokens[0][0] not in {"close", "pipe"}:
            arg, tokens = self.operand(tokens)
            args.append(arg)
        return args, tokens

    def operand(self, tokens: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        kind, value = tokens[0]
        rest = tokens[1:]
        if kind == "open":
            inner, rest = self.pipeline(rest)
            if not rest or rest[0][0] != "close":
                raise self.fail("unbalanced parentheses")
            return f"({inner})", rest[1:]
        if kind == "str":
            return value, rest
        if kind == "raw":
            return repr(value[1:-1]), rest
        if kind == "num":
            return value, rest
        if kind == "field":
            return self.field(value), rest
        if kind == "ident" and value in {"true", "false", "nil"}:
            return {"true": "true", "false": "false", "nil": "none"}[value], rest
        raise self.fail(f"unsupported {value!r}")

    def call(self, name: str, args: list[str]) -> str:
        if name in _COMPARE:
            if len(args) < 2:
                raise self.fail(f"{name} needs two arguments")
            if name == "eq" and len(args) > 2:
                return "(" + " or ".join(f"{args[0]} == {other}" for other in args[1:]) + ")"
            return f"({args[0]} {_COMPARE[name]} {args[1]})"
        if name in {"and", "or"}:
            return "(" + f" {name} ".join(args) + ")"
        if len(args) < 1:
            raise self.fail(f"{name} needs an argument")
        if name == "not":
            return f"(not {args[0]})"
        if name == "len":
            return f"({args[0]} | length)"
        if name == "json":
            return f"go_json({args[0]})"
        if name == "index":
            return args[0] + "".join(f"[{a}]" for a in args[1:])
        # slice
        start = args[1] if len(args) > 1 else ""
        stop = args[2] if len(args) > 2 else ""
        return f"{args[0]}[{start}:{stop}]"

    # statements

    def statement(self, body: str) -> str:
        words = body.split(None, 1)
        keyword = words[0] if words else ""
        rest = words[1] if len(words) > 1 else ""
        if keyword == "if":
            self.blocks.append("if")
            return f"if {self.expression(rest)}"
        if keyword == "else":
            if not self.blocks:
                raise self.fail("else outside a block")
            inner = rest.split(None, 1)
            if inner and inner[0] == "if":
                return f"elif {self.expression(inner[1] if len(inner) > 1 else '')}"
            if self.blocks[-1] == "with":
                self.dots.pop()
                self.dots.append(self.dots[-1])
            return "else"
        if keyword == "end":
            if not self.blocks:
                raise self.fail("end without a block")
            block = self.blocks.pop()
            if block == "if":
                return "endif"
            self.dots.pop()
            if block == "range":
                self.loop_variables.pop()
                return "endfor"
            return "endif %}{% endwith"
        if keyword == "range":
            return self.range(rest)
        if keyword == "with":
            self.counter += 1
            name = f"w_{self.counter}"
            value = self.expression(rest)
            self.blocks.append("with")
            self.dots.append(name)
            return f"with {name} = {value} %}}{{% if {name}"
        assign = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*(.*)", body, re.DOTALL)
        if assign:
            return f"set {self.variable(assign.group(1))} = {self.expression(assign.group(2))}"
        if keyword in {"break", "continue"}:
            if "range" not in self.blocks:
                raise self.fail(f"{keyword} outside a range")
            return keyword
        if keyword in {"define", "template", "block"}:
            raise self.fail(f"{keyword!r} is not supported")
        return ""

    def range(self, rest: str) -> str:
        self.counter += 1
        match = re.match(r"(?:\$([A-Za-z_]\w*)\s*(?:,\s*\$([A-Za-z_]\w*))?\s*:=\s*)?(.*)", rest, re.DOTALL)
        assert match is not None
        first, second, collection = match.groups()
        expr = self.expression(collection)
        self.blocks.append("range")
        self.loop_variables.append({name for name in (first, second) if name})
        if second:
            item = self.variable(second)
            index = self.variable(first)
            self.dots.append(item)
            return f"for {index}, {item} in go_range_pairs({expr})"
        item = self.variable(first) if first else f"it_{self.counter}"
        self.dots.append(item)
        return f"for {item} in go_range_values({expr})"

    def translate(self) -> str:
        out: list[str] = []
        pos = 0
        for match in _ACTION.finditer(self.source):
            out.append(self.source[pos : match.start()].replace("{#", "{{ '{#' }}"))
            pos = match.end()
            left = "-" if match.group(1) else ""
            right = "-" if match.group(3) else ""
            body = match.group(2).strip()
            if body.startswith("/*"):
                # Comments still trim: emit an empty Jinja comment carrying the trim markers.
                out.append(f"{{#{left} #}}" if not right else f"{{#{left} -#}}")
                continue
            keyword = body.split(None, 1)[0] if body else ""
            if keyword in _STATEMENTS or re.match(r"\$\w+\s*:?=", body):
                out.append(f"{{%{left} {self.statement(body)} {right}%}}")
            else:
                out.append(f"{{{{{left} {self.expression(body)} {right}}}}}")
        out.append(self.source[pos:].replace("{#", "{{ '{#' }}"))
        if self.blocks:
            raise self.fail(f"{len(self.blocks)} block(s) without {{{{ end }}}}")
        return f"{{% set {_NAMESPACE} = namespace() %}}" + "".join(out)


def translate_go_template(source: str) -> str:
    """Jinja source equivalent to an Ollama TEMPLATE; raises TemplateError for unsupported forms."""
    return _Translator(source).translate()

"""The part of Flux's syntax the imitation reads: imports, assignments and expressions with literals (string,
integer, float, duration, time, array), identifiers, members (``r.x``, ``r["x"]``), calls with named arguments,
pipes (``|>``), function literals (``(r) => ...``) and the operators ``or``, ``and``, ``not``, ``exists`` and
comparisons. Anything else is refused (``NotImitated``) rather than guessed.

Precedence follows the Flux spec (highest first): member, index and call; ``|>``; comparisons; ``not`` and
``exists``; ``and``; ``or``. Arithmetic and regular expressions are refused where they stand. Each node keeps
its span (line, column, end line, end column; columns from 1, the end one past the last character), which
InfluxDB's error messages quote.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pandas as pd

from tools.fake_influx2.tables import NotImitated

Span = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Node:
    span: Span


@dataclasses.dataclass(frozen=True)
class Literal(Node):
    value: Any


@dataclasses.dataclass(frozen=True)
class Ident(Node):
    name: str


@dataclasses.dataclass(frozen=True)
class Member(Node):
    obj: Node
    name: str


@dataclasses.dataclass(frozen=True)
class Call(Node):
    callee: Node
    args: tuple[tuple[str, Node], ...]


@dataclasses.dataclass(frozen=True)
class Pipe(Node):
    argument: Node
    call: Call


@dataclasses.dataclass(frozen=True)
class Function(Node):
    params: tuple[str, ...]
    body: Node


@dataclasses.dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclasses.dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclasses.dataclass(frozen=True)
class Array(Node):
    elements: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Program:
    imports: tuple[str, ...]
    body: tuple[tuple[str | None, Node], ...]  # (name assigned, or None for an expression statement; value)


_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\n]+|//[^\n]*)
    |(?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))
    |(?P<duration>(?:\d+(?:mo|ms|us|µs|ns|y|w|d|h|m|s))+)
    |(?P<float>\d+\.\d+)
    |(?P<int>\d+)
    |(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>\|>|=>|==|!=|<=|>=|=~|!~|<-|[-+*/%<>=()\[\]{},.:])""",
    re.VERBOSE,
)
_UNITS = {"ns": "ns", "us": "us", "µs": "us", "ms": "ms", "s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}
_STRING_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "=~", "!~")
_ARITHMETIC = ("+", "-", "*", "/", "%", "^")


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str
    text: str
    span: Span


def tokens(text: str) -> list[Token]:
    found, i, line, column = [], 0, 1, 1
    while i < len(text):
        match = _TOKEN.match(text, i)
        if match is None:
            raise NotImitated(f"the Flux at @{line}:{column}: {text[i : i + 20]!r}")
        piece = match.group()
        lines = piece.split("\n")
        end_line, end_column = line + len(lines) - 1, (column if len(lines) == 1 else 1) + len(lines[-1])
        if match.lastgroup != "space":
            found.append(Token(match.lastgroup or "", piece, (line, column, end_line, end_column)))
        i, line, column = match.end(), end_line, end_column
    return [*found, Token("end", "", (line, column, line, column))]


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokens(text)
        self.i = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.token
        if (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            line, column = token.span[:2]
            raise NotImitated(f"the Flux at @{line}:{column}: {token.text!r} (expected {text or kind})")
        self.i += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.token.text in texts and self.token.kind in ("op", "name")

    def program(self) -> Program:
        imports, body = [], []
        while self.at("import"):
            self.take("import")
            imports.append(_string(self.take(kind="string").text))
        while self.token.kind != "end":
            if self.token.kind == "name" and self.tokens[self.i + 1].text == "=":
                name = self.take().text
                self.take("=")
                body.append((name, self.expression()))
            else:
                body.append((None, self.expression()))
        return Program(tuple(imports), tuple(body))

    def expression(self) -> Node:
        return self.binary(0)

    # Binary operators from the loosest; each level's operands are the next level's expressions. Arithmetic and
    # regular expressions are not imitated: refused when met, whatever the data.
    _LEVELS: tuple[tuple[str, ...], ...] = (("or",), ("and",), _COMPARISONS)

    def binary(self, level: int) -> Node:
        if level == 2 and self.at("not", "exists"):
            op = self.take()
            operand = self.binary(2)
            return Unary(_join(op.span, operand.span), op.text, operand)
        if level == len(self._LEVELS):
            return self.pipe()
        left = self.binary(level + 1)
        while self.at(*self._LEVELS[level]):
            if self.at("=~", "!~"):
                raise NotImitated(f"the operator {self.token.text} @{self.token.span[0]}:{self.token.span[1]}")
            op = self.take().text
            right = self.binary(level + 1)
            left = Binary(_join(left.span, right.span), op, left, right)
        return left

    def pipe(self) -> Node:
        node = self.postfix()
        if self.at(*_ARITHMETIC):
            raise NotImitated(f"the operator {self.token.text} @{self.token.span[0]}:{self.token.span[1]}")
        while self.at("|>"):
            self.take("|>")
            call = self.postfix()
            if not isinstance(call, Call):
                raise NotImitated(f"a pipe into something that is not a call @{call.span[0]}:{call.span[1]}")
            node = Pipe(_join(node.span, call.span), node, call)
        return node

    def postfix(self) -> Node:
        node = self.primary()
        while self.at(".", "[", "("):
            if self.at("."):
                self.take(".")
                name = self.take(kind="name")
                node = Member(_join(node.span, name.span), node, name.text)
            elif self.at("["):
                self.take("[")
                key = self.take(kind="string")
                end = self.take("]")
                node = Member(_join(node.span, end.span), node, _string(key.text))
            else:
                node = self.call(node)
        return node

    def call(self, callee: Node) -> Call:
        self.take("(")
        args = []
        while not self.at(")"):
            name = self.take(kind="name").text
            self.take(":")
            args.append((name, self.expression()))
            if not self.at(")"):
                self.take(",")
        end = self.take(")")
        return Call(_join(callee.span, end.span), callee, tuple(args))

    def primary(self) -> Node:
        token = self.token
        if token.kind in ("string", "int", "float", "duration", "time"):
            self.i += 1
            return Literal(token.span, _literal(token))
        if token.kind == "name":
            self.i += 1
            return Ident(token.span, token.text)
        if self.at("-"):
            self.take("-")
            operand = self.primary()
            return Unary(_join(token.span, operand.span), "-", operand)
        if self.at("["):
            self.take("[")
            elements = []
            while not self.at("]"):
                elements.append(self.expression())
                if not self.at("]"):
                    self.take(",")
            end = self.take("]")
            return Array(_join(token.span, end.span), tuple(elements))
        if self.at("("):
            if self._function_ahead():
                return self.function()
            self.take("(")
            inner = self.expression()
            self.take(")")
            return inner
        raise NotImitated(f"the Flux at @{token.span[0]}:{token.span[1]}: {token.text!r}")

    def _function_ahead(self) -> bool:
        """Whether ``(`` opens a function literal: names, commas and ``)`` up to ``=>``."""
        j = self.i + 1
        while self.tokens[j].kind == "name" or self.tokens[j].text == ",":
            j += 1
        return self.tokens[j].text == ")" and self.tokens[j + 1].text == "=>"

    def function(self) -> Function:
        start = self.take("(")
        params = []
        while not self.at(")"):
            params.append(self.take(kind="name").text)
            if not self.at(")"):
                self.take(",")
        self.take(")")
        self.take("=>")
        body = self.expression()
        return Function(_join(start.span, body.span), tuple(params), body)


def parse(text: str) -> Program:
    return _Parser(text).program()


def _join(first: Span, last: Span) -> Span:
    return (first[0], first[1], last[2], last[3])


def _string(text: str) -> str:
    """A Flux string literal's value; ``${`` opens an interpolation, which the imitation does not do."""
    body = text[1:-1]
    if re.search(r"(?<!\\)(?:\\\\)*\$\{", body):
        raise NotImitated(f"string interpolation in {text}")
    return re.sub(r"\\(.)", lambda m: _STRING_ESCAPES.get(m.group(1), m.group(0)), body, flags=re.DOTALL)


def _literal(token: Token) -> Any:
    if token.kind == "string":
        return _string(token.text)
    if token.kind == "int":
        return int(token.text)
    if token.kind == "float":
        return float(token.text)
    if token.kind == "time":
        return pd.Timestamp(token.text).tz_convert("UTC")
    total = pd.Timedelta(0)
    for magnitude, unit in re.findall(r"(\d+)(mo|ms|us|µs|ns|y|w|d|h|m|s)", token.text):
        if unit not in _UNITS:
            raise NotImitated(f"calendar durations ({token.text})")
        total += pd.Timedelta(int(magnitude), unit=_UNITS[unit])
    return total

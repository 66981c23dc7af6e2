"""Runs a parsed Flux program (parser.py) with the functions of functions.py and aggregates.py over the buckets.

Values: Python's (tables.py), a ``Record`` for a record such as the ``params`` option, a ``Closure`` for a function
literal, a ``Builtin`` for a function the imitation implements, a ``Source`` for ``from()`` before ``range()``.
A function, argument, operator or import it does not implement is refused (``NotImitated``), as is a program
that does not end in exactly one stream of tables.

Errors are worded as InfluxDB words them: ``error @1:2-1:8: undefined identifier x``, ``type error @...: record
is missing label x``, ``runtime error @...: filter: ...``, with the span of the expression at fault.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Callable
from typing import Any

import pandas as pd

from tools.fake_influx2.parser import Array, Binary, Call, Function, Ident, Literal, Member, Node, Pipe, Unary, parse
from tools.fake_influx2.storage import Bucket
from tools.fake_influx2.tables import FluxError, FluxRuntimeError, NotImitated, Table, flux_type


@dataclasses.dataclass
class Context:
    """What a query runs against: the buckets by name, and the time ``now()`` gives."""

    buckets: dict[str, Bucket]
    now: pd.Timestamp


class Record(dict):
    """A record value (the ``params`` option, an imported package): a label it lacks is a type error. A row
    handed to a predicate is a plain dict instead, in which a column the table lacks is null."""


@dataclasses.dataclass(frozen=True)
class Source:
    """``from(bucket:)``: nothing is read until ``range()`` bounds it."""

    bucket: Bucket


@dataclasses.dataclass(frozen=True)
class Builtin:
    """A Flux function implemented in Python: keyword arguments as Flux names them (``tables`` is the piped
    input); one named ``context`` receives the query's Context instead of a Flux argument."""

    name: str
    function: Callable[..., Any]

    def __call__(self, context: Context | None = None, **arguments: Any) -> Any:
        if "context" in inspect.signature(self.function).parameters:
            arguments["context"] = context
        return self.function(**arguments)


@dataclasses.dataclass(frozen=True)
class Closure:
    """A function literal and the scope it was made in."""

    node: Function
    scope: dict[str, Any]
    interpreter: Interpreter

    def __call__(self, **arguments: Any) -> Any:
        if set(arguments) != set(self.node.params):
            raise FluxRuntimeError(f"function takes {list(self.node.params)}, got {sorted(arguments)}")
        return self.interpreter.evaluate(self.node.body, {**self.scope, **arguments})

    def reads(self) -> set[str] | None:
        """The columns the function reads of its one parameter (``r.x``, ``r["x"]``); None when it uses the
        parameter otherwise (or has not exactly one), so that what it reads cannot be known."""
        if len(self.node.params) != 1:
            return None
        found: set[str] = set()
        return found if _reads(self.node.body, self.node.params[0], found) else None


def _reads(node: Node, param: str, found: set[str]) -> bool:
    """Adds to ``found`` the columns ``node`` reads of ``param``; False when it uses ``param`` otherwise."""
    if isinstance(node, Member) and isinstance(node.obj, Ident) and node.obj.name == param:
        found.add(node.name)
        return True
    if isinstance(node, Ident):
        return node.name != param
    return all(_reads(child, param, found) for child in _children(node))


def _children(node: Node) -> list[Node]:
    if isinstance(node, Call):
        return [node.callee, *(value for _, value in node.args)]
    if isinstance(node, Pipe):
        return [node.argument, node.call]
    if isinstance(node, Binary):
        return [node.left, node.right]
    if isinstance(node, Unary):
        return [node.operand]
    if isinstance(node, Member):
        return [node.obj]
    if isinstance(node, Array):
        return list(node.elements)
    if isinstance(node, Function):
        return [node.body]
    return []


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMBERS = {"int", "uint", "float"}


def kind(value: Any) -> str:
    return "duration" if isinstance(value, pd.Timedelta) else flux_type(value)


def compare(op: str, left: Any, right: Any) -> bool | None:
    """A comparison as Flux makes it: null when either side is null; numbers of any kind compare; values of
    other kinds only with their own, and booleans only for (in)equality."""
    if left is None or right is None:
        return None
    kinds = (kind(left), kind(right))
    if not (kinds[0] == kinds[1] or set(kinds) <= _NUMBERS) or (kinds[0] == "bool" and op not in ("==", "!=")):
        raise FluxRuntimeError(f"unsupported binary expression {kinds[0]} {op} {kinds[1]}")
    return _COMPARE[op](left, right)


class Interpreter:
    def __init__(self, context: Context, universe: dict[str, Builtin], packages: dict[str, dict[str, Builtin]]):
        self.context = context
        self.universe = universe
        self.packages = packages

    def run(self, text: str, bindings: dict[str, Any] | None = None) -> list[Table]:
        """The stream of tables the program yields; ``bindings`` are identifiers in scope (``params``)."""
        program = parse(text)
        scope: dict[str, Any] = dict(bindings or {})
        for path in program.imports:
            if path not in self.packages:
                raise NotImitated(f'import "{path}"')
            scope[path.rsplit("/", 1)[-1]] = Record(self.packages[path])
        results = []
        for name, node in program.body:
            value = self.evaluate(node, scope)
            if name is not None:
                scope[name] = value
            elif isinstance(value, (list, Source)):
                results.append((node, value))
        if len(results) != 1:
            raise NotImitated(f"a program with {len(results)} results (it imitates programs with one)")
        node, stream = results[0]
        if isinstance(stream, Source):
            raise _unbounded(node, stream)
        return stream

    def evaluate(self, node: Node, scope: dict[str, Any]) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Ident):
            return self._identifier(node, scope)
        if isinstance(node, Member):
            obj = self.evaluate(node.obj, scope)
            if isinstance(obj, Record):
                if node.name not in obj:
                    raise FluxError(f"type error @{_at(node)}: record is missing label {node.name}")
                return obj[node.name]
            if isinstance(obj, dict):
                return obj.get(node.name)
            raise FluxRuntimeError(f"cannot access member {node.name} of {type(obj).__name__}")
        if isinstance(node, Array):
            return [self.evaluate(element, scope) for element in node.elements]
        if isinstance(node, Function):
            return Closure(node, scope, self)
        if isinstance(node, Call):
            return self._call(node, scope, None)
        if isinstance(node, Pipe):
            return self._call(node.call, scope, self.evaluate(node.argument, scope))
        if isinstance(node, Unary):
            return self._unary(node, scope)
        if isinstance(node, Binary):
            return self._binary(node, scope)
        raise NotImitated(f"the expression @{_at(node)}")

    def _identifier(self, node: Ident, scope: dict[str, Any]) -> Any:
        if node.name in scope:
            return scope[node.name]
        if node.name in self.universe:
            return self.universe[node.name]
        if node.name in ("true", "false"):
            return node.name == "true"
        raise FluxError(f"error @{_at(node)}: undefined identifier {node.name}")

    def _call(self, node: Call, scope: dict[str, Any], piped: Any) -> Any:
        callee = node.callee
        if isinstance(callee, Ident) and callee.name not in scope and callee.name not in self.universe:
            raise NotImitated(f"{callee.name}()")  # a Flux function, maybe, that is not implemented here
        function = self.evaluate(callee, scope)
        arguments = {name: self.evaluate(value, scope) for name, value in node.args}
        if piped is not None:
            arguments["tables"] = piped
        if isinstance(function, Closure):
            return function(**arguments)
        if not isinstance(function, Builtin):
            raise FluxError(f"type error @{_at(node)}: {type(function).__name__} is not a function")
        parameters = inspect.signature(function.function).parameters
        for name in arguments:
            if name not in parameters or name == "context":
                raise NotImitated(f"{function.name}() with the argument {name}")
        for name, parameter in parameters.items():
            if parameter.default is parameter.empty and name not in arguments and name != "context":
                raise FluxError(f"error @{_at(node)}: missing required argument {name}")
        if isinstance(arguments.get("tables"), Source) and function.name != "range":
            raise _unbounded(node, arguments["tables"])
        try:
            return function(self.context, **arguments)
        except FluxRuntimeError as e:
            if e.message.startswith("runtime error"):
                raise
            raise FluxRuntimeError(f"runtime error @{_at(node)}: {function.name}: {e.message}") from None

    def _unary(self, node: Unary, scope: dict[str, Any]) -> Any:
        value = self.evaluate(node.operand, scope)
        if node.op == "exists":
            return value is not None
        if value is None:
            return None
        if node.op == "not" and isinstance(value, bool):
            return not value
        if node.op == "-" and kind(value) in (*_NUMBERS, "duration"):
            return -value
        raise FluxRuntimeError(f"runtime error @{_at(node)}: unsupported unary expression {node.op} {kind(value)}")

    def _binary(self, node: Binary, scope: dict[str, Any]) -> Any:
        if node.op in ("and", "or"):
            left = self.evaluate(node.left, scope)
            if bool(left) == (node.op == "or"):
                return left
            return self.evaluate(node.right, scope)
        try:
            return compare(node.op, self.evaluate(node.left, scope), self.evaluate(node.right, scope))
        except FluxRuntimeError as e:
            raise FluxRuntimeError(f"runtime error @{_at(node)}: {e.message}") from None


def _at(node: Node) -> str:
    line, column, end_line, end_column = node.span
    return f"{line}:{column}-{end_line}:{end_column}"


def _unbounded(node: Node, source: Source) -> FluxError:
    return FluxError(
        f'error @{_at(node)}: cannot submit unbounded read to "{source.bucket.name}"; '
        "try bounding 'from' with a call to 'range'"
    )

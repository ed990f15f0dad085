"""The expression language of alarm rules: a safe subset of Python expressions over metric values.

    pressure > 5 and temperature > 80
    abs(flow_in - flow_out) > 0.1 * flow_in
    max(t1, t2, t3) > 120
    "dev-2/level" < 0.5 or series("dev-3", "level") < 0.5
    (pump_a > 0) + (pump_b > 0) + (pump_c > 0) >= 2

The text is parsed by the standard library's parser (`ast.parse`, never `eval`), every node is checked
against a whitelist, and the tree is compiled once into nested closures, so evaluating it for every
point costs a few function calls. A bare name is a metric of the device the rule is applied to; a
quoted name is a series (`"flow.in"` on the same device, `"dev-2/level"` on another), as is
`series("dev-2", "level")`. All arithmetic is in floating point.

A missing value, a division by zero, a square root of a negative number or an overflow is *unknown*
(`None`), and unknown spreads: `x + unknown` is unknown, `x > unknown` is unknown. `and`/`or` follow
Kleene's three-valued logic (`False and unknown` is False, `True or unknown` is True). A rule whose
condition is unknown is not active. `coalesce(x, default)` replaces an unknown value.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from iip.alarms.rules import MAX_EXPRESSION, METRIC, SERIES_REF
from iip.kernel.errors import Invalid

Value = float | bool | None
Lookup = Callable[[str | None, str], float | None]
"""lookup(device, metric): the newest value of a series, device None meaning the rule's own device."""
Evaluator = Callable[[Lookup], Value]

MAX_NODES: Final = 500
MAX_DEPTH: Final = 150
MAX_ARGUMENTS: Final = 32
MAX_ROUND_DIGITS: Final = 12
DEVICE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-:]{0,127}$")

_INF: Final = math.inf
_FUNCTIONS: Final = (
    "abs",
    "ceil",
    "clamp",
    "coalesce",
    "exp",
    "floor",
    "log",
    "log10",
    "max",
    "min",
    "round",
    "series",
    "sqrt",
)
_COMPARISONS: Final[dict[type[ast.cmpop], Callable[[float, float], bool]]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_SYMBOLS: Final[dict[type[ast.AST], str]] = {
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.Invert: "~",
}
_FORBIDDEN: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: 'attribute access (a metric name with dots is written in quotes: "flow.in")',
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda",
    ast.NamedExpr: "an assignment",
    ast.JoinedStr: "an f-string",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Dict: "a dictionary",
    ast.Starred: "a starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "a slice",
}


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A checked, compiled expression.

    `names` are the metrics it reads on the rule's own device, `series` the `(device, metric)` pairs it
    reads on other devices: what an engine must watch to re-evaluate it.
    """

    text: str
    names: frozenset[str]
    series: frozenset[tuple[str, str]]
    _evaluator: Evaluator

    def evaluate(self, lookup: Lookup) -> Value:
        """The value of the expression, or None when it is unknown; never raises for any input values."""
        return self._evaluator(lookup)

    def is_true(self, lookup: Lookup) -> bool:
        """Whether the expression holds; unknown counts as not holding."""
        value = self._evaluator(lookup)
        return value is not None and bool(value)


def compile_expression(text: str, *, metrics: Collection[str] | None = None) -> CompiledExpression:
    """Parse, check and compile `text`; raises `Invalid` (code `expression_invalid`) naming the position.

    With `metrics`, a bare or quoted name on the rule's own device must be one of them (the profile's
    metrics), so a typo is an error instead of a condition that is never known.
    """
    if not isinstance(text, str) or not text.strip():
        raise Invalid("an expression cannot be empty", code="expression_invalid")
    if len(text) > MAX_EXPRESSION:
        raise Invalid(f"an expression is at most {MAX_EXPRESSION} characters", code="expression_invalid")
    text = text.strip()
    # line breaks (rules written over several lines in YAML) are blanks; the same length keeps positions
    flat = text.replace("\r", " ").replace("\n", " ")
    try:
        tree = ast.parse(flat, mode="eval")
    except SyntaxError as err:
        raise _syntax_error(text, err) from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise Invalid(f"cannot parse the expression: {err}", code="expression_invalid") from None
    compiler = _Compiler(text, flat, metrics)
    compiler.check_size(tree.body)
    evaluator = compiler.compile(tree.body)
    return CompiledExpression(text, frozenset(compiler.names), frozenset(compiler.series), evaluator)


def _syntax_error(text: str, err: SyntaxError) -> Invalid:
    message = err.msg or "invalid syntax"
    if err.offset is None:
        return Invalid(f"syntax error: {message}", code="expression_invalid")
    index = err.offset - 1
    if index < 0 or index >= len(text):
        return Invalid(
            f"syntax error at the end of the expression: {message}", code="expression_invalid", index=len(text)
        )
    where, details = _position(text, index)
    return Invalid(f"syntax error {where}: {message}", code="expression_invalid", **details)


def _position(text: str, index: int) -> tuple[str, dict[str, int]]:
    """Where the character at `index` is, in words and as details: column, and line when there are several."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    if "\n" not in text:
        return f"at column {column}", {"index": index, "column": column}
    return f"at line {line}, column {column}", {"index": index, "line": line, "column": column}


class _Compiler:
    """Checks a parsed tree against the whitelist and turns it into closures."""

    def __init__(self, text: str, flat: str, metrics: Collection[str] | None) -> None:
        self.text = text
        self.flat = flat
        self.metrics = None if metrics is None else frozenset(metrics)
        self.names: set[str] = set()
        self.series: set[tuple[str, str]] = set()

    # --- errors and limits -------------------------------------------------------------------

    def error(self, node: ast.AST, message: str) -> Invalid:
        byte_offset: int = getattr(node, "col_offset", 0)
        # ast counts UTF-8 bytes; people count characters
        index = len(self.flat.encode()[:byte_offset].decode(errors="ignore"))
        where, details = _position(self.text, index)
        return Invalid(f"{message} {where}", code="expression_invalid", **details)

    def check_size(self, root: ast.expr) -> None:
        count = 0
        stack: list[tuple[ast.AST, int]] = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                raise Invalid(f"an expression has at most {MAX_NODES} parts", code="expression_invalid")
            if depth > MAX_DEPTH:
                raise self.error(node, f"the expression nests deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))

    # --- compilation -------------------------------------------------------------------------

    def compile(self, node: ast.expr) -> Evaluator:  # noqa: PLR0911 - one branch per kind of node
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.metric(node, node.id)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            return self.conditional(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            raise self.error(node, "a list of numbers is only allowed after 'in' or 'not in'")
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        raise self.error(node, f"{what} is not allowed in an expression")

    def constant(self, node: ast.Constant) -> Evaluator:
        value = node.value
        if isinstance(value, str):
            return self.series_ref(node, value)
        number = self.number(node)

        def constant(_: Lookup) -> Value:
            return number

        return constant

    def number(self, node: ast.expr) -> float | bool:
        """A numeric literal (a minus sign allowed) as float, or True/False."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.number(node.operand)
            return -inner if isinstance(node.op, ast.USub) else +inner
        if not isinstance(node, ast.Constant):
            raise self.error(node, "expected a number")
        value = node.value
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:
                number = _INF
            if not math.isfinite(number):
                raise self.error(node, "the number is out of range")
            return number
        if value is None:
            raise self.error(node, "None is not allowed (a missing value is unknown already)")
        raise self.error(node, f"{type(value).__name__} values are not allowed in an expression")

    def metric(self, node: ast.AST, name: str) -> Evaluator:
        if name in _FUNCTIONS:
            raise self.error(node, f"'{name}' is a function: write {name}(...)")
        if not METRIC.match(name):
            raise self.error(node, f"'{name}' is not a metric name")
        if self.metrics is not None and name not in self.metrics:
            known = ", ".join(sorted(self.metrics)[:20]) or "none"
            raise self.error(node, f"unknown metric '{name}' (known: {known})")
        self.names.add(name)

        def metric(lookup: Lookup) -> Value:
            value = lookup(None, name)
            return value if value is not None and -_INF < value < _INF else None

        return metric

    def series_ref(self, node: ast.AST, ref: str) -> Evaluator:
        if not SERIES_REF.match(ref):
            raise self.error(node, f"'{ref}' is neither a metric name nor device-key/metric")
        device, _, metric = ref.rpartition("/")
        if not device:
            return self.metric(node, metric)
        return self.other_series(device, metric)

    def other_series(self, device: str, name: str) -> Evaluator:
        self.series.add((device, name))

        def series(lookup: Lookup) -> Value:
            value = lookup(device, name)
            return value if value is not None and -_INF < value < _INF else None

        return series

    def binary(self, node: ast.BinOp) -> Evaluator:
        entry = _BINARY.get(type(node.op))
        if entry is None:
            symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise self.error(node, f"the operator '{symbol}' is not allowed")
        combine, function = entry
        return combine(self.compile(node.left), self.compile(node.right), function)

    def unary(self, node: ast.UnaryOp) -> Evaluator:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):

            def negation(lookup: Lookup) -> Value:
                value = operand(lookup)
                return None if value is None else not value

            return negation
        if isinstance(node.op, ast.USub):

            def minus(lookup: Lookup) -> Value:
                value = operand(lookup)
                return None if value is None else -value

            return minus
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self.error(node, "the operator '~' is not allowed")

    def boolean(self, node: ast.BoolOp) -> Evaluator:
        operands = tuple(self.compile(value) for value in node.values)
        if isinstance(node.op, ast.And):

            def conjunction(lookup: Lookup) -> Value:
                unknown = False
                for operand in operands:
                    value = operand(lookup)
                    if value is None:
                        unknown = True
                    elif not value:
                        return False
                return None if unknown else True

            return conjunction

        def disjunction(lookup: Lookup) -> Value:
            unknown = False
            for operand in operands:
                value = operand(lookup)
                if value is None:
                    unknown = True
                elif value:
                    return True
            return None if unknown else False

        return disjunction

    def compare(self, node: ast.Compare) -> Evaluator:
        if len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn):
            return self.membership(node)
        left = self.compile(node.left)
        steps: list[tuple[Callable[[float, float], bool], Evaluator]] = []
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            function = _COMPARISONS.get(type(op))
            if function is None:
                if isinstance(op, ast.In | ast.NotIn):
                    raise self.error(node, "'in' cannot be chained with other comparisons")
                raise self.error(node, f"the comparison '{_SYMBOLS.get(type(op), '?')}' is not allowed")
            steps.append((function, self.compile(comparator)))
        if len(steps) == 1:
            function, right = steps[0]
            if isinstance(node.comparators[0], ast.Constant | ast.UnaryOp) and _is_number(node.comparators[0]):
                limit = self.number(node.comparators[0])

                def compare_constant(lookup: Lookup) -> Value:
                    value = left(lookup)
                    return None if value is None else function(value, limit)

                return compare_constant

            def compare_one(lookup: Lookup) -> Value:
                a = left(lookup)
                if a is None:
                    return None
                b = right(lookup)
                return None if b is None else function(a, b)

            return compare_one
        chain = tuple(steps)

        def compare_chain(lookup: Lookup) -> Value:
            a = left(lookup)
            unknown = False
            for function, right in chain:
                b = right(lookup)
                if a is None or b is None:
                    unknown = True
                elif not function(a, b):
                    return False
                a = b
            return None if unknown else True

        return compare_chain

    def membership(self, node: ast.Compare) -> Evaluator:
        container = node.comparators[0]
        if not isinstance(container, ast.Tuple | ast.List | ast.Set):
            raise self.error(container, "'in' takes a list of numbers, e.g. state in (1, 2, 5)")
        if len(container.elts) > MAX_ARGUMENTS * 8:
            raise self.error(container, f"'in' takes at most {MAX_ARGUMENTS * 8} numbers")
        members = frozenset(self.number(element) for element in container.elts)
        left = self.compile(node.left)
        negated = isinstance(node.ops[0], ast.NotIn)

        def membership(lookup: Lookup) -> Value:
            value = left(lookup)
            if value is None:
                return None
            return (value in members) != negated

        return membership

    def conditional(self, node: ast.IfExp) -> Evaluator:
        test, body, orelse = self.compile(node.test), self.compile(node.body), self.compile(node.orelse)

        def conditional(lookup: Lookup) -> Value:
            condition = test(lookup)
            if condition is None:
                return None
            return body(lookup) if condition else orelse(lookup)

        return conditional

    def call(self, node: ast.Call) -> Evaluator:
        if not isinstance(node.func, ast.Name):
            raise self.error(node, "only the functions " + ", ".join(_FUNCTIONS) + " can be called")
        name = node.func.id
        if name not in _FUNCTIONS:
            raise self.error(node, f"unknown function '{name}' (functions: {', '.join(_FUNCTIONS)})")
        if node.keywords:
            raise self.error(node, f"{name}() takes no keyword arguments")
        if len(node.args) > MAX_ARGUMENTS:
            raise self.error(node, f"{name}() takes at most {MAX_ARGUMENTS} arguments")
        if name == "series":
            return self.series_call(node)
        if name == "round":
            return self.round_call(node)
        arguments = tuple(self.compile(argument) for argument in node.args)
        if name in {"min", "max", "coalesce"}:
            if not arguments:
                raise self.error(node, f"{name}() takes at least one argument")
            return _variadic(name, arguments)
        if name == "clamp":
            self.arity(node, name, 3)
            return _clamp(*arguments)
        self.arity(node, name, 1)
        return _unary_function(_MATH[name], arguments[0])

    def arity(self, node: ast.Call, name: str, count: int) -> None:
        if len(node.args) != count:
            plural = "argument" if count == 1 else "arguments"
            raise self.error(node, f"{name}() takes {count} {plural}, got {len(node.args)}")

    def series_call(self, node: ast.Call) -> Evaluator:
        self.arity(node, "series", 2)
        device_node, metric_node = node.args
        if not (isinstance(device_node, ast.Constant) and isinstance(device_node.value, str)):
            raise self.error(device_node, 'series() takes a quoted device key, e.g. series("dev-2", "level")')
        if not (isinstance(metric_node, ast.Constant) and isinstance(metric_node.value, str)):
            raise self.error(metric_node, 'series() takes a quoted metric name, e.g. series("dev-2", "level")')
        device, metric = device_node.value, metric_node.value
        if not DEVICE_KEY.match(device):
            raise self.error(device_node, f"'{device}' is not a device key")
        if not METRIC.match(metric):
            raise self.error(metric_node, f"'{metric}' is not a metric name")
        return self.other_series(device, metric)

    def round_call(self, node: ast.Call) -> Evaluator:
        if len(node.args) not in {1, 2}:
            raise self.error(node, f"round() takes 1 or 2 arguments, got {len(node.args)}")
        value = self.compile(node.args[0])
        digits = 0
        if len(node.args) == 2:
            given = node.args[1]
            number = self.number(given) if _is_number(given) else None
            if number is None or isinstance(number, bool) or number != int(number):
                raise self.error(given, "round() takes a whole number of digits, e.g. round(x, 1)")
            digits = int(number)
            if abs(digits) > MAX_ROUND_DIGITS:
                raise self.error(given, f"round() takes at most {MAX_ROUND_DIGITS} digits")

        def rounded(lookup: Lookup) -> Value:
            x = value(lookup)
            return None if x is None else float(round(x, digits))

        return rounded


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _is_number(node.operand)
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool)


def _arithmetic(left: Evaluator, right: Evaluator, function: Callable[[float, float], float]) -> Evaluator:
    def arithmetic(lookup: Lookup) -> Value:
        a = left(lookup)
        if a is None:
            return None
        b = right(lookup)
        if b is None:
            return None
        result = function(a, b)
        # inf and nan (overflow) are unknown, like every value nobody can act on
        return result if -_INF < result < _INF else None

    return arithmetic


def _guarded(left: Evaluator, right: Evaluator, function: Callable[[float, float], float]) -> Evaluator:
    def guarded(lookup: Lookup) -> Value:
        a = left(lookup)
        if a is None:
            return None
        b = right(lookup)
        if b is None:
            return None
        try:
            result = function(a, b)
        except (ArithmeticError, ValueError):  # x / 0, x % 0, 10 ** 400, (-8) ** 0.5
            return None
        return result if -_INF < result < _INF else None

    return guarded


_Combiner = Callable[[Evaluator, Evaluator, Callable[[float, float], float]], Evaluator]
_BINARY: Final[dict[type[ast.operator], tuple[_Combiner, Callable[[float, float], float]]]] = {
    ast.Add: (_arithmetic, operator.add),
    ast.Sub: (_arithmetic, operator.sub),
    ast.Mult: (_arithmetic, operator.mul),
    ast.Div: (_guarded, operator.truediv),
    ast.FloorDiv: (_guarded, operator.floordiv),
    ast.Mod: (_guarded, operator.mod),
    ast.Pow: (_guarded, math.pow),  # floats only: 10 ** 10 ** 10 overflows to unknown instead of running away
}


def _checked(function: Callable[[float], float]) -> Callable[[float], float | None]:
    def checked(x: float) -> float | None:
        try:
            result = float(function(x))
        except (ArithmeticError, ValueError):  # sqrt(-1), log(0), exp(1000)
            return None
        return result if -_INF < result < _INF else None

    return checked


_MATH: Final[dict[str, Callable[[float], float | None]]] = {
    "abs": _checked(abs),
    "ceil": _checked(math.ceil),
    "exp": _checked(math.exp),
    "floor": _checked(math.floor),
    "log": _checked(math.log),
    "log10": _checked(math.log10),
    "sqrt": _checked(math.sqrt),
}


def _unary_function(function: Callable[[float], float | None], argument: Evaluator) -> Evaluator:
    def call(lookup: Lookup) -> Value:
        x = argument(lookup)
        return None if x is None else function(x)

    return call


def _variadic(name: str, arguments: Sequence[Evaluator]) -> Evaluator:
    if name == "coalesce":

        def coalesce(lookup: Lookup) -> Value:
            for argument in arguments:
                value = argument(lookup)
                if value is not None:
                    return value
            return None

        return coalesce
    pick = max if name == "max" else min

    def extreme(lookup: Lookup) -> Value:
        values: list[float] = []
        for argument in arguments:
            value = argument(lookup)
            if value is None:
                return None
            values.append(value)
        return pick(values)

    return extreme


def _clamp(value: Evaluator, low: Evaluator, high: Evaluator) -> Evaluator:
    def clamp(lookup: Lookup) -> Value:
        x, lo, hi = value(lookup), low(lookup), high(lookup)
        if x is None or lo is None or hi is None:
            return None
        return lo if x < lo else hi if x > hi else x

    return clamp

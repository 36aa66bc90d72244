"""A Jinja2 sandbox with a meter: what one render may spend in work, time and size.

`SandboxedEnvironment` keeps a template away from the OS; it does not stop one from running for
hours or building a gigabyte (`{% for %}` in `{% for %}`, `'x' * 10**9`, `'%999999999d' % 1`). A
tick renders every message before it commits any, so one such template would hold up every channel.
`MeteredEnvironment` bounds each render by `RenderLimits`, cooperatively (FC freezes an instance
between invocations and a thread cannot be killed, so no watchdog thread):

- work: every loop iteration, call (methods, macros, `loop(...)`), filter and intercepted operator
  is a step; past `steps`, or past `seconds` on the injected clock (read at every step), the render
  stops. Loops are metered by rewriting each `{% for %}` iterable when the template is compiled.
- size: a string a template makes is at most `output_chars` longer than what it was made from (a
  long stage message may pass through `replace`; `'x' * 10**9` may not); a list or dict holds at
  most `output_chars` items and prints at most `output_chars` more than it holds (`[x] * n` holds
  one `x`, `str()` writes it n times); an integer keeps to `MAX_INT_DIGITS`. Operations whose
  arguments set the size of the result - `*`, `%`, `**`, widths (`center`, `ljust`, `{:999999}`,
  `indent`), `replace`, `join`, `translate`, `batch` - are refused before they allocate.
- in all: what a render makes (values, the text it writes into any buffer) adds up to at most
  `made_chars`, so a loop cannot pile up values that are each small enough.

A single step can still run for as long as one operation on inputs of that size takes (a sort, a
`wordwrap`), which is milliseconds: the clock is read again at the next step. Limits are enforced
only inside `metered()`; outside (Jinja2 folding constants while compiling) sizes are still checked.
"""

from __future__ import annotations

import codecs
import functools
import inspect
import math
import re
import string
import time
from collections import abc, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, NoReturn

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

# CPython's own limit on printing an int (sys.get_int_max_str_digits): a template has no use for more.
MAX_INT_DIGITS = 4300
# Codecs that run in linear time; punycode, for one, is quadratic.
LINEAR_CODECS = frozenset(
    {"utf-8", "ascii", "iso8859-1", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
)


@dataclass(frozen=True)
class RenderLimits:
    """What one render may spend; see the module docstring for what counts."""

    seconds: float = 1.0
    steps: int = 100_000
    output_chars: int = 256 * 1024
    made_chars: int = 4 * 1024 * 1024
    range_items: int = 10_000


class OverLimit(SecurityError):
    """A render went past one of its limits: `limit` is `time`, `steps`, `size`, `output` or `made`."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class Meter:
    """The work, time and size one render has spent so far; once over a limit it stays over."""

    def __init__(self, limits: RenderLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._started = clock()
        self.steps = 0
        self.made = 0
        self.over: OverLimit | None = None

    def step(self) -> None:
        """Count one step of work and read the clock."""
        self.steps += 1
        if self.over is not None:
            raise self.over
        if self.steps > self.limits.steps:
            self.fail(
                "steps",
                f"ran past its work budget of {self.limits.steps:,} steps (loop iterations, calls, filters)",
            )
        if self._clock() - self._started > self.limits.seconds:
            self.fail("time", f"ran past its time budget of {self.limits.seconds:g} s")

    def add_made(self, size: int) -> None:
        """Count `size` characters or items the render made."""
        self.made += size
        if self.made > self.limits.made_chars:
            self.fail("made", f"made more than {self.limits.made_chars:,} characters in all")

    def fail(self, limit: str, message: str) -> NoReturn:
        """Stop the render; every later step fails the same way, in case something caught the first."""
        self.over = OverLimit(limit, message)
        raise self.over


_METER: ContextVar[Meter | None] = ContextVar("dwnotify_render_meter", default=None)


@contextmanager
def metered(limits: RenderLimits, clock: Callable[[], float] = time.monotonic) -> Iterator[Meter]:
    """Meter the renders inside the block against `limits`."""
    meter = Meter(limits, clock)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def _refuse(message: str) -> NoReturn:
    """Stop for a value too big; through the meter when one runs, so that the render stays stopped."""
    meter = _METER.get()
    if meter is not None:
        meter.fail("size", message)
    raise OverLimit("size", message)


def _step() -> None:
    meter = _METER.get()
    if meter is not None:
        meter.step()


def _add_made(size: int) -> None:
    meter = _METER.get()
    if meter is not None:
        meter.add_made(size)


# --- measuring values ---------------------------------------------------------------------------


def _digits(number: int) -> int:
    return int(abs(number).bit_length() * 0.30103) + 1


@functools.lru_cache(maxsize=64)
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(item.name for item in fields(kind))


def _parts(value: object) -> tuple[int, Iterable[object]]:
    """What `value` prints around its parts (brackets, separators, field names), and the parts."""
    if isinstance(value, Namespace):
        value = dict(value._Namespace__attrs)  # what its repr shows
    if isinstance(value, Mapping):
        return 2 + 4 * len(value), [*value.keys(), *value.values()]
    if isinstance(
        value, list | tuple | set | frozenset | deque | abc.KeysView | abc.ValuesView | abc.ItemsView
    ):
        return 2 + 2 * len(value), value
    if is_dataclass(value) and not isinstance(value, type):
        names = _field_names(type(value))
        return len(type(value).__name__) + 2 + sum(len(name) + 3 for name in names), [
            getattr(value, name) for name in names
        ]
    return 64, ()  # a datetime, a generator, a macro: about as long as their repr


def _scalar_size(value: object) -> int | None:
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bytes | bytearray):
        return 4 * len(value) + 3
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return _digits(value)
    if isinstance(value, float | complex):
        return 24
    return None


def printed_size(value: object, limit: int) -> int:
    """About how many characters `str(value)` writes, shared parts counted each time; stops past `limit`."""
    return _size(value, limit, shared_once=False)


def held_size(value: object, limit: int) -> int:
    """Like `printed_size`, but each object counted once: about what `value` holds in memory."""
    return _size(value, limit, shared_once=True)


def _size(value: object, limit: int, *, shared_once: bool) -> int:
    total, stack, seen = 0, [value], set()
    while stack and total <= limit:
        item = stack.pop()
        if shared_once:
            if id(item) in seen:
                continue
            seen.add(id(item))
        size = _scalar_size(item)
        if size is None:
            size, parts = _parts(item)
            stack.extend(parts)
        total += size
    return total


def made_size(value: object) -> int:
    """The characters or items `value` itself holds (its parts are someone else's): what it cost to make."""
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset | deque):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _digits(value)
    return 1


# --- estimates for operations whose arguments set the size of the result ------------------------

_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)
_NUMBER = re.compile(r"\d+")


def _number(text: str) -> int:
    return int(text) if len(text) <= 18 else 10**18  # int() refuses more than 4,300 digits


def printf_size(template: str, args: object, limit: int) -> int:
    """About how long `template % args` is: its text plus each conversion's width, precision and value."""
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    total, index = len(template), 0

    def take() -> object:
        nonlocal index
        index += 1
        return positional[index - 1] if index <= len(positional) else None

    for key, width, precision, kind in _PRINTF.findall(template):
        if kind == "%":
            continue
        for part in (width, precision):
            if part == "*":
                star = take()
                total += abs(star) if isinstance(star, int) else 0
            elif part:
                total += _number(part)
        value = mapping.get(key) if key and mapping is not None else take()
        total += printed_size(value, limit)
        if total > limit:
            break
    return total


def format_size(template: str, args: Sequence[object], kwargs: Mapping[str, object], limit: int) -> int:
    """About how long `template.format(*args, **kwargs)` is: text, each field's value and its widths."""
    numbers = [abs(value) for value in (*args, *kwargs.values()) if isinstance(value, int)]
    total, auto = 0, 0
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return 0  # the call itself will say what is wrong with the format
    for literal, field, spec, _ in parsed:
        total += len(literal)
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name:
            name, auto = str(auto), auto + 1
        value = args[int(name)] if name.isdigit() and int(name) < len(args) else kwargs.get(name)
        widths = sum(_number(number) for number in _NUMBER.findall(spec or ""))
        if spec and "{" in spec:  # a nested field sets the width: any number passed may be it
            widths += max(numbers, default=0)
        total += printed_size(value, limit) + widths
        if total > limit:
            break
    return total


def replace_size(text: str, old: str, new: str, count: int | None) -> int:
    """How long `text.replace(old, new, count)` is, without making it."""
    found = len(text) + 1 if not old else text.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _codec(encoding: object) -> None:
    name = codecs.lookup(str(encoding)).name if isinstance(encoding, str) else "?"
    if name not in LINEAR_CODECS:
        raise SecurityError(f"codec {encoding!r} is not available in templates; use utf-8")


# --- the environment ----------------------------------------------------------------------------


class _Literal(str):
    """Template text (outside `{{ }}`), counted as it is written; `finalize` lets it through as is."""

    __slots__ = ()


class _Metered:
    """A `{% for %}` iterable that counts a step per item; keeps `len()` for `loop.length`."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]  # TypeError without one: LoopContext copes

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            _step()
            yield item


def _guard(name: str, node: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Instrument(NodeTransformer):
    """Rewrites a parsed template so loops, literals, joins and every output pass through the meter.

    The guards are `pass_context` filters, which Jinja2 never folds into constants while compiling:
    a constant in a loop still counts each time it is written.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _guard("_meter_loop", node.iter)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        node.nodes = [
            _guard("_meter_text", nodes.Const(child.data, lineno=child.lineno))
            if isinstance(child, nodes.TemplateData)
            else _guard("_meter_output", self.visit(child))
            for child in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _guard("_meter_concat", nodes.List(node.nodes, lineno=node.lineno))

    def _container(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return _guard("_meter_value", node)

    visit_List = visit_Dict = _container

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._container(node) if node.ctx == "load" else self.generic_visit(node)


class _MeteredCodeGenerator(CodeGenerator):
    """Compiles templates rewritten by `_Instrument` (Jinja2's documented `code_generator_class` hook)."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Instrument().visit(node)
        super().visit_Template(node, frame)


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _indent_size(arguments: Mapping[str, Any], limit: int) -> int:
    text, width = _text(arguments["s"]), arguments["width"]
    return len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))


def _wordwrap_size(arguments: Mapping[str, Any], limit: int) -> int:
    text, width = _text(arguments["s"]), max(1, int(arguments["width"]))
    return len(text) + (len(text) // width + 1) * len(arguments["wrapstring"] or "\n")


def _join_size(arguments: Mapping[str, Any], limit: int) -> int:
    items, separator = arguments["value"], _text(arguments["d"])
    return sum(printed_size(item, limit) for item in items) + len(separator) * max(0, len(items) - 1)


# Per filter whose arguments set its result's size, an estimate of that size from its bound arguments.
_FILTER_ESTIMATES: Mapping[str, Callable[[Mapping[str, Any], int], int]] = {
    "center": lambda a, _: max(len(_text(a["value"])), int(a["width"])),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": lambda a, _: replace_size(_text(a["s"]), _text(a["old"]), _text(a["new"]), a["count"]),
    "format": lambda a, limit: printf_size(_text(a["value"]), a["kwargs"] or tuple(a["args"]), limit),
    "join": _join_size,
    "batch": lambda a, _: int(a["linecount"]),
    "slice": lambda a, _: int(a["slices"]),
}


class MeteredEnvironment(SandboxedEnvironment):
    """A sandbox whose renders are bounded by `limits` inside `metered()` (see the module docstring).

    Subclasses register their filters, then call `meter_filters()`.
    """

    intercepted_binops = frozenset({"*", "%", "**", "+"})
    code_generator_class = _MeteredCodeGenerator

    def __init__(
        self, *, limits: RenderLimits, finalize: Callable[[Any], Any] | None = None, **options: Any
    ) -> None:
        self.limits = limits
        inner = finalize if finalize is not None else str
        super().__init__(finalize=lambda value: self._finalize_counted(inner, value), **options)
        self.globals["range"] = self._range

    def compile(self, *args: Any, **kwargs: Any) -> Any:
        """Compile outside any meter: a constant Jinja2 fails to fold is evaluated when rendered instead."""
        token = _METER.set(None)
        try:
            return super().compile(*args, **kwargs)
        finally:
            _METER.reset(token)

    def meter_filters(self) -> None:
        """Meter every registered filter and add the guards the rewritten templates call."""
        self.filters = {name: self._metered_filter(name, func) for name, func in self.filters.items()}

        @pass_context
        def meter_value(context: Context, value: object) -> object:
            return self.admit(value)

        @pass_context
        def meter_concat(context: Context, parts: list[Any]) -> str:
            return self.admit("".join(map(str, parts)), parts)  # type: ignore[return-value]

        self.filters.update(
            _meter_loop=_meter_loop,
            _meter_text=_meter_text,
            _meter_output=_meter_output,
            _meter_value=meter_value,
            _meter_concat=meter_concat,
        )

    def _finalize_counted(self, inner: Callable[[Any], Any], value: object) -> Any:
        if type(value) is _Literal:
            return value
        out = inner(value)
        _add_made(len(out) if isinstance(out, str) else 1)
        return out

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > self.limits.range_items:
            _refuse(f"range() of {len(numbers):,} items is longer than {self.limits.range_items:,}")
        return numbers

    # --- size checks

    def admit(self, result: object, inputs: Sequence[object] = (), *, made: bool = True) -> object:
        """`result` if the template may make it from `inputs`: within the size limits; counted if `made`."""
        if any(result is item for item in inputs):
            return result  # handed through, not made
        cap = self.limits.output_chars
        size = made_size(result)
        if made:
            _add_made(size)
        if isinstance(result, bool):
            pass
        elif isinstance(result, int):
            if size > MAX_INT_DIGITS:
                _refuse(f"would make a number of {size:,} digits, more than {MAX_INT_DIGITS:,}")
        elif isinstance(result, str | bytes | bytearray):
            self.check_size(size, f"a {type(result).__name__} of {size:,} characters", inputs)
        elif size > cap:
            _refuse(f"would make a {type(result).__name__} of {size:,} items, more than {cap:,}")
        elif size:
            printed = printed_size(result, 2 * cap + 2)
            if printed > cap and printed - held_size(result, printed) > cap:
                kind = type(result).__name__
                _refuse(f"would make a {kind} that prints {cap:,}+ characters more than it holds")
        return result

    def check_size(self, size: int, what: str, inputs: Sequence[object]) -> None:
        """Refuse making `size` characters unless they stay within the cap of what `inputs` already hold."""
        cap = self.limits.output_chars
        if size > cap and size > cap + held_size(tuple(inputs), size):
            _refuse(f"{what}: more than the {cap:,} characters a template may add to what it is given")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`*`, `%`, `**` and `+`, refused before they would make something too big."""
        _step()
        self._check_binop(operator, left, right)
        return self.admit(self.binop_table[operator](left, right), (left, right))

    def _check_binop(self, operator: str, left: Any, right: Any) -> None:
        numbers = all(isinstance(side, int) for side in (left, right))
        if operator == "*" and numbers:
            if _digits(left) + _digits(right) > MAX_INT_DIGITS + 1:
                _refuse(f"would make a product of more than {MAX_INT_DIGITS:,} digits")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(times, int) and isinstance(seq, str | bytes | list | tuple):
                    what = f"{type(seq).__name__} * {times:,}"
                    self.check_size(made_size(seq) * times, what, (seq,))
        elif operator == "**" and numbers and right > 0 and abs(left) > 1:
            digits = right * (math.log10(abs(left)) if left.bit_length() < 1000 else _digits(left))
            if digits > MAX_INT_DIGITS:
                _refuse(f"would make a power of {digits:,.0f} digits, more than {MAX_INT_DIGITS:,}")
        elif operator == "%" and isinstance(left, str):
            size = printf_size(left, right, self.limits.output_chars)
            self.check_size(size, f"% formatting of about {size:,} characters", (left, right))

    def getitem(self, obj: Any, argument: Any) -> Any:
        """A subscript; a slice is a new value and is counted."""
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            _add_made(made_size(value))
        return value

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A call from the template: a step, checked before when its arguments set its size, and after."""
        _step()
        receiver = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_Metered(args[0]), *args[1:])
        elif isinstance(receiver, str | bytes | bytearray):
            args = __self._check_method(receiver, name, args, kwargs)
        else:
            __self._check_format(getattr(__obj, "__wrapped__", None), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        inputs = (receiver, *args, *kwargs.values())
        if receiver is not None and modifies_known_mutable(receiver, name):
            __self.admit(receiver, made=False)  # what it grew to; what it took in was counted when made
        return __self.admit(result, inputs)

    def _check_method(
        self, text: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        """Refuse a str (or bytes) method whose arguments would make its result too big."""
        inputs = (text, *args, *kwargs.values())
        if name in ("encode", "decode"):
            _codec(kwargs.get("encoding", args[0] if args else "utf-8"))
        elif name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
            self.check_size(args[0], f"{name}({args[0]:,})", inputs)
        elif name == "expandtabs":
            tabsize = kwargs.get("tabsize", args[0] if args else 8)
            tabs = text.count(b"\t" if isinstance(text, bytes | bytearray) else "\t")
            self.check_size(len(text) + tabs * int(tabsize), "expandtabs()", inputs)
        elif name == "replace" and len(args) >= 2 and all(isinstance(arg, type(text)) for arg in args[:2]):
            count = args[2] if len(args) > 2 else kwargs.get("count")
            self.check_size(replace_size(text, args[0], args[1], count), "replace()", inputs)
        elif name == "join" and len(args) == 1:
            items = list(args[0])  # a generator can be measured only once it is a list
            total = sum(len(item) if isinstance(item, str | bytes) else 0 for item in items)
            self.check_size(total + len(text) * max(0, len(items) - 1), "join()", (text, items))
            return (items,)
        elif name == "translate" and args and isinstance(args[0], Mapping | Sequence):
            values = args[0].values() if isinstance(args[0], Mapping) else args[0]
            longest = max((len(value) for value in values if isinstance(value, str | bytes)), default=1)
            self.check_size(len(text) * max(1, longest), "translate()", inputs)
        return args

    def _check_format(self, method: object, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Refuse `'{:999999999}'.format(x)` and the like (we see the sandbox's wrapper of str.format)."""
        template = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if not isinstance(template, str) or name not in ("format", "format_map"):
            return
        if name == "format_map":
            args, kwargs = (), args[0] if args and isinstance(args[0], Mapping) else {}
        size = format_size(template, args, kwargs, self.limits.output_chars)
        self.check_size(
            size, f"str.{name}() of about {size:,} characters", (template, *args, *kwargs.values())
        )

    def _metered_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        estimate = _FILTER_ESTIMATES.get(name)
        signature = _call_signature(func) if estimate is not None else None

        @functools.wraps(func)
        def metered_filter(*args: Any, **kwargs: Any) -> Any:
            _step()
            if estimate is not None and signature is not None:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError:
                    return func(*args, **kwargs)  # it will say what is wrong with its arguments
                bound.apply_defaults()
                if name == "join":  # a generator can be measured only once it is a list
                    bound.arguments["value"] = list(bound.arguments["value"])
                try:
                    size = estimate(bound.arguments, self.limits.output_chars)
                except (TypeError, ValueError):
                    size = 0  # the filter itself will say what is wrong with its arguments
                args, kwargs = bound.args, bound.kwargs
                what = f"the {name} filter, about {size:,} characters"
                self.check_size(size, what, (*args, *kwargs.values()))
            return self.admit(func(*args, **kwargs), (*args, *kwargs.values()))

        return metered_filter


def _call_signature(func: Callable[..., Any]) -> inspect.Signature:
    """How Jinja2 calls a filter: an async-capable one (`slice`, `sum`) takes an eval context first."""
    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())
    passed = getattr(func, "jinja_pass_arg", None)
    if passed is not None and (
        not parameters or parameters[0].name not in ("eval_ctx", "context", "environment")
    ):
        parameters.insert(0, inspect.Parameter("passed", inspect.Parameter.POSITIONAL_ONLY))
    return signature.replace(parameters=parameters)


@pass_context
def _meter_loop(context: Context, iterable: Iterable[Any]) -> _Metered:
    return _Metered(iterable)


@pass_context
def _meter_text(context: Context, text: str) -> _Literal:
    _add_made(len(text))
    return _Literal(text)


@pass_context
def _meter_output(context: Context, value: object) -> object:
    return value  # only so that Jinja2 cannot fold the output into a constant: finalize counts it

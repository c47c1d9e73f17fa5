"""A Jinja2 sandbox with a time and a size budget, for customers' (untrusted) templates.

`SandboxedEnvironment` stops templates from reaching Python internals, but not from asking for
a gigabyte (`{{ 'x' * 10**9 }}`) or for 10^10 loop iterations: either would take the sender
process down (MemoryError, an OOM kill, or an event loop that never runs again). Here every
value a template builds stays under `max_chars` characters (or `MAX_INT_BITS` bits): each
operation that can grow a value is checked *before* it allocates (multiplication, power, `%`,
`+`, calls and filters with a size argument or sequence arguments), or right after when its
result is bounded by its already-bounded inputs (`~`, attribute and item reads), and all that
one render builds counts against `BUILT_PER_OUTPUT` times `max_chars`. Every call,
filter, operator and loop iteration also checks the render's deadline, so a template that
loops without output still stops in time. `render_limited()` streams the output and stops at
`max_chars` per field.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

__all__ = [
    "BUILT_PER_OUTPUT",
    "MAX_INT_BITS",
    "BoundedEnvironment",
    "TemplateLimitError",
    "render_limited",
]

BUILT_PER_OUTPUT = 10  # a render may build 10 times its output limit in all (see max_built)
MAX_INT_BITS = 65_536  # integers stay small enough that arithmetic on them is instant
_DIGITS = re.compile(r"\d+")
# The specs of conversions, where digits are widths and precisions (elsewhere they are text).
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([-#0 +]*\d*(?:\.\d*)?)")
_BRACE_SPEC = re.compile(r"\{[^{}:]*:([^{}]*)\}")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")  # '{:>{}}': a width taken from the arguments
_FOR_GUARD = "pm_bounded_iter"  # filter wrapped around every loop's iterable at compile time


_INJECTED = (Context, EvalContext, SandboxedEnvironment)  # passed by Jinja2, not the template


class TemplateLimitError(SecurityError):
    """The template asked for more output or time than a message may use."""


def _size(value: Any, depth: int = 0) -> int:
    """Characters a value stands for once joined or printed (estimated, never allocated)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset | dict) and depth < 3:
        items = value.values() if isinstance(value, dict) else value
        return len(value) + sum(_size(item, depth + 1) for item in items)
    return 0


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox whose templates cannot exceed `max_chars` per value or `seconds` per render.

    Immutable: lists, dicts and sets cannot be changed in place (`append`, `extend`,
    `update`...), which could grow one without building anything this budget sees; loop state
    goes in a `namespace()`, as Jinja2 intends."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, max_chars: int, seconds: float, **options: Any) -> None:
        super().__init__(**options)
        self.max_chars = max_chars
        self.seconds = seconds
        self.deadline: float | None = None  # set by render_limited(); None while compiling
        # Everything the template builds in one render, kept or not (a list it appends to
        # grows without any single value being large): at most this many characters.
        self.max_built = BUILT_PER_OUTPUT * max_chars
        self.built = 0
        self.code_generator_class = _BoundedCodeGenerator
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: no use in a real email
        self.filters = {name: self._guarded(name, f) for name, f in self.filters.items()}
        self.filters[_FOR_GUARD] = _bounded_iter

    # -- the budget ---------------------------------------------------------------------

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering takes longer than the limit of {self.seconds:g} s")

    def too_big(self, what: str) -> TemplateLimitError:
        return TemplateLimitError(f"{what} exceeds the output limit of {self.max_chars} characters")

    def bounded(self, value: Any) -> Any:
        """`value` itself, once it is known to be within the budget."""
        if _size(value) > self.max_chars:
            raise self.too_big("a value")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"a number exceeds the limit of {MAX_INT_BITS} bits")
        return value

    def built_value(self, value: Any) -> Any:
        """`value`, a new value the template built: bounded, and counted against the budget."""
        self.bounded(value)
        self.built += _size(value)
        if self.built > self.max_built:
            raise TemplateLimitError(
                f"the values it builds exceed the limit of {self.max_built} characters"
            )
        return value

    def check_arguments(
        self, args: Iterable[Any], kwargs: dict[str, Any], *, counts: bool = True
    ) -> None:
        """Sizes, and (`counts`: the integers are widths or counts, not values to print) the
        widths and counts a call may turn into output, checked before the call."""
        values = [*args, *kwargs.values()]
        for value in values if counts else ():
            if isinstance(value, int) and abs(value) > self.max_chars:
                raise self.too_big(f"a width or count of {value}")
        if sum(_size(value) for value in values) > self.max_chars:
            raise self.too_big("the arguments of a call")

    def check_format(self, pattern: Any, spec: re.Pattern[str] = _PERCENT_SPEC) -> None:
        """Widths and precisions in a format string (`'%0999999999d'`, `'{:>999999999}'`)."""
        if isinstance(pattern, str):
            for conversion in spec.findall(pattern):
                for digits in _DIGITS.findall(conversion):
                    if len(digits) > 9 or int(digits) > self.max_chars:
                        raise self.too_big(f"a format width of {digits}")

    def check_replace(self, text: Any, old: Any = "", new: Any = "") -> None:
        """`replace()` multiplies: each occurrence of `old` (every gap, for '') grows it."""
        text, old, new = str(text), str(old), str(new)
        if len(text) + text.count(old) * max(len(new) - len(old), 0) > self.max_chars:
            raise self.too_big("a replace()")

    # -- sandbox hooks --------------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.check_time()
        self.bounded(left)
        self.bounded(right)
        if operator == "*":
            _check_product(self, left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            self.check_format(left)
            values = right if isinstance(right, tuple) else (right,)
            self.check_arguments(values, {}, counts="*" in left)  # '%*d': a width argument
        return self.built_value(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.check_time()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", None)
        if isinstance(owner, str) and name in ("format", "format_map"):
            __self.check_format(owner, _BRACE_SPEC)
            # Values to print, unless a nested field takes one as a width: '{:>{}}'.
            __self.check_arguments(args, kwargs, counts=_NESTED_FIELD.search(owner) is not None)
        else:
            __self.check_arguments(args, kwargs)
        if isinstance(owner, str) and name == "replace" and args:
            __self.check_replace(owner, *args[:2])
        return __self.built_value(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.check_time()
        return self.bounded(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.check_time()
        return self.bounded(super().getitem(obj, argument))

    def _guarded(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """A filter checked like a call (`center(10**9)`, `join` of a huge list, `format`)."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.check_time()
            checked = [a for a in args if not isinstance(a, _INJECTED)]
            # The filtered value is printed, not a count: `{{ 5000000|filesizeformat }}`.
            self.check_arguments(checked[:1], {}, counts=False)
            if name == "format" and checked:  # `'%d'|format(n)`: like `'%d' % n`
                self.check_format(checked[0])
                self.check_arguments(checked[1:], kwargs, counts="*" in str(checked[0]))
            else:
                self.check_arguments(checked[1:], kwargs)
            if name == "replace" and len(checked) >= 3:
                self.check_replace(*checked[:3])
            return self.built_value(function(*args, **kwargs))

        # Keep what Jinja2 reads from a filter (pass_context, pass_environment...).
        if hasattr(function, "jinja_pass_arg"):
            guarded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
        guarded.__name__ = getattr(function, "__name__", name)
        return guarded


def _check_product(env: BoundedEnvironment, left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(count, int) and _size(sequence) * max(count, 0) > env.max_chars:
            raise env.too_big(f"repeating a value {count} times")
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > MAX_INT_BITS
    ):
        raise TemplateLimitError(f"a number exceeds the limit of {MAX_INT_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and max(base.bit_length() - 1, 1) * exponent > MAX_INT_BITS
    ):
        raise TemplateLimitError(f"a number exceeds the limit of {MAX_INT_BITS} bits")


@pass_context
def _bounded_iter(context: Context, iterable: Any) -> Iterator[Any]:
    """Every loop iterates through this: each iteration checks the render's deadline."""
    environment = context.environment
    assert isinstance(environment, BoundedEnvironment)
    for item in iterable:
        environment.check_time()
        yield item


class _BoundedCodeGenerator(CodeGenerator):
    """Wraps each loop's iterable in the deadline check and bounds each `~` concatenation."""

    def visit_Template(  # noqa: N802 (Jinja2's visitor names)
        self, node: nodes.Template, frame: Frame | None = None
    ) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _FOR_GUARD, [], [], None, None, lineno=loop.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(  # noqa: N802
        self, node: nodes.Concat, frame: Frame
    ) -> None:
        self.write("environment.built_value(")
        super().visit_Concat(node, frame)
        self.write(")")


def render_limited(template: Template, context: dict[str, Any]) -> str:
    """Render with the environment's budget: stops at its output limit or its deadline."""
    environment = template.environment
    assert isinstance(environment, BoundedEnvironment)
    environment.deadline = time.monotonic() + environment.seconds
    environment.built = 0
    try:
        # No deadline check per chunk: the text between two hooks is the template's own.
        chunks: list[str] = []
        size, limit = 0, environment.max_chars
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limit:
                raise environment.too_big("the rendered text")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        environment.deadline = None

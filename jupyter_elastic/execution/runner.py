"""The one way a ``%%gpu`` body is executed, on a worker and in the kernel (``--local``).

Both paths run the cell in a fresh ``__main__``-like namespace made of its inputs, with the
cell's own line numbers (``%%gpu`` is line 1) in tracebacks, the last expression's value
returned as in any cell, and the names it bound collected afterwards. What differs is
around it: a worker routes output and caches inputs (``worker.py``); the kernel copies
inputs and applies ``--timeout`` with an alarm (``kernel/local.py``).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import linecache
import traceback
from collections.abc import Callable, Iterator
from typing import Any


def fresh_globals(inputs: dict[str, Any], display: Callable[..., Any]) -> dict[str, Any]:
    """A new module namespace holding the cell's inputs."""
    return {"__name__": "__main__", "__builtins__": builtins, "display": display, **inputs}


@contextlib.contextmanager
def cell_source(filename: str, source: str, line_offset: int) -> Iterator[None]:
    """Make ``source`` readable under ``filename`` for tracebacks while the cell runs."""
    linecache.cache[filename] = (len(source), None,
                                 ["\n"] * line_offset + source.splitlines(True), filename)
    try:
        yield
    finally:
        linecache.cache.pop(filename, None)


def execute(source: str, line_offset: int, filename: str, globals_: dict[str, Any]) -> Any:
    """Run ``source`` in ``globals_``; return the last expression's value (or None).

    Examples
    --------
    >>> g = fresh_globals({"x": 2}, print)
    >>> execute("y = x + 1\\ny * 10", 1, "<cell>", g), g["y"]
    (30, 3)
    """
    tree = ast.parse(source, filename=filename)
    ast.increment_lineno(tree, line_offset)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        final = tree.body.pop()
        assert isinstance(final, ast.Expr)
        last = ast.Expression(final.value)
    exec(compile(tree, filename, "exec"), globals_)
    return eval(compile(last, filename, "eval"), globals_) if last is not None else None


def collect(
    globals_: dict[str, Any],
    names: list[str],
    inputs: dict[str, Any],
    convert: Callable[[Any], Any] = lambda value: value,
) -> tuple[dict[str, Any], list[str]]:
    """The values of ``names`` the cell bound (through ``convert``), and the inputs it
    deleted (``del x`` in the cell deletes ``x`` in the notebook too)."""
    outputs: dict[str, Any] = {}
    deleted: list[str] = []
    for name in names:
        if name in globals_:
            outputs[name] = convert(globals_[name])
        elif name in inputs:
            deleted.append(name)
    return outputs, deleted


def format_traceback(exc: BaseException, filename: str) -> list[str]:
    """The traceback from the first frame in the cell on (runner frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return [line.rstrip("\n") for line in "".join(lines).splitlines()]

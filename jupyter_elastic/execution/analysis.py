"""Cell analysis: parse a cell once, and find the names it reads and the names it binds.

:func:`analyze_cell` finds the names a cell reads (free names that exist in the user
namespace, read before the cell itself surely binds them) and the names it binds at top
level; those are what travel to the worker and what comes back.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CellSyntaxError

#: Names an IPython shell puts in the namespace that never travel.
SHELL_NAMES = frozenset({"In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih",
                         "_dh", "exit", "quit", "get_ipython", "display", "__builtin__",
                         "__builtins__", "__name__", "__doc__", "__spec__", "__loader__",
                         "__package__"})


@dataclass
class CellPlan:
    """What a cell reads and binds, and the parsed body ready to run."""

    source: str
    inputs: list[str]
    outputs: list[str]
    line_offset: int = 1


def _bound_names(tree: ast.Module) -> list[str]:
    """Names bound at the module level of ``tree``, in first-bound order."""
    names: list[str] = []

    def add(name: str) -> None:
        if name not in names:
            names.append(name)

    class Binder(ast.NodeVisitor):
        def visit_Name(self, node: ast.Name) -> None:
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                add(node.id)

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            add(node.name)
            for dec in node.decorator_list:
                self.visit(dec)
            for inner in ast.walk(node):  # `global x` inside a function binds x here
                if isinstance(inner, ast.Global):
                    for name in inner.names:
                        add(name)

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            add(node.name)

        def visit_Lambda(self, node: ast.Lambda) -> None:
            return

        def _comprehension(self, node: ast.AST) -> None:
            # comprehension targets are local to the comprehension, but walrus inside binds outside
            for child in ast.walk(node):
                if isinstance(child, ast.NamedExpr) and isinstance(child.target, ast.Name):
                    add(child.target.id)

        visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                add(alias.asname or alias.name.split(".")[0])

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            for alias in node.names:
                if alias.name != "*":
                    add(alias.asname or alias.name)

        def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
            if node.name:
                add(node.name)
            self.generic_visit(node)

        def visit_MatchAs(self, node: ast.MatchAs) -> None:
            if node.name:
                add(node.name)
            self.generic_visit(node)

        def visit_MatchStar(self, node: ast.MatchStar) -> None:
            if node.name:
                add(node.name)

        def visit_Global(self, node: ast.Global) -> None:
            for name in node.names:
                add(name)

    Binder().visit(tree)
    return names


def _read_names(tree: ast.Module) -> set[str]:
    """Every name loaded anywhere in ``tree`` (functions and classes included)."""
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Load, ast.Del))
    } | {
        name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Global, ast.Nonlocal))
        for name in node.names
    } | {
        node.target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
    }


def _surely_bound(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds whenever it completes (not ``if``/``for`` bodies)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {a.asname or a.name.split(".")[0] for a in stmt.names if a.name != "*"}
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets = [stmt.target]
    names: set[str] = set()
    for target in targets:
        stack = [target]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, (ast.Tuple, ast.List)):
                stack.extend(node.elts)
            elif isinstance(node, ast.Starred):
                stack.append(node.value)
    return names


def _names_needed(tree: ast.Module) -> set[str]:
    """Names some statement reads before an earlier statement of the cell surely binds them."""
    bound: set[str] = set()
    needed: set[str] = set()
    for stmt in tree.body:
        needed |= _read_names(ast.Module(body=[stmt], type_ignores=[])) - bound
        bound |= _surely_bound(stmt)
    return needed


def parse_cell(source: str, line_offset: int = 1, cell_name: str = "cell") -> ast.Module:
    """Parse ``source``; a syntax error becomes one line naming the line in the cell."""
    try:
        tree = ast.parse(source, filename=cell_name, mode="exec")
    except SyntaxError as exc:
        line = (exc.lineno or 1) + line_offset
        text = (exc.text or "").strip()
        raise CellSyntaxError(
            f"the cell cannot be parsed: {exc.msg} at line {line}"
            + (f": {text!r}" if text else ""),
            hint="fix the syntax; the %%gpu line is line 1",
        ) from None
    return tree


def analyze_cell(
    source: str,
    namespace: dict[str, Any],
    *,
    hidden: Iterable[str] = (),
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    line_offset: int = 1,
) -> CellPlan:
    """Find what the cell reads from ``namespace`` and what it binds.

    ``inputs``/``outputs`` given (``--in``/``--out``) replace what the analysis finds.

    Examples
    --------
    >>> plan = analyze_cell("y = x + 1", {"x": 1})
    >>> plan.inputs, plan.outputs
    (['x'], ['y'])
    """
    tree = parse_cell(source, line_offset)
    skip = SHELL_NAMES | set(hidden)
    if inputs is None:
        read = _names_needed(tree)
        inputs = sorted(n for n in read if n in namespace and n not in skip and not _is_builtin(n, namespace))
    if outputs is None:
        outputs = [n for n in _bound_names(tree) if n not in SHELL_NAMES]
    return CellPlan(source=source, inputs=inputs, outputs=outputs, line_offset=line_offset)


def _is_builtin(name: str, namespace: dict[str, Any]) -> bool:
    return hasattr(builtins, name) and namespace.get(name) is getattr(builtins, name)

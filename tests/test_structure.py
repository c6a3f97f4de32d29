"""The package's shape, as docs/architecture.md states it: layers that import one way, functions a page
long, and solver facts that live in the registry (no module outside `samplers/` tests a solver's name)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import diffsolve

ROOT = Path(diffsolve.__file__).resolve().parent
ARCHITECTURE = ROOT.parent / "docs" / "architecture.md"
MAX_BODY = 80


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name under `diffsolve` (`sampling`, `samplers.pc`, ...)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__") or "__init__"] = path
    return out


def _layers() -> list[list[str]]:
    """The table of layers in docs/architecture.md: for each row, top to bottom, the module names it lists."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("| layer | modules | rule |") :].split("\n\n")[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = line.split("|")
        names = re.findall(r"`([a-z_/]+)(?:\.py|/)?`", cells[2])
        rows.append([n.removesuffix("/") for n in names])
    return rows


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    head = module.split(".")[0]
    for i, names in enumerate(layers):
        if head in names:
            return i
    return None


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The diffsolve modules a module imports (relative imports, resolved to their top-level name)."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                out.add(target[0])
            else:  # `from . import x, y` at the top level: modules, or the package's public API
                out.update(
                    a.name if a.name in modules or a.name == "__version__" else "__init__" for a in node.names
                )
    return out


def test_every_module_has_a_layer_and_imports_only_from_layers_above_or_its_own():
    layers = _layers()
    assert len(layers) >= 8
    bad, homeless = [], []
    modules = _modules()
    for module, path in modules.items():
        if module in ("__init__", "__main__", "_version"):
            continue  # the package's face: it re-exports every layer
        own = _layer_of(module, layers)
        if own is None:
            homeless.append(module)
            continue
        for target in _imports(path, module, modules):
            if target == "__version__" or target == module.split(".")[0]:
                continue
            # the package's face re-exports every layer: only the interfaces may import it
            layer = len(layers) - 1 if target == "__init__" else _layer_of(target, layers)
            if layer is None or layer > own:
                bad.append(f"{module} (layer {own}) imports {target} (layer {layer})")
    assert not homeless, f"modules in no layer of docs/architecture.md: {homeless}"
    assert not bad, "imports that point up the table of docs/architecture.md:\n" + "\n".join(bad)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:] or body
    return node.end_lineno - body[0].lineno + 1


def test_no_function_outside_the_cli_is_longer_than_a_page():
    long = []
    for module, path in _modules().items():
        if module.startswith("cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_BODY:
                long.append(f"{module}.{node.name}: {_body_lines(node)} lines")
    assert not long, f"functions over {MAX_BODY} lines of body: {long}"


def _solver_literals(node: ast.AST, names: set[str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for e in node.elts for v in _solver_literals(e, names)]
    return []


def test_no_module_outside_samplers_tests_a_solver_name():
    names = {s.name for s in diffsolve.solvers()} | {
        n.removeprefix("ode:") for n in (s.name for s in diffsolve.solvers())
    }
    found = []
    for module, path in _modules().items():
        if module.startswith("samplers"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    found += [
                        f"{module}:{node.lineno} compares with {v!r}" for v in _solver_literals(side, names)
                    ]
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith")
                and any(isinstance(a, ast.Constant) and a.value in ("sde:", "ode:") for a in node.args)
            ):
                found.append(f"{module}:{node.lineno} tests a solver-name prefix")
    assert not found, "solver facts outside the registry:\n" + "\n".join(found)


@pytest.mark.parametrize("module", ["samplers.pc", "samplers.adaptive_sde", "samplers.ancestral", "samplers.noise",
                                    "samplers.generic", "samplers.per_sample"])  # fmt: skip
def test_runners_receive_randomness_never_seeds(module):
    """docs/architecture.md: a runner draws from `req.noise`, never from `req.seed` or `req.row_start`."""
    source = _modules()[module].read_text()
    assert not re.search(r"\breq\.(seed|row_start)\b", source)


def test_no_runner_reads_a_seed():
    """The same rule over every module of samplers/: none reads a request's seed or row_start."""
    readers = [m for m, p in _modules().items() if m.startswith("samplers.") and m != "samplers.base"
               and re.search(r"\breq(uest)?\.(seed|row_start)\b", p.read_text())]  # fmt: skip
    assert not readers


def test_no_string_holds_a_control_character():
    """A LaTeX command in a non-raw string loses its backslash to an escape (`\\bar` -> backspace + "ar",
    `\\top` -> tab + "op", `\\nabla` -> newline + "abla" in a docstring's formula): no string constant of
    the package may hold a bell, backspace, tab, vertical tab or form feed, and no docstring a line
    that starts with the tail of a LaTeX command."""
    import warnings

    found = []
    for module, path in _modules().items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an invalid escape (`\epsilon` in a non-raw string) warns
            try:
                compile(path.read_text(), str(path), "exec")
            except (SyntaxError, DeprecationWarning, SyntaxWarning) as err:
                found.append(f"{module}: {err}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                bad = set(node.value) & set("\a\b\t\v\f")
                if bad or re.search(r"\n\s*(abla|ewline|u\b|eq\b)", node.value):
                    found.append(f"{module}:{node.lineno} {sorted(map(repr, bad))}")
    assert not found, found


def test_every_entry_point_shows_progress_by_default_and_a_hidden_bar_costs_nothing():
    # Issue: compare showed a bar by default, sample and log_likelihood did not. One rule: every public
    # function with a `progress` flag shows a bar by default, which tqdm hides where stderr is not a
    # terminal; a hidden bar attaches no callback (no host sync per score call on a GPU).
    import inspect

    import diffsolve as ds
    import diffsolve.analysis as analysis
    import diffsolve.compare as compare
    import diffsolve.training as training
    from diffsolve.sampling import _Progress

    flags = {}
    for module in (ds, analysis, compare, training):
        for name in getattr(module, "__all__", dir(module)):
            fn = getattr(module, name, None)
            if inspect.isfunction(fn) and "progress" in inspect.signature(fn).parameters:
                param = inspect.signature(fn).parameters["progress"]
                if isinstance(param.default, bool):
                    flags[f"{module.__name__}.{name}"] = param.default
    assert {
        "diffsolve.sample", "diffsolve.log_likelihood", "diffsolve.compare.compare", "diffsolve.training.train",
        "diffsolve.analysis.convergence_order",
    } <= set(flags)  # fmt: skip
    assert all(flags.values()), {k: v for k, v in flags.items() if not v}
    assert _Progress.shown(1.0, 1e-3, "x") is None  # pytest captures stderr: not a terminal

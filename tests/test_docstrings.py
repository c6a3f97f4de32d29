"""Docstrings: every public name has one, and it documents every argument (Google style).

Public means in a module's `__all__`. Functions need an `Args:` entry per parameter; classes need one
per constructor parameter (in the class or `__init__` docstring), and dataclasses an `Attributes:`
entry per field. The API reference is generated from these docstrings, so this is what keeps it whole.
"""

import dataclasses
import importlib
import inspect
import pkgutil
import re

import diffsolve


def _modules():
    names = ["diffsolve"]
    for pkg in ("diffsolve", "diffsolve.samplers", "diffsolve.adapters"):
        mod = importlib.import_module(pkg)
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)]
    return [importlib.import_module(n) for n in names if not n.endswith("__main__")]


def _public():
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            yield f"{mod.__name__}.{name}", getattr(mod, name)


def documented(doc: str, section: str) -> set[str]:
    """Names listed in a Google-style section (`Args:`, `Attributes:`) of a docstring."""
    match = re.search(rf"^{section}:\n((?:[ \t]+.*\n?|\n)*)", doc, re.M)
    if match is None:
        return set()
    return {n.lstrip("*") for n in re.findall(r"^    (\*{0,2}\w+)(?: \([^)]*\))?:", match.group(1), re.M)}


def _parameters(fn) -> set[str]:
    return {
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def test_section_parser():
    doc = "Summary.\n\nArgs:\n    x: The x.\n        More on x.\n    **kwargs: Rest.\n\nReturns:\n    y: not an arg.\n"
    assert documented(doc, "Args") == {"x", "kwargs"}
    assert documented(doc, "Attributes") == set()


def test_every_public_name_has_a_docstring():
    missing = []
    for qual, obj in _public():
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
            missing.append(qual)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(value) and not inspect.getdoc(value):
                    missing.append(f"{qual}.{attr}")
    assert not missing, missing
    assert diffsolve.__doc__


def test_every_argument_is_documented():
    undocumented = {}
    for qual, obj in _public():
        doc = inspect.getdoc(obj) or ""
        if inspect.isfunction(obj):
            need, have = _parameters(obj), documented(doc, "Args")
        elif inspect.isclass(obj) and not issubclass(obj, BaseException):
            if dataclasses.is_dataclass(obj):
                need, have = {f.name for f in dataclasses.fields(obj)}, documented(doc, "Attributes")
            elif obj.__init__ is not object.__init__:
                need = _parameters(obj.__init__)
                have = documented(doc, "Args") | documented(inspect.getdoc(obj.__init__) or "", "Args")
            else:
                continue
        else:
            continue
        if need - have:
            undocumented[qual] = sorted(need - have)
    assert not undocumented, undocumented

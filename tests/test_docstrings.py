"""Every public name (in a module's `__all__`) and every public method of a public class has a docstring."""

import importlib
import inspect
import pkgutil

import diffsolve


def _modules():
    names = ["diffsolve"]
    for pkg in ("diffsolve", "diffsolve.samplers", "diffsolve.adapters"):
        mod = importlib.import_module(pkg)
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)]
    return [importlib.import_module(n) for n in names if not n.endswith("__main__")]


def test_every_public_name_has_a_docstring():
    missing = []
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
                missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(value) and not inspect.getdoc(value):
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    assert not missing, missing
    assert diffsolve.__doc__

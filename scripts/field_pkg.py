"""Unsloth's norm kernels as an importable package, without the rest of Unsloth.

    python3 scripts/field_pkg.py extract WHEEL DEST    # here: the files the norm kernels import
    python3 scripts/field_pkg.py build SRC DEST        # on the GPU machine: a package on PYTHONPATH

``extract`` copies out of an Unsloth wheel (or an unpacked sdist folder) ``unsloth/kernels/
rms_layernorm.py`` and ``layernorm.py`` (where the release has it) and every module they import
relative to the package at module level, transitively; nothing else. ``build`` copies such a tree
to DEST, gives each folder an empty ``__init__.py`` of its own (Unsloth's own imports the world:
models, trainers, its patching package) and writes minimal stand-ins for the packages those files
import and the machine lacks: ``unsloth_zoo`` (a version class, a logger and two decorators the
kernels' modules read at import), ``bitsandbytes`` for releases whose utils import it unguarded
(every attribute a placeholder that raises when called: the norm kernels never call it), and
``transformers``' ``LlamaRMSNorm`` base class where transformers is not installed (CPU). The
stand-ins are written at run time, outside the checkout; nothing of Unsloth is committed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import sys
import zipfile

ENTRY = ("unsloth/kernels/rms_layernorm.py", "unsloth/kernels/layernorm.py")


def _module_level_imports(src: str, path: str) -> list[str]:
    """Files (relative to the wheel's root) that ``path`` imports from unsloth at module level,
    in ``if`` and ``try`` blocks too; imports inside functions run only when those are called."""
    package = os.path.dirname(path).split("/")
    found: list[str] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                elif (node.module or "").split(".")[0] == "unsloth":
                    base = []
                else:
                    continue
                mod = base + (node.module.split(".") if node.module else [])
                found.append("/".join(mod) + ".py")
                found.extend("/".join(mod + [a.name]) + ".py" for a in node.names)  # from . import x
            elif isinstance(node, ast.Import):
                found.extend(a.name.replace(".", "/") + ".py" for a in node.names if a.name.split(".")[0] == "unsloth")
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if inner and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(inner)

    visit(ast.parse(src).body)
    return found


def extract(wheel: str, dest: str) -> list[str]:
    if os.path.isdir(wheel):
        def read(name: str) -> str | None:
            p = os.path.join(wheel, name)
            return open(p, encoding="utf-8").read() if os.path.isfile(p) else None
    else:
        zf = zipfile.ZipFile(wheel)
        names = set(zf.namelist())

        def read(name: str) -> str | None:
            return zf.read(name).decode("utf-8") if name in names else None

    todo, seen = list(ENTRY), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = read(name)
        if text is None:
            continue  # a name imported from a package, or a file this release does not have
        out = os.path.join(dest, name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        todo += _module_level_imports(text, name)
    return sorted(n for n in seen if os.path.isfile(os.path.join(dest, n)))


def _absent(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


def _imports_unguarded(path: str, package: str) -> bool:
    """Whether the file imports ``package`` at module level outside a try block."""
    if not os.path.isfile(path):
        return False
    tree = ast.parse(open(path, encoding="utf-8").read())
    return any(isinstance(n, ast.Import) and any(a.name.split(".")[0] == package for a in n.names)
               for n in tree.body)


_PLACEHOLDER = '''
class _Missing:
    """Stands for an attribute of a package that is not installed; calling it says so."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Missing(self._name + "." + attr)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(self._name + ": a placeholder written by normgate's scripts/field_pkg.py; "
                           "the package is not installed")


def __getattr__(attr):
    return _Missing(__name__ + "." + attr)
'''

_STUBS = {
    # every other name these modules are asked for is a placeholder (a release may import more)
    "unsloth_zoo": {
        "__init__.py": _PLACEHOLDER,
        "utils.py": "from packaging.version import Version  # noqa: F401\n" + _PLACEHOLDER,
        "log.py": "import logging\n\nlogger = logging.getLogger('unsloth_zoo')\n" + _PLACEHOLDER,
        "temporary_patches/__init__.py": _PLACEHOLDER,
        # a decorator used bare or with options; the norm kernels never reach what it decorates
        "temporary_patches/common.py": "def torch_compile(fn=None, **options):\n"
                                       "    return fn if fn is not None else (lambda f: f)\n" + _PLACEHOLDER,
        "patching_utils.py": _PLACEHOLDER,
    },
    "bitsandbytes": {"__init__.py": "from . import functional  # noqa: F401\n" + _PLACEHOLDER,
                     "functional.py": _PLACEHOLDER},
    "transformers": {
        "__init__.py": "", "models/__init__.py": "", "models/llama/__init__.py": "",
        "models/llama/modeling_llama.py": "import torch\n\n\nclass LlamaRMSNorm(torch.nn.Module):\n"
                                          "    pass\n",
    },
}


def build(src: str, dest: str) -> list[str]:
    """Copy the extracted tree to ``dest`` with empty ``__init__`` files; write the stand-ins the
    machine needs; return the names of those written."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(src, "unsloth"), os.path.join(dest, "unsloth"))
    for root, _dirs, _files in os.walk(os.path.join(dest, "unsloth")):
        open(os.path.join(root, "__init__.py"), "w").close()
    needed = {"unsloth_zoo": True,
              "bitsandbytes": _imports_unguarded(os.path.join(dest, "unsloth/kernels/utils.py"), "bitsandbytes"),
              "transformers": True}
    written = []
    for package, files in _STUBS.items():
        if not (needed[package] and _absent(package)):
            continue
        for name, text in files.items():
            path = os.path.join(dest, package, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        written.append(package)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("extract", "build"):
        sys.exit(__doc__)
    if sys.argv[1] == "extract":
        print("\n".join(extract(sys.argv[2], sys.argv[3])))
    else:
        print("stand-ins: " + (", ".join(build(sys.argv[2], sys.argv[3])) or "none"))

"""What only a checkout of normgate's repository has: the developer zoo (``zoo/``).

The zoo (buggy mutants of our kernels, their Triton sources, the kill matrix behind ``normgate
zoo``) measures how much the checks catch; it is how normgate is developed, not something a user
of the harness runs, so it is not in the wheel (README: "Detection power"). From a checkout
installed with ``pip install -e .``, ``normgate`` lives in ``harness/`` and the zoo beside it; it
is imported from its folder as the package ``normgate_zoo``. Nothing is put on ``sys.path``: the
checkout's root holds ``kernels/`` and ``harness/``, which must never be importable by those names
(DESIGN.md: Hugging Face's ``kernels`` package).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: the checkout's root, when normgate is installed from one (harness/ is this file's folder)
ROOT = Path(__file__).resolve().parent.parent
ZOO_PACKAGE = "normgate_zoo"


class NoCheckout(ImportError):
    """The zoo was asked for where normgate is installed from a wheel."""


def zoo_folder() -> Path | None:
    """The checkout's ``zoo/``, or None (a wheel's site-packages has no pyproject.toml)."""
    folder = ROOT / "zoo"
    if (ROOT / "pyproject.toml").is_file() and (folder / "__init__.py").is_file() and (folder / "catalog.py").is_file():
        return folder
    return None


def zoo() -> ModuleType:
    """The zoo package (``normgate_zoo``), imported from the checkout once per process."""
    if ZOO_PACKAGE in sys.modules:
        return sys.modules[ZOO_PACKAGE]
    folder = zoo_folder()
    if folder is None:
        raise NoCheckout("the zoo is in normgate's repository, not in the wheel: run it from a checkout "
                         "(git clone ...; pip install -e .)")
    spec = importlib.util.spec_from_file_location(ZOO_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[ZOO_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(ZOO_PACKAGE, None)
        raise
    return module

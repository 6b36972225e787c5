"""Registers the zoo's candidates; passed to ``--load`` so that workers and replay commands find them."""

import importlib

from normgate import checkout

checkout.zoo()  # the package, imported from this checkout (not on sys.path, not in the wheel)
importlib.import_module(checkout.ZOO_PACKAGE + ".catalog").register_all()

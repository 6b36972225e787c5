"""Registers the zoo's candidates; passed to ``--load`` so that workers and replay commands find them."""

from normgate.zoo.catalog import register_all

register_all()

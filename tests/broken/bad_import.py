"""A --load file that fails to import: `normgate run` must exit 2 and show this traceback as the cause."""

import normgate  # noqa: F401


def _helper() -> None:
    raise RuntimeError("bad_import: this file is broken on purpose")


_helper()

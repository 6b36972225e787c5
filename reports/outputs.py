"""Where a command may write: never over one of its own inputs, never through a special file.

Every normgate command that writes a file (``run --out/--report``, ``report -o``, ``baseline -o``,
``gate --summary/--junit``) checks its outputs here before it reads or runs anything, so a mistaken
command line destroys nothing:

- an output that is also one of the command's inputs (``report R -o R``, ``gate --junit
  BASELINE``, ``run --out X --report X``), or two outputs on one file, is refused;
- an output path that exists and is not a regular file (a symlink, a FIFO, a device node, a
  socket) is refused rather than replaced or written through: outputs are written to a temporary
  file and renamed, which would replace the link or node itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable


class OutputError(Exception):
    """An output path that must not be written. ``str()`` is one line for the user."""


def special_kind(path: str) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a symlink is never followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return None  # unreadable metadata: the write itself will say why
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None  # folders have their own message where the output is checked
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (hard links and ``./x`` vs ``x`` included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Iterable[tuple[str, str | None]], inputs: Iterable[tuple[str, str | None]]) -> None:
    """Refuse outputs that would destroy an input, another output, or a special file.

    ``outputs`` and ``inputs`` are (how the user named it, path) pairs; None paths are skipped."""
    outs = [(flag, p) for flag, p in outputs if p]
    ins = [(what, p) for what, p in inputs if p]
    for flag, path in outs:
        kind = special_kind(path)
        if kind:
            raise OutputError(f"{flag} {path} is {kind}; normgate writes outputs as regular files only "
                              "(it would replace it): give another path")
        for what, src in ins:
            if same_file(path, src):
                raise OutputError(f"{flag} {path} is also {what}: writing it would destroy that input; "
                                  "give another output path")
    for i, (flag, path) in enumerate(outs):
        for flag2, path2 in outs[i + 1:]:
            if same_file(path, path2):
                raise OutputError(f"{flag} and {flag2} name one file ({path}): give each its own path")

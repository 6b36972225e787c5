"""The progress of a run on stderr: a status line on a terminal; periodic lines and every failure
elsewhere (CI logs)."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter


def _safe(text, limit: int) -> str:
    """Kernel-provided text for the terminal or a CI log, made safe the way the gate makes it:
    one line, no terminal codes, so none can start a line (a GitHub ``::error`` command)."""
    from normgate.reports.text import one_line

    return one_line(text, limit)


class Progress:
    """A status line on a terminal; periodic lines and every failure elsewhere (CI logs)."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.done = total, done
        self.cases = 0
        self.counts: Counter = Counter()
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.current = ""

    def event(self, kind: str, info: dict) -> None:
        if kind == "task_start":
            t = info["task"]
            self.current = f"{t.kernel} {t.dtype} {t.check}"
        elif kind == "line":
            self.cases += 1
            self.counts[info["verdict"]] += 1
            if info["verdict"] in ("fail", "error") and not self.tty:
                print(f"normgate: {info['verdict'].upper()} {_safe(info['kernel'], 120)} {info['dtype']} "
                      f"{info['check']}: {_safe(info['reason'], 200)}", file=sys.stderr)
        elif kind in ("task_done", "task_error"):
            self.done += 1
            if kind == "task_error":
                # a worker that died or hung: its error line comes from the supervisor, not as a
                # "line" event, so it is counted and echoed here
                self.counts["error"] += 1
                self.cases += 1
                t = info["task"]
                if not self.tty:
                    print(f"normgate: ERROR {t.kernel} {t.dtype} {t.check}: {_safe(info['reason'], 200)}",
                          file=sys.stderr)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 30.0):
            return
        self.last = now
        c = self.counts
        text = (f"[{self.done}/{self.total} tasks] {self.cases} cases: {c['pass']} pass, {c['fail']} fail, "
                f"{c['error']} error, {c['range']} range | {self.current}")
        if self.tty:
            cols = max(40, os.get_terminal_size(sys.stderr.fileno()).columns - 1)
            sys.stderr.write("\r" + text[:cols].ljust(cols))
            sys.stderr.flush()
        else:
            print("normgate: " + text, file=sys.stderr)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")

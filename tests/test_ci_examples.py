"""The example CI workflows call normgate with flags that exist (they cannot go stale)."""

import re
import shlex
from pathlib import Path

import pytest

from normgate.cli import build_parser

CI = Path(__file__).parent.parent / "docs" / "ci"


def _commands(text: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("run:").strip().removeprefix("- run:").strip()
        if line.startswith("normgate "):
            line = re.sub(r"\$\{\{[^}]*\}\}", "X", line).split(" || ")[0]
            cmds.append(shlex.split(line)[1:])
    return cmds


@pytest.mark.parametrize("workflow", sorted(p.name for p in CI.glob("*.yml")))
def test_workflow_commands_parse(workflow):
    cmds = _commands((CI / workflow).read_text())
    assert {c[0] for c in cmds} >= {"run", "gate"}
    parser = build_parser()
    for argv in cmds:
        parser.parse_args(argv)  # SystemExit on an unknown flag

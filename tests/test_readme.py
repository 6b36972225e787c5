"""README.md says what the code does: every snippet in it runs as written.

- A Python block is either an excerpt of a file under docs/examples/ that the paragraph before it
  names (the suite runs each of those files) or a program that is run here as it stands.
- Every ``normgate ...`` command in a shell block parses with the real command line (a removed or
  renamed flag fails here), every ``nox -s NAME`` names a session of noxfile.py, and every
  ``pip install`` extra exists in pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from normgate.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(the text before the block, the block) for each ``lang`` block."""
    return [(README[max(0, m.start() - 600):m.start()], m.group(2)) for m in BLOCK.finditer(README)
            if m.group(1) == lang]


def commands(lang: str = "bash") -> list[str]:
    """Each command line of the shell blocks, continuation lines joined, comments dropped."""
    out = []
    for _, block in blocks(lang):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):
                if part.strip():
                    out.append(part.strip())
    return out


def test_the_readme_opens_with_the_main_job_and_the_test_suite():
    first = BLOCK.search(README)
    assert first and first.group(1) == "bash"
    lines = [ln.split("#")[0].strip() for ln in first.group(2).splitlines() if ln.strip()]
    assert lines == ["pip install nox && nox -s report", "pip install nox && nox -s tests"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install nox && nox -s tests" in ci  # CI runs the test command the README gives


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_each_python_snippet_runs_as_written(index, tmp_path):
    """Run on its own, in a fresh process (a test file under pytest, with normgate's plugin); and
    where the paragraph before it names a file under docs/examples/, the snippet is that file's
    text, so the two cannot drift apart."""
    before, code = blocks("python")[index]
    paragraph = [p for p in before.split("\n\n") if p.strip()][-1]
    named = re.findall(r"docs/examples/[\w./]+\.py", paragraph)
    if named:
        assert code.strip() in (ROOT / named[-1]).read_text(), f"not an excerpt of {named[-1]}:\n{code}"
    ast.parse(code)
    if re.search(r"^def test_", code, re.M):
        (tmp_path / "test_snippet.py").write_text(code)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--normgate-profile", "dev",
               "test_snippet.py"]
    else:
        cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"README snippet failed:\n{code}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def test_every_normgate_command_in_the_readme_parses():
    parser = build_parser()
    seen = 0
    for cmd in commands():
        words = shlex.split(cmd)
        if words[:1] != ["normgate"]:
            continue
        seen += 1
        try:
            args, unknown = parser.parse_known_args(words[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {cmd}")
        assert not unknown, f"README command has flags normgate does not know: {cmd}: {unknown}"
    assert seen >= 8


def test_every_nox_session_and_pip_extra_in_the_readme_exists():
    tomllib = pytest.importorskip("tomllib")
    noxfile = (ROOT / "noxfile.py").read_text()
    sessions = set(re.findall(r"@nox\.session[^\n]*\ndef (\w+)", noxfile))
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for cmd in commands():
        words = shlex.split(cmd)
        if words[:1] == ["nox"] and "-s" in words:
            assert words[words.index("-s") + 1] in sessions, cmd
        if words[:2] == ["pip", "install"]:
            for w in words[2:]:
                m = re.fullmatch(r"(?:-e\s*)?\.\[([\w,]+)\]", w)
                if m:
                    assert set(m.group(1).split(",")) <= extras, cmd
                assert not w.startswith("normgate"), f"normgate is not on the package index: {cmd}"

"""The gate's verdict as JUnit XML, the format CI systems show as test results: one testcase per
check, per benchmark, and one for the run's integrity."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from normgate.reports.baselines import BenchKey
from normgate.reports.gate import Finding, GateResult
from normgate.reports.load import CheckKey
from normgate.reports.text import one_line

_XML_BAD = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: Any) -> str:
    """Text XML 1.0 can hold: control characters (ANSI colours, NULs in exception text) removed."""
    return _XML_BAD.sub("\ufffd", str(text))


def render_junit(g: GateResult) -> str:
    """JUnit XML: one testcase per check (and benchmark, and one for the run's integrity)."""
    by_key: dict[CheckKey, list[Finding]] = {}
    by_bench: dict[BenchKey, list[Finding]] = {}
    run_level: list[Finding] = []
    for f in g.findings:
        if f.key is not None:
            by_key.setdefault(f.key, []).append(f)
        elif f.bench is not None:
            by_bench.setdefault(f.bench, []).append(f)
        else:
            run_level.append(f)
    suite = ET.Element("testsuite", name="normgate.gate")
    props = ET.SubElement(suite, "properties")
    for name, value in (("results", g.results_path), ("baseline", g.baseline_path), ("report", g.report_url)):
        if value:
            ET.SubElement(props, "property", name=name, value=xml_text(value))
    _testcase(suite, "normgate.run", "run integrity", run_level, "")
    for key in g.keys:
        name = f"{key.dtype} {key.check}" + (f" [{key.op} {key.variant}]" if key.op or key.variant else "")
        _testcase(suite, f"normgate.{key.kernel}", name, by_key.get(key, []), g.statuses.get(key, ""))
    for bk in g.bench_keys:
        _testcase(
            suite,
            f"normgate.bench.{bk[0]}",
            f"{bk[1]} {bk[2]} {bk[3]} M={bk[4]} N={bk[5]}",
            by_bench.get(bk, []),
            "",
        )
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    root = ET.Element(
        "testsuites",
        name="normgate gate",
        tests=suite.get("tests", "0"),
        failures=suite.get("failures", "0"),
        errors="0",
        skipped=suite.get("skipped", "0"),
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ET.Element, classname: str, name: str, findings: list[Finding], status: str) -> None:
    tc = ET.SubElement(suite, "testcase", classname=xml_text(classname), name=xml_text(name), time="0")
    regs = [f for f in findings if f.regression]
    if regs:
        failure = ET.SubElement(
            tc,
            "failure",
            message=xml_text(one_line("; ".join(f"{f.kind}: {f.message}" for f in regs), 500)),
            type=xml_text(regs[0].kind),
        )
        body = [f"{f.kind}: {f.message}" + "".join(f"\nreplay: {r}" for r in f.replays) for f in regs]
        failure.text = xml_text("\n".join(body))
    elif status in ("known-failure", "skipped"):
        msg = "known failure recorded in the baseline" if status == "known-failure" else "every case skipped"
        ET.SubElement(tc, "skipped", message=msg)
    notes = [f for f in findings if not f.regression]
    if notes:
        ET.SubElement(tc, "system-out").text = xml_text("\n".join(f"{f.kind}: {f.message}" for f in notes))

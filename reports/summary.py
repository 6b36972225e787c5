"""What the gate tells people: the Markdown summary for a pull request comment and the lines
``normgate gate`` prints. Text from results files is escaped, so data cannot add links, HTML,
mentions or table breaks to a comment.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from normgate.reports.gate import MAX_LISTED, Finding, GateResult
from normgate.reports.load import CheckKey
from normgate.reports.text import one_line, plural

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: Any) -> str:
    """Escape text for Markdown (GitHub): no HTML, links, emphasis or table breaks from data."""
    escaped = _MD_SPECIAL.sub(r"\\\1", one_line(text, 300).replace("&", "&amp;"))
    return escaped.replace("@", "&#64;")  # no @-mentions from data


def md_code_block(lines: Iterable[str], lang: str = "sh") -> str:
    body = "\n".join(lines)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def _key_label(key: CheckKey | None) -> tuple[str, str, str]:
    if key is None:
        return ("", "", "")
    return (key.kernel, key.dtype, key.check)


def _collapse_missing(findings: list[Finding], all_keys: Iterable[CheckKey]) -> list[Finding]:
    """A kernel missing from the results gives one line, not one per check."""
    per_kernel = Counter(k.kernel for k in all_keys)
    missing = Counter(f.key.kernel for f in findings if f.kind == "missing" and f.key)
    whole = {k for k, n in missing.items() if n == per_kernel[k] and n > 1}
    out, done = [], set()
    for f in findings:
        if f.kind == "missing" and f.key and f.key.kernel in whole:
            if f.key.kernel not in done:
                done.add(f.key.kernel)
                out.append(
                    Finding(
                        "missing kernel",
                        f"all {missing[f.key.kernel]} of its checks in the baseline are "
                        "absent from the results",
                        True,
                        CheckKey(f.key.kernel, "", "", "", ""),
                    )
                )
            continue
        out.append(f)
    return out


def render_summary(g: GateResult) -> str:
    """The Markdown summary for a pull request comment: baseline changes, verdict, regressions, notes."""
    parts: list[str] = []
    decl = [f for f in g.findings if f.kind == "declaration"]
    if decl:
        parts.append(_declaration_md(decl))
    if g.baseline_changes:
        parts.append(_baseline_change_md(g))
    regs = _collapse_missing(g.regressions, g.keys)
    n_checks = len(g.keys)
    if g.passed:
        parts.append("## ✅ normgate gate: PASS")
    else:
        parts.append(f"## ❌ normgate gate: FAIL ({plural(len(regs), 'regression')})")
    parts.append(_context_line(g, n_checks))
    if regs:
        parts.append(_findings_table("Regressions", regs))
        replays = [(f, r) for f in regs for r in f.replays]
        if replays:
            lines = []
            for f, r in replays[:MAX_LISTED]:
                kernel, dtype, check = _key_label(f.key)
                lines += [f"# {one_line(f'{kernel} {dtype} {check}', 120)}", one_line(r, 2000)]
            parts.append("Replay the failing cases:\n\n" + md_code_block(lines))
    notes = g.notes
    if notes:
        parts.append(
            f"<details><summary>Notes ({len(notes)})</summary>\n\n{_findings_table('', notes)}\n\n</details>"
        )
    return "\n\n".join(p for p in parts if p) + "\n"


def _context_line(g: GateResult, n_checks: int) -> str:
    env = g.env
    bits = [
        f"Results {md(g.results_path)} against baseline {md(g.baseline_path)}: {n_checks} checks, "
        f"{g.cases} result lines"
    ]
    if g.bench_keys:
        bits.append(f"{len(g.bench_keys)} benchmarks")
    where = ", ".join(md(env[k]) for k in ("gpu", "torch", "triton") if env.get(k))
    if where:
        bits.append(where)
    if env.get("interpreter"):
        bits.append("Triton interpreter (CPU)")
    line = "; ".join(bits) + "."
    if g.report_url:
        line += f"\n\n[Full HTML report]({g.report_url})"
    return line


def _findings_table(title: str, findings: Sequence[Finding]) -> str:
    rows = ["| what | kernel | dtype | check | detail |", "|---|---|---|---|---|"]
    for f in findings[:MAX_LISTED]:
        kernel, dtype, check = _key_label(f.key)
        if f.bench:
            kernel, dtype, check = (
                f.bench[0],
                f.bench[3],
                f"{f.bench[1]} {f.bench[2]} M={f.bench[4]} N={f.bench[5]}",
            )
        rows.append(f"| {md(f.kind)} | {md(kernel)} | {md(dtype)} | {md(check)} | {md(f.message)} |")
    if len(findings) > MAX_LISTED:
        rows.append(f"| … | {len(findings) - MAX_LISTED} more | | | see the JUnit file or the report |")
    head = f"### {title}\n\n" if title else ""
    return head + "\n".join(rows)


def _declaration_md(findings: Sequence[Finding]) -> str:
    loosened = [f for f in findings if f.regression]
    lines = [
        f"### ⚠️ Declarations changed: {len(loosened)} loosened, {len(findings) - len(loosened)} other "
        "(what the kernels claim in normgate.register, against the baseline)",
        "",
    ]
    for f in (loosened + [f for f in findings if not f.regression])[:MAX_LISTED]:
        lines.append(f"- {'**loosened**: ' if f.regression else ''}{md(f.message)}")
    if len(findings) > MAX_LISTED:
        lines.append(f"- … and {len(findings) - MAX_LISTED} more")
    return "\n".join(lines)


def _baseline_change_md(g: GateResult) -> str:
    loosened = [c for c in g.baseline_changes if c.loosened]
    other = [c for c in g.baseline_changes if not c.loosened]
    head = (
        f"### ⚠️ The baseline changed: {len(loosened)} loosened, {len(other)} other "
        f"({md(g.changes_label or f'{g.baseline_path} vs {g.base_baseline_path} from the base branch')})"
    )
    lines = [head, "", "A reviewer should confirm these changes are intended:" if loosened else ""]
    for c in (loosened + other)[:MAX_LISTED]:
        lines.append(f"- {'**loosened**: ' if c.loosened else ''}{md(c.message)}")
    if len(g.baseline_changes) > MAX_LISTED:
        lines.append(f"- … and {len(g.baseline_changes) - MAX_LISTED} more")
    return "\n".join(line for line in lines if line is not None)


def plain_lines(g: GateResult) -> list[str]:
    """What the gate prints on stdout: verdict first, then each regression on one line."""
    regs = _collapse_missing(g.regressions, g.keys)
    head = "normgate gate: PASS" if g.passed else f"normgate gate: FAIL ({plural(len(regs), 'regression')})"
    lines = [head]
    decl = [f for f in g.findings if f.kind == "declaration"]
    if decl:
        lines.append(f"  declarations changed: {len(decl)} ({sum(f.regression for f in decl)} loosened)")
    loosened = [c for c in g.baseline_changes if c.loosened]
    if loosened:
        lines.append(
            f"  baseline loosened vs {g.base_baseline_path}: {len(loosened)} change(s), "
            f"e.g. {loosened[0].message}"
        )
    for f in regs:
        kernel, dtype, check = _key_label(f.key)
        if f.bench:
            kernel, dtype, check = "benchmark", "", ""
        what = " ".join(x for x in (kernel, dtype, check) if x)
        lines.append(f"  {f.kind}: {one_line(what, 120)}: {one_line(f.message, 240)}")
        lines.extend(f"    replay: {one_line(r, 400)}" for r in f.replays[:1])
    return lines

"""``normgate zoo``: every mutant and every correct candidate through the normal checks, run the
way ``normgate run`` runs them (worker processes, hypothesis search and shrinking, results lines),
then a kill matrix built from those lines.

For a mutant: caught or not (a ``fail`` line; an ``error`` is never a catch, since a kernel can
error for reasons that have nothing to do with its bug, a missing package among them), by which
checks, after how many generated cases (the ``examples``
count the runner records on a failing line: cases drawn up to and including the first failure of
that kernel/dtype/check task; the matrix takes the smallest over tasks), and the size of the
shrunk repro (rows x N of the smallest failing case), and its errors apart. For a correct candidate:
cases run, false alarms (fail lines) and errors apart.
"""

from __future__ import annotations

import fnmatch
import json
import math
import statistics
import sys
import time
from pathlib import Path

from normgate import results
from normgate.checks import CHECKS, budget
from normgate.runner import Task, interpreter_on

from . import catalog, conventional

LOAD_FILE = str(Path(__file__).with_name("load_zoo.py"))


def select(device: str, only: list[str] | None) -> tuple[list[str], list[catalog.Mutant]]:
    """(correct candidates, mutants) to run; ``only`` filters both by name or glob."""
    correct = catalog.correct_names(device)
    mutants = list(catalog.MUTANTS)
    if only:
        def keep(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in only)

        correct = [c for c in correct if keep(c)]
        mutants = [m for m in mutants if keep(m.candidate) or keep(m.name)]
    return correct, mutants


def run_checks(names: list[str], *, device: str, examples: int, seed: int, workers: int, out: str,
               dtypes: list[str] | None = None, checks: list[str] | None = None, timeout: float = 300.0,
               progress=None) -> list[dict]:
    """Run every check on every candidate (each declared dtype, or those in ``dtypes``); return the
    results lines (also written to ``out``)."""
    from normgate import candidates
    from normgate.pool import Options
    from normgate.session import run_tasks

    reg = candidates.registry()
    tasks = [Task(n, d, ck, budget(ck, examples), seed) for n in names for d in reg[n].dtypes
             if not dtypes or d in dtypes for ck in (checks or CHECKS)]
    writer = results.Writer(out)
    writer.write(results.environment(device, interpreter_on(), seed=seed, examples=examples, workers=workers,
                                     argv=sys.argv))
    if progress is not None:
        progress.total = len(tasks)
    on_event = progress.event if progress else (lambda kind, info: None)
    t0 = time.monotonic()
    run_tasks(tasks, writer.write, on_event, device=device, workers=workers,
              pool_options=Options(loads=(LOAD_FILE,), case_timeout=timeout))
    writer.write(results.summarize(writer.counts, writer.cases, interrupted=False,
                                   elapsed_s=round(time.monotonic() - t0, 2)))
    writer.close()
    results.canonicalize(out, [t.id for t in tasks])
    return results.read_lines(out)


def _size(line: dict) -> tuple[int, int]:
    shape = line["shape"]
    return math.prod(shape[:-1]), shape[-1]


def build(lines: list[dict], correct: list[str], mutants: list[catalog.Mutant], device: str,
          conventional: dict[str, tuple[str, str]] | None = None) -> dict:
    """The kill matrix from results lines."""
    by_kernel: dict[str, list[dict]] = {}
    cases: dict[str, int] = {}
    for ln in lines:
        if ln.get("type") == "result":
            by_kernel.setdefault(ln["kernel"], []).append(ln)
        elif ln.get("type") == "task":
            cases[ln["kernel"]] = cases.get(ln["kernel"], 0) + int(ln.get("cases") or 0)
    rows = []
    for m in mutants:
        fails = [ln for ln in by_kernel.get(m.candidate, []) if ln["verdict"] == "fail"]
        errors = [ln for ln in by_kernel.get(m.candidate, []) if ln["verdict"] == "error"]
        per_check = {}
        for ln in fails:
            c = per_check.setdefault(ln["check"], {"tasks": 0, "cases": None, "repro": None})
            c["tasks"] += 1
            if ln.get("examples") is not None:
                c["cases"] = ln["examples"] if c["cases"] is None else min(c["cases"], ln["examples"])
            rows_n = _size(ln)
            if c["repro"] is None or math.prod(rows_n) < math.prod(c["repro"]):
                c["repro"] = list(rows_n)
        smallest = min(fails, key=lambda ln: (math.prod(_size(ln)), ln.get("examples") or 0), default=None)
        killing = [ln.get("examples") for ln in fails if ln.get("examples") is not None]
        row = {
            "mutant": m.name, "candidate": m.candidate, "base": m.base, "where": m.where, "bug": m.bug,
            "equivalent": m.equivalent.get(device.split(":")[0], ""), "known_miss": m.known_miss,
            "killed": bool(fails), "checks": sorted(per_check), "per_check": per_check,
            "cases_to_kill": min(killing) if killing else None,
            "repro": None if smallest is None else {
                "rows": _size(smallest)[0], "n": _size(smallest)[1], "dtype": smallest["dtype"],
                "check": smallest["check"], "case": smallest["case"], "reason": smallest["reason"][:300],
                "replay": smallest.get("replay", "")},
            "cases": cases.get(m.candidate, 0),
            "errors": len(errors), "error_reasons": _reasons(errors),
        }
        if conventional is not None:
            row["conventional"], row["conventional_reason"] = conventional.get(m.candidate, ("error", "not run"))
        rows.append(row)
    correct_rows = []
    for name in correct:
        bad = [ln for ln in by_kernel.get(name, []) if ln["verdict"] == "fail"]
        errors = [ln for ln in by_kernel.get(name, []) if ln["verdict"] == "error"]
        row = {"candidate": name, "cases": cases.get(name, 0), "false_alarms": len(bad),
               "failures": [{"check": ln["check"], "dtype": ln["dtype"], "reason": ln["reason"][:300],
                             "replay": ln.get("replay", "")} for ln in bad],
               "errors": len(errors), "error_reasons": _reasons(errors)}
        if conventional is not None:
            row["conventional"], row["conventional_reason"] = conventional.get(name, ("error", "not run"))
        correct_rows.append(row)
    counted = [r for r in rows if not r["equivalent"]]
    killed = [r for r in counted if r["killed"]]
    to_kill = [r["cases_to_kill"] for r in killed if r["cases_to_kill"] is not None]
    repros = [r["repro"]["rows"] * r["repro"]["n"] for r in killed if r["repro"]]
    summary = {
        "mutants": len(rows), "equivalent": len(rows) - len(counted), "counted": len(counted),
        "killed": len(killed), "kill_rate": round(len(killed) / len(counted), 4) if counted else None,
        "missed": [r["mutant"] for r in counted if not r["killed"]],
        "unexplained_misses": [r["mutant"] for r in counted if not r["killed"] and not r["known_miss"]],
        "median_cases_to_kill": statistics.median(to_kill) if to_kill else None,
        "max_cases_to_kill": max(to_kill) if to_kill else None,
        "median_repro_elements": statistics.median(repros) if repros else None,
        "repros_within_64": sum(1 for s in repros if s <= 64),
        "by_check": {ck: sum(1 for r in killed if ck in r["checks"]) for ck in CHECKS},
        "correct": len(correct_rows), "correct_cases": sum(r["cases"] for r in correct_rows),
        "false_alarms": sum(r["false_alarms"] for r in correct_rows),
        # errors are neither kills nor false alarms: each is a check that could not be made. A killed
        # mutant's errors are its bug showing in other checks (a wrong shape trips autograd); an
        # error on a correct candidate, or a mutant that only errored, is a run that proved nothing
        "errored_mutants": [r["mutant"] for r in counted if r["errors"] and not r["killed"]],
        "errors": sum(r["errors"] for r in rows) + sum(r["errors"] for r in correct_rows),
        "correct_errors": sum(r["errors"] for r in correct_rows),
    }
    if conventional is not None:
        summary["conventional_killed"] = sum(1 for r in counted if r["conventional"] == "fail")
        summary["conventional_false_alarms"] = sum(1 for r in correct_rows if r["conventional"] == "fail")
        summary["conventional_errors"] = sum(1 for r in rows + correct_rows if r["conventional"] == "error")
    return {"device": device, "interpreter": interpreter_on(), "summary": summary, "mutants": rows,
            "correct": correct_rows}


def _reasons(lines: list[dict], k: int = 3) -> list[str]:
    """The first few distinct reasons, for a reader to see why at a glance."""
    out: list[str] = []
    for ln in lines:
        if ln["reason"][:300] not in out:
            out.append(ln["reason"][:300])
    return out[:k]


def run_conventional(names: list[str], device: str) -> dict[str, tuple[str, str]]:
    from normgate import candidates

    return {n: conventional.check(candidates.get(n), device) for n in names}


def render(matrix: dict) -> str:
    """The kill matrix as text."""
    s = matrix["summary"]
    conv = "conventional_killed" in s
    head = f"{'mutant':<24} {'killed':<7} {'checks':<34} {'cases':>5} {'repro':>9}"
    out = [head + ("  conventional" if conv else "")]
    for r in matrix["mutants"]:
        rep = f"{r['repro']['rows']}x{r['repro']['n']}" if r["repro"] else "-"
        killed = "yes" if r["killed"] else ("equiv" if r["equivalent"] else "known" if r["known_miss"]
                                            else "ERROR" if r["errors"] else "NO")
        checks = ",".join(r["checks"]) or "-"
        line = f"{r['mutant']:<24} {killed:<7} {checks:<34} {r['cases_to_kill'] or '-':>5} {rep:>9}"
        if conv:
            line += "  " + {"fail": "caught", "pass": "missed"}.get(r["conventional"], "error")
        out.append(line)
        if r["errors"] and not r["killed"]:
            out.append(f"    errored, not killed: {r['error_reasons'][0][:160]}")
        if r["equivalent"]:
            out.append(f"    equivalent here: {r['equivalent']}")
        elif r["known_miss"] and not r["killed"]:
            out.append(f"    known miss: {r['known_miss']}")
    out.append("")
    out.append(f"{'correct candidate':<32} {'cases':>6} {'false alarms':>13}" + ("  conventional" if conv else ""))
    for r in matrix["correct"]:
        line = f"{r['candidate']:<32} {r['cases']:>6} {r['false_alarms']:>13}"
        if r["errors"]:
            line += f"  ({r['errors']} errors)"
        if conv:
            line += "  " + {"fail": "FAILS", "pass": "passes"}.get(r["conventional"], "errors")
        out.append(line)
        for f in r["failures"][:3]:
            out.append(f"    {f['check']} {f['dtype']}: {f['reason'][:160]}")
        for reason in r["error_reasons"][:1]:
            out.append(f"    error: {reason[:160]}")
    out.append("")
    out.append(f"killed {s['killed']}/{s['counted']} mutants ({s['equivalent']} equivalent here, not counted)"
               + (f"; missed: {', '.join(s['missed'])}" if s["missed"] else ""))
    out.append(f"by check: {', '.join(f'{k} {v}' for k, v in s['by_check'].items())}")
    out.append(f"generated cases to the first failure: median {s['median_cases_to_kill']}, max "
               f"{s['max_cases_to_kill']}; shrunk repros: median {s['median_repro_elements']} elements, "
               f"{s['repros_within_64']} of {s['killed']} within 64")
    out.append(f"correct candidates: {s['correct']}, {s['correct_cases']} cases, {s['false_alarms']} false alarms")
    if s["errors"]:
        out.append(f"errors (not counted as kills or false alarms): {s['errors']} lines"
                   + (f"; mutants that only errored: {', '.join(s['errored_mutants'])}" if s["errored_mutants"]
                      else ""))
    if conv:
        out.append(f"conventional test (Liger-Kernel's shapes and tolerances): killed {s['conventional_killed']}/"
                   f"{s['counted']} mutants, {s['conventional_false_alarms']} false alarms"
                   + (f", {s['conventional_errors']} errors" if s["conventional_errors"] else ""))
    return "\n".join(out)


def write_json(matrix: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(matrix, indent=1, default=str) + "\n")

"""A run split over CI jobs (``--shard K/N``) is the unsharded run, line for line, once merged;
shards that are not the parts of one run are refused."""

import json

import pytest
from conftest import normgate_cli

from normgate import results, shards
from normgate.runner import Task

SELECTION = ("--kernels", "hf_llama_rmsnorm,torch_rms_norm,eager_layernorm", "--dtypes", "fp32,bf16",
             "--examples", "6", "--device", "cpu", "--workers", "0")


def tasks(n: int = 23) -> list[Task]:
    checks = ("accuracy", "contract", "repeat", "poisoned", "batch_invariance")
    return [Task(f"k{i}", "fp32", checks[i % 5], 1 + (i * 7) % 13) for i in range(n)]


def test_the_partition_covers_every_task_once_in_run_order_and_is_balanced():
    ts = tasks()
    for count in (1, 2, 3, 4, 7, 30):
        parts = shards.partition(ts, count)
        ids = [t.id for p in parts for t in p]
        assert sorted(ids) == sorted(t.id for t in ts) and len(ids) == len(set(ids))
        for p in parts:  # each shard keeps the run's order
            assert [t.id for t in p] == [t.id for t in ts if t in p]
        assert parts == shards.partition(list(ts), count)  # deterministic
    loads = [sum(shards.expected_cost(t) for t in p) for p in shards.partition(ts, 4)]
    biggest = max(shards.expected_cost(t) for t in ts)
    assert max(loads) - min(loads) <= biggest  # greedy longest-first: within one task of even


def test_shard_specs_are_checked():
    assert str(shards.Shard.parse("2/4")) == "2/4"
    for bad in ("0/4", "5/4", "1/0", "a/b", "3", ""):
        with pytest.raises(ValueError, match="--shard"):
            shards.Shard.parse(bad)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    whole = tmp / "whole.jsonl"
    proc = normgate_cli("run", *SELECTION, "--out", str(whole))
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = []
    for k in range(1, 5):
        out = tmp / f"shard{k}.jsonl"
        proc = normgate_cli("run", *SELECTION, "--shard", f"{k}/4", "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        parts.append(out)
    return whole, parts


def lines_of(path):
    return results.read_lines(path)


def test_four_shards_merged_are_the_unsharded_run_line_for_line(runs):
    whole, parts = runs
    merged = shards.merge([(str(p), lines_of(p)) for p in parts])
    want = lines_of(whole)
    assert results.content(merged) == results.content(want)  # verdicts, figures, replay keys, order
    assert {k: merged[-1][k] for k in ("cases", "pass", "fail", "error", "skip", "range")} == \
        {k: want[-1][k] for k in ("cases", "pass", "fail", "error", "skip", "range")}
    assert "shard" not in merged[0] and not merged[-1]["interrupted"]
    sizes = [sum(1 for ln in lines_of(p) if ln["type"] == "task") for p in parts]
    assert all(sizes) and sum(sizes) == sum(1 for ln in want if ln["type"] == "task")


def test_a_missing_duplicated_or_foreign_shard_is_refused(runs, tmp_path):
    whole, parts = runs
    files = [(str(p), lines_of(p)) for p in parts]
    with pytest.raises(shards.ShardError, match="missing 3"):
        shards.merge(files[:2] + files[3:])
    with pytest.raises(shards.ShardError, match="given twice 2"):
        shards.merge(files[:2] + [files[1]] + files[3:])
    foreign = [dict(ln, seed=1) if ln["type"] == "env" else ln for ln in files[2][1]]
    with pytest.raises(shards.ShardError, match="differ in seed"):
        shards.merge(files[:2] + [("foreign.jsonl", foreign)] + files[3:])
    with pytest.raises(shards.ShardError, match="not a shard"):
        shards.merge([(str(whole), lines_of(whole))])
    overlapping = files[2][1] + [ln for ln in files[3][1] if ln["type"] in ("result", "task")]
    with pytest.raises(shards.ShardError, match="overlap"):
        shards.merge(files[:2] + [("overlap.jsonl", overlapping)] + files[3:])


def test_resuming_a_shard_keeps_it_the_same_shard(runs, tmp_path):
    _, parts = runs
    proc = normgate_cli("run", *SELECTION, "--shard", "2/4", "--resume", str(parts[0]))
    assert proc.returncode == 2 and "shard" in proc.stderr
    env = json.loads(parts[0].read_text().splitlines()[0])
    assert env["shard"]["index"] == 1 and env["shard"]["count"] == 4


def _cli(*argv):
    from normgate.cli import main

    return main([str(a) for a in argv])


def test_baseline_gate_and_report_take_the_shards_of_a_run(runs, tmp_path, capsys):
    whole, parts = runs
    baseline = tmp_path / "baseline.json"
    assert _cli("baseline", *parts, "-o", baseline) == 0
    assert _cli("baseline", whole, "-o", tmp_path / "whole-baseline.json") == 0
    # the same baseline from the shards as from the unsharded run
    assert baseline.read_text() == (tmp_path / "whole-baseline.json").read_text()
    assert _cli("gate", *parts, "--baseline", baseline) == 0
    assert _cli("gate", whole, "--baseline", baseline) == 0
    assert _cli("report", *parts, "-o", tmp_path / "r.html") == 0
    capsys.readouterr()
    # a missing, duplicated or foreign shard: exit 2, and it says which
    assert _cli("gate", parts[0], parts[1], parts[3], "--baseline", baseline) == 2
    assert "missing 3" in capsys.readouterr().err
    assert _cli("gate", *parts, parts[1], "--baseline", baseline) == 2
    assert "given twice 2" in capsys.readouterr().err
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("".join(json.dumps(dict(ln, seed=9) if ln["type"] == "env" else ln) + "\n"
                               for ln in lines_of(parts[2])))
    assert _cli("gate", parts[0], parts[1], foreign, parts[3], "--baseline", baseline) == 2
    assert "differ in seed" in capsys.readouterr().err


def test_a_regression_in_one_shard_is_named_with_that_shard(runs, tmp_path, capsys):
    whole, parts = runs
    baseline = tmp_path / "baseline.json"
    assert _cli("baseline", whole, "-o", baseline) == 0
    lines = lines_of(parts[1])
    hit = next(i for i, ln in enumerate(lines) if ln["type"] == "result" and ln["verdict"] == "pass")
    lines[hit] = dict(lines[hit], verdict="fail", reason="y: 9 ULP > bound 0.5 ULP",
                      replay=f"normgate replay '{lines[hit]['kernel']}@{lines[hit]['check']}:{lines[hit]['case']}'")
    summary = lines[-1]
    lines[-1] = dict(summary, **{"pass": summary["pass"] - 1, "fail": summary["fail"] + 1})
    broken = tmp_path / "shard2.jsonl"
    broken.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    md = tmp_path / "summary.md"
    assert _cli("gate", parts[0], broken, parts[2], parts[3], "--baseline", baseline, "--summary", md) == 1
    text = md.read_text().replace("\\", "")
    assert f"(in {broken} (shard 2/4))" in text, text

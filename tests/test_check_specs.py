"""Each check is declared once (names.SPECS): the check functions, the budgets, the schedule and
the command line's --checks all follow that table, and names.py stays importable without torch."""

import subprocess
import sys

from normgate import checks, names, scheduling
from normgate.cli import build_parser


def test_the_check_functions_are_the_table_in_its_order():
    assert tuple(checks.ALL) == names.CHECKS
    for spec in names.SPECS:
        assert checks.ALL[spec.name].__name__ == spec.name


def test_schedule_ranks_are_an_order_of_every_check_with_accuracy_first():
    ranks = sorted(s.schedule for s in names.SPECS)
    assert ranks == list(range(len(names.SPECS)))
    assert sorted(scheduling.SCHEDULE) == sorted(names.CHECKS)
    assert scheduling.SCHEDULE[0] == "accuracy"


def test_budgets_come_from_the_shares():
    for spec in names.SPECS:
        assert 0 < spec.share <= 1
        assert checks.budget(spec.name, 1) == 1  # every check gets at least one case
    assert checks.budget("accuracy", 200) == 200
    assert checks.budget("poisoned", 200) == 25


def test_the_checks_option_names_every_check():
    run = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    text = next(a for a in run._actions if a.dest == "checks").help
    for spec in names.SPECS:
        assert f"{spec.name}: {spec.description}" in text


def test_names_imports_without_torch():
    code = "import sys, normgate.names; assert 'torch' not in sys.modules, 'normgate.names imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

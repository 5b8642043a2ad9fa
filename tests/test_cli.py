"""The command line as a whole: start-up without torch, the algorithm table as the CLI shows it."""

import json
import subprocess
import sys

from largemeta.cli import main
from largemeta.core.algorithms import ALGORITHMS
from largemeta.train.config import TRAIN_ALGORITHMS


def test_help_starts_without_importing_torch():
    code = "import sys; from largemeta.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_algorithms_command_lists_the_table(capsys):
    assert main(["algorithms", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(ALGORITHMS) == list(TRAIN_ALGORITHMS)
    assert rows["cts"]["cts"] and rows["cts"]["drop_in"] and not rows["cts"]["query_split"]
    assert rows["fomaml"]["query_split"] and not rows["cts-fomaml-official"]["query_split"]
    assert rows["imaml"]["cuda_graph"] is False and rows["multitask"]["meta_gradient"] == "joint training"

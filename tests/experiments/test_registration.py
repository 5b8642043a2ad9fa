"""Experiment kinds are registered by handing over their functions: a hook that is missing, misspelled or
not a function is an error when the kind is defined, never a silent no-op."""

import pytest

from largemeta.experiments import EXPERIMENTS, Experiment
from largemeta.experiments.spec import register


def table(result):
    return "| a |"


def empty_run(cfg, common):
    return {}


def test_every_shipped_kind_has_its_hooks():
    assert list(EXPERIMENTS) == ["convergence", "k-ablation", "pretrained", "tune"]
    for name in EXPERIMENTS:
        spec = EXPERIMENTS.get(name)
        assert spec.name == name and callable(spec.run) and callable(spec.table) and callable(spec.own)


def test_a_misspelled_hook_is_an_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'plot'"):
        Experiment(
            name="x", title="X", help="x", algos="cts", run=empty_run, table=table, plot=lambda r, o: []
        )


def test_a_missing_hook_is_an_error():
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'table'|'table'"):
        Experiment(name="x", title="X", help="x", algos="cts", run=empty_run)


def test_a_hook_that_is_not_a_function_is_an_error():
    with pytest.raises(TypeError, match="hook plots is not callable"):
        Experiment(name="x", title="X", help="x", algos="cts", run=empty_run, table=table, plots="plots")


def test_a_kind_registered_twice_is_an_error():
    with pytest.raises(ValueError, match="experiment 'convergence' registered twice"):
        register(Experiment(name="convergence", title="C", help="c", algos="cts", run=empty_run, table=table))

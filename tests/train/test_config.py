"""Config parsing and validation: every bad value is one line naming the key."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from largemeta.cli import main
from largemeta.errors import UserError
from largemeta.train.config import FIELDS, TrainConfig, from_mapping, load_config, parse_override


def test_defaults_validate_and_shipped_configs_load():
    from_mapping({})
    assert load_config("offline").algo == "cts"
    paper = load_config("paper")
    assert (paper.model, paper.k, paper.steps, paper.batch_size, paper.meta_lr) == (
        "resnet20",
        1000,
        200000,
        128,
        0.01,
    )


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"kk": 5}, "unknown config key 'kk' (did you mean 'k'?)"),
        ({"k": "ten"}, "config key 'k' must be an integer, got 'ten'"),
        ({"k": 10**12}, "config key 'k' out of range"),
        ({"batch_size": -8}, "config key 'batch_size' out of range"),
        ({"inner_lr": 0}, "config key 'inner_lr' out of range"),
        ({"meta_lr": float("nan")}, "config key 'meta_lr' out of range"),
        ({"algo": "maml"}, "unknown algorithm 'maml' (valid: cts, cts-fomaml, cts-fomaml-official, cts-leap"),
        ({"inner_optimizer": "rmsprop"}, "unknown inner optimizer 'rmsprop'"),
        ({"reset_inner_state": "yes"}, "config key 'reset_inner_state' must be true or false"),
        ({"meta_every": 5, "k": 2}, "1 <= meta_every <= k=2"),
        ({"algo": "single"}, "algo 'single' trains on one task"),
        ({"device": "tpu"}, "config key 'device' must be one of auto, cpu, cuda, cuda:N, mps (auto: CUDA, "),
        (
            {"algo": "multitask", "executor": "batched"},
            "joint training (algo 'multitask') runs the plain loop",
        ),
    ],
)
def test_bad_values(values, needle):
    with pytest.raises(UserError) as err:
        from_mapping(values)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_toml_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("k = = 3\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    sections = tmp_path / "sections.toml"
    sections.write_text("[inner]\ninner_lr = 0.1\n[meta]\nmeta_lr = 0.2\n")
    cfg = load_config(sections)
    assert (cfg.inner_lr, cfg.meta_lr) == (0.1, 0.2)


def test_set_overrides_parse_by_type():
    assert parse_override("k=7") == ("k", 7)
    assert parse_override("meta_lr=1e-3") == ("meta_lr", 1e-3)
    assert parse_override("reset_inner_state=true") == ("reset_inner_state", True)
    assert parse_override("tasks=a,b") == ("tasks", ("a", "b"))
    with pytest.raises(UserError, match="must be an integer"):
        parse_override("k=1.5")
    with pytest.raises(UserError, match="not key=value"):
        parse_override("k")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--config", "offline"], "train needs --out RUN_DIR"),
        (["train", "--out", "x", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["train", "--out", "x", "--steps", "0"], "config key 'steps' out of range"),
        (["train", "--resume", "/nonexistent/run"], "run folder '/nonexistent/run' does not exist"),
        (["train", "--resume", "a", "--out", "b"], "--resume continues RUN_DIR in place"),
    ],
)
def test_cli_bad_input(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\\n") == 0 and err.count("\n") == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(sorted(FIELDS)),
        st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.booleans()),
    )
)
def test_any_mapping_is_accepted_or_refused_in_one_line(values):
    try:
        cfg = from_mapping(values)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(cfg, TrainConfig)


def test_resume_check_takes_a_key_added_since_as_its_default():
    from largemeta.train.config import diff

    saved = TrainConfig().to_dict()
    del saved["sync_batchnorm"]  # a run folder written before the key existed
    assert diff(saved, TrainConfig()) == []
    assert diff(saved, from_mapping({"sync_batchnorm": False})) == ["sync_batchnorm"]

"""Job config: parsing, --set overrides, and the messages a person sees on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medxfer.config.loading import load_config, parse_overrides
from medxfer.errors import ConfigError


def _write(tmp_path, text: str, name: str = "job.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert cfg.storage.root == "./medxfer-runs"
    assert cfg.model.backbone == "resnet18"


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "name: run-a\ntrain:\n  lr: 0.01\n  epochs: 3\n")
    cfg = load_config(path, ["train.lr=3e-4", "scaling.use_gpu=false", "data.classes=[a, b]"])
    assert cfg.name == "run-a"
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 3
    assert cfg.scaling.use_gpu is False
    assert cfg.data.classes == ["a", "b"]


def test_override_values_are_yaml_scalars():
    assert parse_overrides(["a.b=1", "a.c=true", "a.d=x y", "e=null"]) == {
        "a": {"b": 1, "c": True, "d": "x y"},
        "e": None,
    }


def test_unknown_key_suggests_nearest(tmp_path):
    path = _write(tmp_path, "train:\n  learning_rate: 0.1\n  epochz: 3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    lines = ei.value.problems
    assert any("train.epochz: unknown key; did you mean 'train.epochs'?" in line for line in lines)
    assert all(line.startswith(path) for line in lines)


def test_wrong_type_names_path_expected_and_found(tmp_path):
    path = _write(tmp_path, "train:\n  batch_size: many\npreprocess:\n  channels: 2\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    text = "\n".join(ei.value.problems)
    assert "train.batch_size: expected a valid integer" in text and '"many"' in text
    assert "preprocess.channels" in text and "found 2" in text


def test_out_of_range_and_cross_field_checks(tmp_path):
    path = _write(tmp_path, "data:\n  label_fraction: 0\n  split_fractions: [0.5, 0.5, 0.5]\ntrain:\n  freeze: half\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    text = "\n".join(ei.value.problems)
    assert "data.label_fraction" in text
    assert "data.split_fractions" in text and "summing to 1" in text
    assert "train.freeze" in text and "partial:N" in text


def test_model_experiment_and_mixing_rules_are_config_errors(tmp_path):
    """Rules that used to be checked only when a run started (the backbone's registry, duplicate arm
    names, ImageNet weights that do not exist, mixup on a task without classes) are config errors."""
    cases = {
        "model:\n  backbone: resnet19\n": "model.backbone: expected 'densenet121'",
        "model:\n  backbone: smallcnn\n  init: imagenet\n": "model.init: expected scratch or a bundle URI: "
                                                             "smallcnn has no ImageNet weights",
        "experiment:\n  arms: [{name: a}, {name: b}, {name: a}]\n": "experiment.arms: expected arms with "
                                                                    "distinct names",
        "data:\n  task: multilabel\ntrain:\n  cutmix_alpha: 1.0\n": "train: expected mixup_alpha and "
                                                                   "cutmix_alpha 0",
        "train:\n  early_stopping: {metric: val_mae}\n": "a multiclass task (data.task) does not report val_mae",
    }
    for text, says in cases.items():
        with pytest.raises(ConfigError) as ei:
            load_config(_write(tmp_path, text))
        assert len(ei.value.problems) == 1 and says in ei.value.problems[0], (text, ei.value.problems)
    assert load_config(_write(tmp_path, "model:\n  backbone: densenet121\n  init: imagenet\n"))
    assert load_config(_write(tmp_path, "data:\n  task: multiclass\ntrain:\n  mixup_alpha: 0.2\n"))
    assert load_config(_write(tmp_path, "data:\n  task: ordinal\ntrain:\n  early_stopping: {metric: val_mae}\n"))


def test_checking_a_config_imports_no_torch(tmp_path):
    """`config validate` on a laptop or a CI runner without torch: the backbone names need no registry."""
    job = _write(tmp_path, "model:\n  backbone: resnet19\n")
    code = ("import sys; from medxfer.cli import main; rc = main(['config', 'validate', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True)
    assert r.returncode == 2 and "model.backbone" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_empty_file_is_defaults_and_bad_yaml_is_reported(tmp_path):
    assert load_config(_write(tmp_path, "")).name == "medxfer-run"
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_config(_write(tmp_path, "a: 1\n b: [\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))


def test_unsafe_yaml_tags_are_refused(tmp_path):
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medxfer", *args], capture_output=True, text=True)


def test_cli_validate_exit_codes(tmp_path):
    good = _write(tmp_path, "name: ok\n", "good.yaml")
    bad = _write(tmp_path, "trian:\n  lr: 1\n", "bad.yaml")
    r = _cli("config", "validate", good)
    assert r.returncode == 0, r.stderr
    r = _cli("config", "validate", bad)
    assert r.returncode == 2
    assert "trian: unknown key; did you mean 'train'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_schema_is_json_schema():
    r = _cli("config", "schema")
    schema = json.loads(r.stdout)
    assert schema["type"] == "object" and "train" in schema["properties"]
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)


def test_cli_show_fills_defaults(tmp_path):
    r = _cli("config", "show", _write(tmp_path, "name: shown\n"), "--set", "train.epochs=7")
    assert r.returncode == 0, r.stderr
    assert "name: shown" in r.stdout and "epochs: 7" in r.stdout and "backbone: resnet18" in r.stdout


def test_documented_config_example_is_valid():
    """The job config shown in docs/config.md is one users copy: it must stay valid."""
    from pathlib import Path

    from medxfer.config.loading import read_yaml_text, validate_dict

    text = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    block = text.split("# The job config", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    cfg = validate_dict(read_yaml_text(block, "docs/config.md"), "docs/config.md")
    assert cfg.train.freeze == "none" and cfg.scaling.num_workers == 2


def test_metric_and_operating_point_rules_are_checked_by_config_validate(tmp_path):
    """The operating-point rule, the promotion metric and the early-stopping metric are validated with the
    config (against the metric registry), so `config validate` catches them before any data work."""
    path = _write(tmp_path, "evaluate:\n  operating_point: sens>0.9\npromotion:\n  metric: AUC\n"
                            "train:\n  early_stopping:\n    metric: val_f1\n", "rules.yaml")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    text = "\n".join(ei.value.problems)
    assert "evaluate.operating_point: expected 'youden', 'sensitivity>=X', 'specificity>=X' or 'threshold=X'" in text
    assert "promotion.metric: expected one of auroc, sensitivity" in text and 'found "AUC"' in text
    assert "train.early_stopping.metric: expected one of val_auroc, val_acc, val_mae, val_loss, train_loss" in text
    with pytest.raises(ConfigError, match=r"evaluate.operating_point: expected a sensitivity target in \[0, 1\]"):
        load_config(None, ["evaluate.operating_point=sensitivity>=1.5"])
    cfg = load_config(None, ["evaluate.operating_point=specificity>=0.9", "promotion.metric=mae",
                             "data.task=ordinal", "train.early_stopping.metric=val_mae"])
    assert cfg.train.early_stopping.direction == "min"
    r = _cli("config", "validate", path)
    assert r.returncode == 2 and r.stderr.count("expected") == 3 and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- numbers a run cannot use


def _numeric_fields(kind: str) -> list[tuple]:
    """Every field of the config tree with a ``kind`` ('number' or 'integer') in its type, lists included."""
    from configutil import branches, leaves

    from medxfer.config import JobConfig

    schema = JobConfig.model_json_schema()
    out = []
    for path, prop in leaves(schema):
        for b in branches(schema, prop):
            items = b.get("prefixItems") or ([b["items"]] if isinstance(b.get("items"), dict) else [])
            inner = [i for item in items for i in branches(schema, item)]
            if b.get("type") == kind or any(i.get("type") == kind for i in inner):
                out.append((path, b.get("type") == "array"))
                break
    return out


FLOATS = _numeric_fields("number")
INTS = _numeric_fields("integer")


@pytest.mark.parametrize(("path", "is_list"), FLOATS, ids=[".".join(p) for p, _ in FLOATS])
def test_every_float_field_refuses_infinity_and_nan(path, is_list):
    """One rule for the whole tree: a learning rate of .inf, a NaN mean or std, a NaN split fraction
    (which passes every '<' and '>' bound) are config errors, not a run that diverges or crashes."""
    from configutil import nest

    from medxfer.config.loading import validate_dict

    assert len(FLOATS) >= 30  # the walk found the tree's float fields
    for bad in (float("inf"), float("-inf"), float("nan")):
        value = [bad, bad, bad] if is_list else bad
        with pytest.raises(ConfigError) as ei:
            validate_dict(nest(path, value), "job.yaml")
        dotted = ".".join(path)
        assert any(line.startswith(f"job.yaml: {dotted}") for line in ei.value.problems), ei.value.problems


@pytest.mark.parametrize(("path", "is_list"), INTS, ids=[".".join(p) for p, _ in INTS])
def test_every_integer_field_refuses_numbers_beyond_64_bits(path, is_list):
    """numpy, torch and Ray take counts as 64-bit integers: 1e29 would pass pydantic and fail mid-run."""
    from configutil import nest

    from medxfer.config.loading import validate_dict

    assert len(INTS) >= 25
    value = [10**29] if is_list else 10**29
    with pytest.raises(ConfigError) as ei:
        validate_dict(nest(path, value), "job.yaml")
    assert any(line.startswith(f"job.yaml: {'.'.join(path)}") for line in ei.value.problems), ei.value.problems


def test_config_validate_rejects_what_the_run_would_reject(tmp_path):
    """Values that used to pass `config validate` and then fail (or hang) the run: one line each, exit 2."""
    bad = {
        "train.seed: 1.0e+29": "train.seed",
        "train.lr: .inf": "train.lr",
        "preprocess.mean: [.nan]": "preprocess.mean.0",
        "preprocess.std: [.inf]": "preprocess.std.0",
        "evaluate.bootstrap: 1000000000000": "evaluate.bootstrap",
        "evaluate.seed: 4294967296": "evaluate.seed",
        "experiment.seeds: [0, -3]": "experiment.seeds.1",
        "data.split_fractions: [.nan, 0.5, 0.5]": "data.split_fractions.0",
        "storage.root: ''": "storage.root",
        "pretrain.crop_scale: [0.9, 0.2]": "pretrain.crop_scale",
        "train.batch_size: 1": "train.batch_size",  # batch norm cannot train on batches of one image
    }
    doc: dict = {}
    for line in bad:
        key, value = line.split(": ", 1)
        section, field = key.split(".")
        doc.setdefault(section, {})[field] = value
    f = tmp_path / "job.yaml"
    f.write_text("\n".join(f"{s}:\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items()) for s, fields in doc.items()))
    r = subprocess.run([sys.executable, "-m", "medxfer", "config", "validate", str(f), "--set", "data.split_seed=-1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    bad["data.split_seed: -1"] = "data.split_seed"
    for field in set(bad.values()):
        assert any(f": {field}: expected" in line for line in lines), (field, lines)
    assert len(lines) == len(set(bad.values())), lines  # one line per problem
    assert "finite number" in r.stderr and "less than or equal to 100000" in r.stderr
    # As typed on a command line (YAML 1.1 reads 1e29 as text; pydantic took it as a number).
    r = subprocess.run([sys.executable, "-m", "medxfer", "config", "validate", str(_write(tmp_path, "")),
                        "--set", "train.seed=1e29", "--set", "evaluate.bootstrap=1e12"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "train.seed" in r.stderr and "evaluate.bootstrap" in r.stderr, r.stderr


def test_deep_nesting_is_refused_in_one_line_naming_the_file(tmp_path):
    """100,000 nested brackets used to end in a RecursionError; now one line, before any recursion."""
    from medxfer.config.loading import MAX_YAML_DEPTH

    f = _write(tmp_path, "data:\n  classes: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert ei.value.problems == [f"{f}: not valid YAML at line 2, column {12 + MAX_YAML_DEPTH - 2}: nested deeper "
                                 f"than {MAX_YAML_DEPTH} levels (a job config needs 4)"]
    r = subprocess.run([sys.executable, "-m", "medxfer", "config", "validate", f], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ei.value.problems
    # A deep --set value is a string like any value that is not YAML, then refused by the field's type.
    with pytest.raises(ConfigError, match="data.classes: expected a valid list"):
        load_config(None, ["data.classes=" + "[" * 5000 + "]" * 5000])
    assert load_config(_write(tmp_path, "data:\n  classes: [a, b]\n")).data.classes == ["a", "b"]


def test_nest_dotted_addresses_the_config_tree_and_refuses_a_value_that_is_also_a_section():
    from medxfer.config.loading import nest_dotted

    assert nest_dotted({"train.lr": 0.1, "model.init": "x", "name": "n"}) == {
        "train": {"lr": 0.1}, "model": {"init": "x"}, "name": "n"}
    with pytest.raises(ConfigError, match="train is set both as a value and a section"):
        nest_dotted({"train": 1, "train.lr": 0.1})

"""medxfer.supervised.planning (on medxfer.train.plan's rules) and the driver's source checks, on a real BreastMNIST cache, without Ray."""

from __future__ import annotations

import pytest

from medxfer.models import create_model


def test_plan_and_source_checks(tmp_path, test_data):
    from evalutil import breast_job, breast_manifest

    from medxfer.config import JobConfig, PreprocessConfig
    from medxfer.config.loading import validate_dict
    from medxfer.data.cache import prepare
    from medxfer.errors import ConfigError
    from medxfer.lifecycle.bundle import save_bundle
    from medxfer.supervised.planning import plan_training
    from medxfer.supervised.stage import check_source

    cfg = breast_job(
        str(tmp_path / "root"),
        breast_manifest(test_data, tmp_path / "breast"),
        train={"batch_size": 16, "loss": "weighted_ce"},
        scaling={"num_workers": 2},
    )
    prepared = prepare(cfg)  # a real cache of BreastMNIST, made in this process
    plan = plan_training(cfg, "finetune", prepared, 101, use_gpu=False)
    # 50 rows per rank: 3 full batches of 16 and a last batch of 2 (kept; only a batch of 1 is skipped)
    assert plan.rows_per_worker == 50 and plan.steps_per_epoch == 4 and not plan.drop_partial
    assert plan.stem == "standard" and plan.in_chans == 1 and plan.num_outputs == 2
    counts = prepared.card["counts"]["train"]
    assert plan.class_counts == tuple(counts["per_class"][c] for c in prepared.classes)
    assert sum(plan.class_counts) == counts["total"]
    assert plan.data.mode == "memory" and plan.data.caches == (prepared.uri,)
    with pytest.raises(ConfigError, match="train.early_stopping.metric: expected one of val_auroc"):
        validate_dict({"train": {"early_stopping": {"metric": "val_auc"}}})

    uri = str(tmp_path / "src")
    save_bundle(
        uri,
        create_model("smallcnn", 2, 1).state_dict(),
        {
            "task": "multiclass",
            "classes": ["a", "b"],
            "backbone": "smallcnn",
            "in_chans": 1,
            "num_outputs": 2,
            "preprocess": PreprocessConfig(channels=1).model_dump(mode="json"),
        },
    )
    ok = JobConfig.model_validate({"model": {"backbone": "smallcnn", "init": uri}})
    assert check_source(ok).card.backbone == "smallcnn"
    with pytest.raises(ConfigError, match="set model.backbone: smallcnn"):
        check_source(JobConfig.model_validate({"model": {"backbone": "resnet18", "init": uri}}))


def test_the_in_memory_limit_counts_both_splits_and_defaults_to_a_quarter_of_a_workers_memory(tmp_path, test_data):
    from evalutil import breast_job, breast_manifest

    from medxfer.data.cache import prepare
    from medxfer.supervised.planning import plan_training
    from medxfer.train.plan import IN_MEMORY_MAX_BYTES, in_memory_limit, split_bytes

    cfg = breast_job(str(tmp_path / "root"), breast_manifest(test_data, tmp_path / "breast"))
    assert in_memory_limit(cfg, 16 * 1024**3) == 4 * 1024**3  # a quarter of what one worker can count on
    assert in_memory_limit(cfg, None) == IN_MEMORY_MAX_BYTES  # no cluster to ask
    prepared = prepare(cfg)
    train_bytes = split_bytes(101, tuple(prepared.image_shape))
    exact = cfg.model_copy(update={"data": cfg.data.model_copy(update={"in_memory_max_bytes": train_bytes})})
    assert in_memory_limit(exact, 16 * 1024**3) == train_bytes  # the setting wins
    assert plan_training(exact, "finetune", prepared, 101, use_gpu=False).data.mode == "memory"
    # Every worker holds the validation split too: with it, the same training split no longer fits.
    plan = plan_training(exact, "finetune", prepared, 101, use_gpu=False, n_val=10)
    assert plan.data.mode == "stream" and plan.data.limit_bytes == train_bytes
    assert plan.data.window_bytes == train_bytes // 4 and plan.data.train is None  # the launcher lists the pieces

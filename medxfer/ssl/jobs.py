"""``medxfer pretrain``: self-supervised pretraining of a backbone on unlabeled images, as a Ray job.

The driver prepares every manifest of the config (``data.manifest`` + ``data.extra_manifests``)
*separately*, through the same content-keyed cache as training. Why one cache per manifest,
not their union: each source keeps the key its own ``source-train`` or ``finetune`` run uses,
so pretraining on PneumoniaMNIST + BreastMNIST decodes nothing that those runs have already
cached, and each source's split is exactly the split its fine-tuning run will see. Only the
``train`` split of each manifest is read (labels dropped, ``label_fraction`` ignored: every
training image may be used without its label); validation and test images never reach the
pretraining workers, so a target's held-out images stay held out.

Training is Ray Train V2 as in ``medxfer.train.jobs``: workers from ``scaling``, the run
folder ``<root>/runs/<name>`` (re-running the same name resumes from its last checkpoint),
``failure.max_failures`` restarts. The result is an ordinary model bundle at
``runs/<name>/bundle`` holding only the backbone's tensors (``backbone.*``), so ``finetune``
with ``model.init: <that bundle>`` loads every backbone tensor and makes a new head. Its
card records the method, the pretraining sources with their cache keys and image counts,
and the lineage; ``task`` is ``self-supervised`` and ``num_outputs`` 0, since it has no head.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError, DataError

log = logging.getLogger("medxfer.ssl")

SNAPSHOT = "checkpoint_manager_snapshot.json"
TASK = "self-supervised"


def manifests_of(cfg: JobConfig) -> list[str]:
    """The manifests to pretrain on, in order, without repeats (a repeat would double-weight a source)."""
    if not cfg.data.manifest:
        raise ConfigError(["data.manifest: not set; pretraining needs at least one manifest of images"])
    out: list[str] = []
    for m in [cfg.data.manifest, *cfg.data.extra_manifests]:
        if storage.normalize(m) in {storage.normalize(o) for o in out}:
            log.warning("manifest %s listed twice; using it once", m)
            continue
        out.append(m)
    return out


def source_config(cfg: JobConfig, manifest: str) -> JobConfig:
    """``cfg`` narrowed to one manifest with all its training images (the key its own runs use)."""
    data = cfg.data.model_copy(update={"manifest": manifest, "extra_manifests": [], "label_fraction": 1.0})
    return cfg.model_copy(update={"data": data})


def data_fingerprint(keys: list[str]) -> str:
    """One fingerprint for the pooled pretraining data: a hash of the sources' cache keys, in order."""
    if len(keys) == 1:
        return keys[0]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def plan_pretrain(cfg: JobConfig, n_images: int, in_chans: int, size: int, use_gpu: bool) -> dict:
    """What the workers need besides the config, computed once on the driver (pure)."""
    from medxfer.models import stem_for_size

    world = cfg.scaling.num_workers
    rows = n_images // world
    if rows < 2:
        raise DataError(f"{n_images} training images for {world} worker(s): each worker needs at least 2 "
                        "(batch norm); add images or lower scaling.num_workers")
    bs = cfg.train.batch_size
    if bs < 2:
        raise ConfigError(["train.batch_size: self-supervised pretraining needs at least 2 images per worker "
                           "(batch norm in the projector); found 1"])
    bs = min(bs, rows)  # a shard smaller than one batch still trains (last partial batch is dropped)
    return {
        "in_chans": in_chans,
        "stem": stem_for_size(size, cfg.model.stem),
        "rows_per_worker": rows,
        "batch_size": bs,
        "steps_per_epoch": max(1, rows // bs),
        "use_gpu": use_gpu,
        "cpus_per_worker": cfg.scaling.cpus_per_worker,
    }


def build_card(cfg: JobConfig, sources: list[dict], plan: dict, final: dict, source=None):
    """The card (:func:`medxfer.card.build_card`) plus ``pretraining``: method, sources, counts, loss."""
    from medxfer.card import build_card as card_for

    keys = [s["cache_key"] for s in sources]
    return card_for(
        cfg, "pretrain", task=TASK, classes=[], plan={**plan, "num_outputs": 0}, spec=cfg.preprocess,
        data_fingerprint=data_fingerprint(keys), data_fingerprints=keys, source=source,
        weights="backbone only (backbone.*); fine-tune it: model.init = this bundle's URI",
        pretraining={
            "method": cfg.pretrain.method,
            "settings": cfg.pretrain.model_dump(mode="json"),
            "epochs": final.get("epoch"),
            "batch_size_per_worker": plan["batch_size"],
            "num_workers": cfg.scaling.num_workers,
            "final_loss": final.get("loss"),
            "final_repr_std": final.get("repr_std"),
            "splits_used": ["train"],
            "sources": sources,
            "images": sum(s["train_images"] for s in sources),
        },
    )


def run_pretrain(cfg: JobConfig) -> dict:
    """Pretrain (or resume) the run ``cfg.name``; write its bundle, config.yaml and result.json."""
    from ray.train.torch import TorchTrainer

    from medxfer.bundle import save_bundle
    from medxfer.config_io import dump_yaml
    from medxfer.data.cache import prepare, resolve_channels
    from medxfer.models.registry import check_imagenet
    from medxfer.runs import check_run
    from medxfer.runtime import init_ray
    from medxfer.ssl.worker import export_backbone, pretrain_func
    from medxfer.train.checkpoint import read_state, read_weights
    from medxfer.train.jobs import fit_or_explain, run_config, scaling_config

    t0 = time.time()
    cfg = resolve_channels(cfg)  # once for all sources: their tensors are pooled into one shape
    layout = storage.Layout(cfg.storage.root)
    run_uri = layout.run(cfg.name)
    done = check_run(cfg, run_uri)
    if done is not None:
        return done
    check_imagenet(cfg)
    init_ray()
    source = None
    if cfg.model.init not in ("scratch", "imagenet"):
        from medxfer.train.jobs import check_source

        source = check_source(cfg)  # a bundle init must exist, verify and match the backbone before workers start

    sources, parts = [], []
    for m in manifests_of(cfg):
        prepared = prepare(source_config(cfg, m))
        ds = prepared.dataset("train").select_columns(["image"])
        n = int(prepared.card["counts"]["train"]["total"])
        sources.append({"manifest": storage.normalize(m), "cache_key": prepared.key, "cache_uri": prepared.uri,
                        "train_images": n, "source_names": sorted(prepared.card.get("sources", {}))})
        parts.append(ds)
    train_ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    # Sources arrive one after another; shuffling whole blocks (cheap, no data movement) plus the
    # workers' local shuffle buffer mixes them, so a batch is not all chest X-ray or all ultrasound.
    train_ds = train_ds.randomize_block_order()
    n_images = sum(s["train_images"] for s in sources)

    scaling, use_gpu = scaling_config(cfg)
    plan = plan_pretrain(cfg, n_images, cfg.preprocess.channels, cfg.preprocess.size, use_gpu)
    resumed = storage.exists(storage.join(run_uri, SNAPSHOT))
    storage.write_text(storage.join(run_uri, "config.yaml"), dump_yaml(cfg))
    log.info("%s pretraining (%s) of %s on %d unlabeled training images from %d source(s) (%s), %d worker(s)%s, %s",
             "resuming" if resumed else "starting", cfg.pretrain.method, cfg.model.backbone, n_images, len(sources),
             ", ".join(f"{storage.basename(storage.parent(s['manifest']))} {s['train_images']}" for s in sources),
             cfg.scaling.num_workers, " with GPUs" if use_gpu else "", run_uri)
    trainer = TorchTrainer(
        pretrain_func,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan},
        datasets={"train": train_ds},
        scaling_config=scaling,
        run_config=run_config(cfg, layout.runs(), scored=False),
    )
    result = fit_or_explain(trainer, run_uri)
    last = dict(result.metrics or {})
    if result.checkpoint is None:
        raise DataError(f"{run_uri}: pretraining reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        weights, state = read_weights(d), read_state(d)
    history = state.history
    final = history[-1] if history else {}
    card = build_card(cfg, sources, plan, final, source)
    card = save_bundle(storage.join(run_uri, "bundle"), export_backbone(weights), card)
    this_run = history[len(history) - int(last.get("epochs_this_run") or 0):] if last.get("epochs_this_run") else []
    out = {
        "name": cfg.name,
        "stage": "pretrain",
        "method": cfg.pretrain.method,
        "status": "complete" if state.epoch >= cfg.train.epochs else (last.get("stopped") or "stopped"),
        "epoch": state.epoch,
        "epochs_total": cfg.train.epochs,
        "epochs_run": len(this_run),
        "resumed": bool(resumed or last.get("resumed_from_epoch") is not None),
        "resumed_from_epoch": last.get("resumed_from_epoch"),
        "final": final,
        "wall_time_s": round(time.time() - t0, 2),
        "images_per_s": (sum(h["images_per_s"] for h in this_run) / len(this_run)) if this_run else None,
        "train_images": n_images,
        "sources": sources,
        "num_workers": cfg.scaling.num_workers,
        "use_gpu": use_gpu,
        "bundle": storage.join(run_uri, "bundle"),
        "bundle_id": card["id"],
        "data_fingerprint": card["data_fingerprint"],
        "lineage": card["lineage"],
        "history": history,
    }
    storage.write_json(storage.join(run_uri, "result.json"), out)
    loss = final.get("loss", math.nan)
    log.info("%s: %s after epoch %d/%d; loss %.4f; bundle %s", cfg.name, out["status"], state.epoch,
             cfg.train.epochs, loss if loss is not None else math.nan, out["bundle"])
    return out


def cmd_pretrain(args) -> int:
    from medxfer.config_io import load_config

    out = run_pretrain(load_config(args.config, args.set))
    state = f"already {out['status']}, nothing to do" if out.get("already_complete") else out["status"]
    print(f"{out['name']}: {state} ({out['method']}, epoch {out['epoch']}/{out['epochs_total']}, "
          f"{out['train_images']} images from {len(out['sources'])} source(s)); bundle {out['bundle']}")
    return 0

"""``medxfer pretrain``: self-supervised pretraining of a backbone on unlabeled images, as a Ray job.

The driver prepares every manifest of the config (``data.manifest`` + ``data.extra_manifests``)
*separately*, through the same content-keyed cache as training. Why one cache per manifest,
not their union: each source keeps the key its own ``source-train`` or ``finetune`` run uses,
so pretraining on PneumoniaMNIST + BreastMNIST decodes nothing that those runs have already
cached, and each source's split is exactly the split its fine-tuning run will see. Only the
``train`` split of each manifest is read (labels dropped, ``label_fraction`` ignored: every
training image may be used without its label); validation and test images never reach the
pretraining workers, so a target's held-out images stay held out.

Training is the one engine (``medxfer.train.launch``): workers from ``scaling``, the run
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
from datetime import datetime, timezone

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.ssl.trainee import export_backbone
from medxfer.train.plan import SSL_TASK

log = logging.getLogger("medxfer.ssl")

TASK = SSL_TASK


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


def check_resumable(cfg: JobConfig, run_uri: str) -> None:
    """A run resumes only with the network it started with; say so instead of a shape error in a worker."""
    from medxfer.config_io import load_config

    prev_uri = storage.join(run_uri, "config.yaml")
    if not storage.exists(prev_uri):
        return
    prev = load_config(prev_uri, [])
    fields = {
        "pretrain.method": (prev.pretrain.method, cfg.pretrain.method),
        "pretrain.projection_dim": (prev.pretrain.projection_dim, cfg.pretrain.projection_dim),
        "model.backbone": (prev.model.backbone, cfg.model.backbone),
        "preprocess.channels": (prev.preprocess.channels, cfg.preprocess.channels),
    }
    changed = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in fields.items() if a != b]
    if changed:
        raise ConfigError([f"name: run {cfg.name!r} in {run_uri} was started with other settings "
                           f"({'; '.join(changed)}); give this run a new name, or restore those settings to resume"])


def build_card(cfg: JobConfig, sources: list[dict], plan: dict, final: dict, source=None) -> dict:
    """The bundle card: the standard keys plus ``pretraining`` (method, sources, counts, loss)."""
    p = cfg.preprocess
    keys = [s["cache_key"] for s in sources]
    lineage = {"stage": "pretrain", "init": cfg.model.init, "method": cfg.pretrain.method}
    if source is not None:  # supervised+ssl: self-supervision continued from a source bundle
        lineage.update(source_uri=cfg.model.init, source_bundle_id=source.id,
                       source_weights_sha256=source.card["weights_sha256"],
                       source_data_fingerprint=source.card.get("data_fingerprint"),
                       source_lineage=source.card.get("lineage"))
    return {
        "name": cfg.model.name,
        "run": cfg.name,
        "task": TASK,
        "classes": [],
        "backbone": cfg.model.backbone,
        "stem": plan.stem,
        "in_chans": plan.in_chans,
        "num_outputs": 0,
        "weights": "backbone only (backbone.*); fine-tune it: model.init = this bundle's URI",
        "preprocess": p.model_dump(mode="json"),
        "input": {"shape": [p.channels, p.size, p.size], "dtype": "float32",
                  "note": "output of medxfer.data.preprocess.preprocess_bytes with this spec"},
        "lineage": lineage,
        "pretraining": {
            "method": cfg.pretrain.method,
            "settings": cfg.pretrain.model_dump(mode="json"),
            "epochs": final.get("epoch"),
            "batch_size_per_worker": plan.batch_size,
            "num_workers": cfg.scaling.num_workers,
            "final_loss": final.get("loss"),
            "final_repr_std": final.get("repr_std"),
            "splits_used": ["train"],
            "sources": sources,
            "images": sum(s["train_images"] for s in sources),
        },
        "data_fingerprint": data_fingerprint(keys),
        "data_fingerprints": keys,
        "config": cfg.model_dump(mode="json"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def pretrain_inputs(cfg: JobConfig, use_gpu: bool, source=None):
    """Prepare every manifest's cache (each under its own key) and plan the pretraining run."""
    from medxfer.data.cache import prepare
    from medxfer.train.launch import StageInputs
    from medxfer.train.plan import plan_pretraining

    sources, caches, parts = [], [], []
    for m in manifests_of(cfg):
        prepared = prepare(source_config(cfg, m))
        n = int(prepared.card["counts"]["train"]["total"])
        sources.append({"manifest": storage.normalize(m), "cache_key": prepared.key, "cache_uri": prepared.uri,
                        "train_images": n, "source_names": sorted(prepared.card.get("sources", {}))})
        caches.append(prepared.uri)
        parts.append(prepared)
    n_images = sum(s["train_images"] for s in sources)
    plan = plan_pretraining(cfg, caches, n_images, tuple(parts[0].image_shape), use_gpu)
    datasets = None
    if plan.data.mode == "stream":
        ds = [p.dataset("train").select_columns(["image"]) for p in parts]
        # Sources arrive one after another; shuffling whole blocks (no data movement) plus the workers'
        # local shuffle buffer mixes them, so a batch is not all chest X-ray or all ultrasound.
        datasets = {"train": (ds[0].union(*ds[1:]) if len(ds) > 1 else ds[0]).randomize_block_order()}
    names = ", ".join(f"{storage.basename(storage.parent(s['manifest']))} {s['train_images']}" for s in sources)
    return StageInputs(
        plan=plan, describe=f"({cfg.pretrain.method}) on {n_images} unlabeled training images from "
                            f"{len(sources)} source(s) ({names})",
        card=lambda best, state: build_card(cfg, sources, plan, state.history[-1] if state.history else {}, source),
        export=export_backbone, datasets=datasets, data_fingerprint=data_fingerprint([s["cache_key"] for s in sources]),
        result_extra={"method": cfg.pretrain.method, "train_images": n_images, "sources": sources},
    )


def run_pretrain(cfg: JobConfig) -> dict:
    """Pretrain (or resume) the run ``cfg.name``; write its bundle, config.yaml and result.json."""
    from medxfer.data.cache import resolve_channels
    from medxfer.train.launch import launch

    cfg = resolve_channels(cfg)  # once for all sources: their tensors are pooled into one shape

    def inputs(use_gpu: bool):
        source = None
        if cfg.model.init not in ("scratch", "imagenet"):
            from medxfer.train.jobs import check_source

            source = check_source(cfg)  # must exist, verify and match the backbone before workers start
        return pretrain_inputs(cfg, use_gpu, source)

    return launch(cfg, "pretrain", inputs, check_resumable)


def cmd_pretrain(args) -> int:
    from medxfer.config_io import load_config

    out = run_pretrain(load_config(args.config, args.set))
    print(f"{out['name']}: {out['status']} ({out['method']}, epoch {out['epoch']}/{out['epochs_total']}, "
          f"{out['train_images']} images from {len(out['sources'])} source(s)); bundle {out['bundle']}")
    from medxfer.train.jobs import exit_code

    return exit_code(out)

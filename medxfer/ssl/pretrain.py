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
from typing import TYPE_CHECKING

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.ssl.trainee import SSLTrainee, export_backbone
from medxfer.train.plan import (
    SSL_TASK,
    DataPlan,
    RunPlan,
    data_mode,
    in_memory_limit,
    shard_rows,
    split_bytes,
    steps_per_epoch,
    workers,
)

if TYPE_CHECKING:
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.lifecycle.card import ModelCard
    from medxfer.train.launch import StageInputs

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


def plan_pretraining(cfg: JobConfig, caches: list[str], n_images: int, image_shape: tuple[int, int, int],
                     use_gpu: bool, worker_memory: float | None = None) -> RunPlan:
    """The plan of a self-supervised pretraining run over the training splits of ``caches``."""
    from medxfer.models import stem_for_size

    world = workers(cfg)
    rows = shard_rows(n_images, world)
    if cfg.train.batch_size < 2:
        raise ConfigError(["train.batch_size: self-supervised pretraining needs at least 2 images per worker "
                           "(batch norm in the projector); found 1"])
    bs = min(cfg.train.batch_size, rows)  # a shard smaller than one batch still trains
    limit = in_memory_limit(cfg, worker_memory)
    return RunPlan(
        stage="pretrain", task=SSL_TASK, num_outputs=0, num_grades=0, in_chans=int(image_shape[0]),
        stem=stem_for_size(image_shape[-1], cfg.model.stem), class_counts=None, train_rows=n_images,
        world=world, rows_per_worker=rows, batch_size=bs, drop_partial=True,
        steps_per_epoch=steps_per_epoch(rows, bs, True), use_gpu=use_gpu, cpus_per_worker=cfg.scaling.cpus_per_worker,
        data=DataPlan(caches=tuple(caches), mode=data_mode(split_bytes(n_images, image_shape), limit), validate=False,
                      limit_bytes=limit),
    )


def build_card(cfg: JobConfig, sources: list[dict], plan: RunPlan, final: dict,
               source: Bundle | None = None) -> ModelCard:
    """The card (:func:`medxfer.lifecycle.card_builder.build_card`) plus ``pretraining``: method, sources, counts, loss."""
    from medxfer.lifecycle.card_builder import build_card as card_for

    keys = [s["cache_key"] for s in sources]
    return card_for(
        cfg, "pretrain", task=TASK, classes=[], plan=plan, spec=cfg.preprocess,
        data_fingerprint=data_fingerprint(keys), data_fingerprints=keys, source=source,
        weights="backbone only (backbone.*); fine-tune it: model.init = this bundle's URI",
        pretraining={
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
    )


def pretrain_inputs(cfg: JobConfig, use_gpu: bool, source: Bundle | None = None) -> StageInputs:
    """Prepare every manifest's cache (each under its own key) and plan the pretraining run."""
    from medxfer.data.cache import prepare
    from medxfer.data.cache.stream import list_pieces
    from medxfer.lifecycle.card_builder import bundle_writer
    from medxfer.train.launch import StageInputs, worker_memory
    from medxfer.train.plan import streamed

    sources, caches, parts = [], [], []
    for m in manifests_of(cfg):
        prepared = prepare(source_config(cfg, m))
        n = prepared.cached_rows("train")
        sources.append({"manifest": storage.normalize(m), "cache_key": prepared.key, "cache_uri": prepared.uri,
                        "train_images": n, "source_names": prepared.source_names})
        caches.append(prepared.uri)
        parts.append(prepared)
    n_images = sum(s["train_images"] for s in sources)
    plan = plan_pretraining(cfg, caches, n_images, tuple(parts[0].image_shape), use_gpu,
                            worker_memory=worker_memory(cfg, use_gpu))
    if plan.data.mode == "stream":
        # The sources' pieces in one list: each epoch orders them at random, and a worker shuffles
        # the rows of several pieces at once, so a batch is not all chest X-ray or all ultrasound.
        plan = streamed(plan, list_pieces(parts, "train"))
    names = ", ".join(f"{storage.basename(storage.parent(s['manifest']))} {s['train_images']}" for s in sources)
    return StageInputs(
        plan=plan, describe=f"({cfg.pretrain.method}) on {n_images} unlabeled training images from "
                            f"{len(sources)} source(s) ({names})",
        trainee=SSLTrainee,
        write_bundle=bundle_writer(
            lambda best, state: build_card(cfg, sources, plan, state.history[-1] if state.history else {}, source),
            export=export_backbone),
        data_fingerprint=data_fingerprint([s["cache_key"] for s in sources]),
        result_extra={"method": cfg.pretrain.method, "train_images": n_images, "sources": sources},
    )


def run_pretrain(cfg: JobConfig) -> dict:
    """Pretrain (or resume) the run ``cfg.name``; write its bundle, config.yaml and result.json."""
    from medxfer.data.cache import resolve_channels
    from medxfer.train.launch import launch

    cfg = resolve_channels(cfg)  # once for all sources: their tensors are pooled into one shape

    def inputs(use_gpu: bool) -> StageInputs:
        source = None
        if cfg.model.init not in ("scratch", "imagenet"):
            from medxfer.supervised.stage import check_source

            source = check_source(cfg)  # must exist, verify and match the backbone before workers start
        return pretrain_inputs(cfg, use_gpu, source)

    return launch(cfg, "pretrain", inputs)

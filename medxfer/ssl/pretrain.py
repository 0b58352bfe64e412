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
from medxfer.ssl.trainee import export_backbone
from medxfer.train.plan import SSL_TASK, RunPlan

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
    from medxfer.train.launch import StageInputs, worker_memory
    from medxfer.train.plan import plan_pretraining, streamed

    sources, caches, parts = [], [], []
    for m in manifests_of(cfg):
        prepared = prepare(source_config(cfg, m))
        n = int(prepared.card["counts"]["train"]["total"])
        sources.append({"manifest": storage.normalize(m), "cache_key": prepared.key, "cache_uri": prepared.uri,
                        "train_images": n, "source_names": sorted(prepared.card.get("sources", {}))})
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
        card=lambda best, state: build_card(cfg, sources, plan, state.history[-1] if state.history else {}, source),
        export=export_backbone, data_fingerprint=data_fingerprint([s["cache_key"] for s in sources]),
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
            from medxfer.train.jobs import check_source

            source = check_source(cfg)  # must exist, verify and match the backbone before workers start
        return pretrain_inputs(cfg, use_gpu, source)

    return launch(cfg, "pretrain", inputs)

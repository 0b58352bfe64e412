"""Helpers shared by the evaluation-plane tests: tiny real bundles and synthetic reports."""

from __future__ import annotations

import torch

from medxfer.config import PreprocessConfig
from medxfer.lifecycle.bundle import save_bundle
from medxfer.lifecycle.card import ModelCard
from medxfer.models import create_model


def tiny_bundle(uri: str, classes=("malignant", "normal"), seed: int = 0, size: int = 28, task="multiclass",
                positive_class: str | None = None) -> ModelCard:
    """An untrained smallcnn saved as a real bundle (weights differ by seed; default positive class: the last)."""
    torch.manual_seed(seed)
    n_out = 1 if task == "ordinal" else len(classes)
    model = create_model("smallcnn", n_out, 1)
    card = {
        "name": "tiny",
        "task": task,
        "classes": list(classes),
        "backbone": "smallcnn",
        "in_chans": 1,
        "num_outputs": n_out,
        "stem": getattr(model, "stem", "standard"),
        "preprocess": PreprocessConfig(size=size, channels=1).model_dump(mode="json"),  # a bundle carries a resolved spec
    }
    if positive_class is not None:
        card.update(positive_class=positive_class, positive_class_source="data.positive_class")
    return save_bundle(uri, model.state_dict(), card)


def file_hashes(folder) -> dict[str, str]:
    """sha256 of every file under ``folder`` (local or s3://), by path: a bundle's bytes, to compare."""
    import hashlib

    from medxfer import storage

    return {f: hashlib.sha256(storage.read_bytes(f)).hexdigest() for f in storage.list_files(str(folder))}


def report_for(bundle: ModelCard, threshold: float, positive_class: str, auroc: float = 0.8) -> dict:
    """A report of ``bundle`` (the card save_bundle returned) with an operating point, as evaluate writes them."""
    return {**report(auroc, 0.9), "kind": "medxfer-evaluation/1", "bundle_id": bundle.id,
            "weights_sha256": bundle.weights_sha256, "card_sha256": bundle.card_sha256,
            "positive_class": positive_class,
            "operating_point": {"rule": "youden", "threshold": threshold, "positive_class": positive_class,
                                "chosen_on": "val"}}


def report(auroc: float, sensitivity: float, fingerprint: str = "holdout-1") -> dict:
    """The parts of an evaluation report that promotion reads."""
    return {
        "metrics": {
            "auroc": {"value": auroc, "ci": [auroc - 0.05, auroc + 0.05]},
            "sensitivity": {"value": sensitivity, "ci": [sensitivity - 0.1, sensitivity + 0.1]},
        },
        "holdout": {"fingerprint": fingerprint, "split": "test", "n": 100},
    }


def breast_manifest(test_data, folder, label_names: str = "names") -> str:
    """BreastMNIST (real, 780 images) imported as PNGs + manifest.csv into ``folder``; returns the manifest.

    ``label_names="index"``: labels '0' (malignant) and '1', as manifests imported before named classes
    (and bundles trained on them) have."""
    from medxfer.data.importers import import_medmnist

    import_medmnist(test_data / "medmnist" / "breastmnist.npz", str(folder), label_names=label_names)
    return str(folder / "manifest.csv")


def breast_job(root: str, manifest: str, name: str = "breast-eval", **sections):
    """A tiny, fast job config on BreastMNIST: 28 px, smallcnn, CPU, one worker."""
    from medxfer.config.loading import deep_merge, validate_dict

    base = {
        "name": name,
        "data": {"manifest": manifest, "positive_class": "malignant"},
        "preprocess": {"size": 28},
        "model": {"backbone": "smallcnn", "init": "scratch", "name": "breast"},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.003, "augment": False, "warmup_epochs": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": False},
        "evaluate": {"operating_point": "sensitivity>=0.8", "bootstrap": 300},
        "storage": {"root": root},
    }
    return validate_dict(deep_merge(base, sections))

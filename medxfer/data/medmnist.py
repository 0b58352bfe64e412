"""MedMNIST v2 arrays: the official download (MD5-checked, cached) and reading ``.npz`` files.

Why a local table of checksums: the files come from Zenodo over the network; a truncated or
substituted file must fail loudly instead of becoming a silently wrong benchmark. The MD5s below
are those of the official MedMNIST ``INFO`` table (medmnist/info.py, Zenodo record 10519652).
``breastmnist_64`` was cross-checked against the byte-identical copy in ``../shared/data``.
The shared ``pneumoniamnist.npz``/``breastmnist.npz`` are *modified* copies (see its README), so
their MD5s differ from the official ones on purpose; ``--npz`` files are never MD5-checked.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from medxfer.errors import DataError

log = logging.getLogger("medxfer.data")

URL = "https://zenodo.org/records/10519652/files/{name}{suffix}.npz?download=1"
SIZES = (28, 64, 128, 224)

# name -> {size: md5}; from the official medmnist INFO table (see module docstring).
OFFICIAL_MD5: dict[str, dict[int, str | None]] = {
    "pathmnist": {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
                  128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"},
    "chestmnist": {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
                   128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"},
    "dermamnist": {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
                   128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"},
    "octmnist": {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
                 128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"},
    "pneumoniamnist": {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
                       128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"},
    "retinamnist": {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
                    128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"},
    "breastmnist": {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
                    128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"},
    "bloodmnist": {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
                   128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"},
    "tissuemnist": {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
                    128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"},
    "organamnist": {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
                    128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"},
    "organcmnist": {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
                    128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"},
    "organsmnist": {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
                    128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"},
}

# The published label names of each 2D MedMNIST v2 set, in class-index order, exactly as MedMNIST's
# own ``INFO[name]["label"]`` (medmnist/info.py) prints them. The 3D sets are left out: ``load_npz``
# refuses their volumes. ``class_name`` turns each into the name a manifest carries.
_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")
PUBLISHED_LABELS: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),  # diabetic retinopathy grades, published as numbers
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
                    "Proximal Tubule Segments", "Thick Ascending Limb"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}

# Binary sets: the class that is the finding, so that sensitivity, operating points and decisions are
# about it (BreastMNIST's finding is class 0, not "the last class").
FINDING = {"pneumoniamnist": "pneumonia", "breastmnist": "malignant"}

# Official split sizes (for a sanity message, not enforced on --npz files).
SPLIT_SIZES = {
    "pneumoniamnist": (4708, 524, 624),
    "breastmnist": (546, 78, 156),
}


def cache_dir() -> Path:
    """``MEDXFER_CACHE_DIR``/medmnist, else ``~/.cache/medxfer/medmnist``."""
    base = os.environ.get("MEDXFER_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "medxfer"
    return root / "medmnist"


def file_name(name: str, size: int = 28) -> str:
    return f"{name}{'' if size == 28 else f'_{size}'}.npz"


def download(name: str, size: int = 28, dest: Path | None = None, timeout: float = 60.0) -> Path:
    """Download an official MedMNIST file (or reuse a verified cached copy); returns its path.

    pooch downloads to a temporary name, checks the MD5 and only then moves the file into place,
    so a corrupt download never sits in the cache; a cached copy whose MD5 differs is fetched again.
    """
    import pooch
    import requests

    name = name.lower().strip()
    if name not in OFFICIAL_MD5:
        raise DataError(f"unknown MedMNIST dataset {name!r}; known 2D sets: {', '.join(sorted(OFFICIAL_MD5))}")
    if size not in SIZES:
        raise DataError(f"MedMNIST size must be one of {SIZES}, got {size}")
    expected = OFFICIAL_MD5[name].get(size)
    folder = dest or cache_dir()
    url = URL.format(name=name, suffix="" if size == 28 else f"_{size}")
    pooch.get_logger().setLevel(logging.WARNING)  # medxfer says what it downloads, once
    log.info("MedMNIST %s: %s (cached in %s)", file_name(name, size), url, folder)
    downloader = pooch.HTTPDownloader(timeout=timeout, headers={"User-Agent": "medxfer"}, progressbar=False)
    try:
        got = pooch.retrieve(url, known_hash=f"md5:{expected}" if expected else None, fname=file_name(name, size),
                             path=folder, downloader=downloader)
    except ValueError as e:  # pooch's hash mismatch
        raise DataError(
            f"{url}: MD5 mismatch ({e}); the download is corrupt or the file changed upstream. Retry, or "
            "download it yourself and pass --npz FILE"
        ) from None
    except (requests.RequestException, OSError) as e:
        raise DataError(
            f"could not download {url} ({type(e).__name__}); are you offline? Download the file elsewhere and "
            f"pass --npz FILE, or put it in {folder}"
        ) from None
    if expected is None:
        log.warning("no official MD5 recorded for %s; not verified", file_name(name, size))
    return Path(got)


def load_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images uint8 (N,H,W) or (N,H,W,3), labels (N,) or (N,K))}`` from a MedMNIST .npz."""
    not_npz = DataError(
        f"{path}: not a MedMNIST .npz file (a zip of plain numeric arrays: train_images, train_labels, ...); "
        "check the file, or download it again"
    )
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise not_npz from None  # numpy's message would suggest loading the file unsafely
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise not_npz
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with z:
        keys = set(z.files)
        for split in ("train", "val", "test"):
            ik, lk = f"{split}_images", f"{split}_labels"
            if ik not in keys and lk not in keys:
                continue
            if ik not in keys or lk not in keys:
                raise DataError(f"{path}: has {ik if ik in keys else lk} but not its pair")
            try:
                images, labels = z[ik], z[lk]
            except (OSError, ValueError, EOFError):  # object arrays (pickles) or a damaged member
                raise not_npz from None
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim not in (1, 2) or len(labels) != len(images):
                raise DataError(f"{path}: {lk} has shape {labels.shape}, expected ({len(images)},) or ({len(images)}, 1)")
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
                raise DataError(f"{path}: {ik} has shape {images.shape}; expected (N,H,W) or (N,H,W,3) (2D MedMNIST)")
            if images.dtype != np.uint8:
                if images.max(initial=0) <= 1.0 and images.dtype.kind == "f":
                    images = np.round(images * 255)
                images = np.clip(images, 0, 255).astype(np.uint8)
            out[split] = (images, labels)
    if not out:
        raise DataError(f"{path}: no train_images/train_labels (etc.) arrays; is this a MedMNIST file?")
    return out


def class_name(published: str) -> str:
    """A published label as a manifest's class name: ``normal, benign`` -> ``normal_or_benign``.

    Lower case, a parenthesised aside dropped, ", " read as "or", and any other run of characters
    outside ``[a-z0-9-]`` joined into one ``_``. Why not the text as published: a class name is
    typed in ``--set data.positive_class=...`` and YAML, where spaces and commas need quoting, and
    ``|`` separates findings in a multilabel manifest.
    """
    text = re.sub(r"\(.*?\)", "", published).lower().replace(", ", " or ")
    return re.sub(r"[^a-z0-9-]+", "_", text).strip("_")


def dataset_of(name: str) -> str:
    """The MedMNIST set a file or dataset name refers to: ``breastmnist_64`` -> ``breastmnist``."""
    return name.lower().strip().split("_")[0]


def class_names(name: str) -> list[str] | None:
    """The class names of MedMNIST set ``name`` in index order (None for a set without published names)."""
    published = PUBLISHED_LABELS.get(dataset_of(name))
    return [class_name(p) for p in published] if published else None


def finding(name: str, names: list[str] | None) -> str | None:
    """The positive class of a binary set (its finding) in the form the manifest uses, else None."""
    positive = FINDING.get(dataset_of(name))
    if positive is None:
        return None
    index = (class_names(name) or []).index(positive)
    return names[index] if names else str(index)


def label_strings(labels: np.ndarray, names: list[str] | None = None, what: str = "labels") -> list[str]:
    """Class index -> its name (``names[i]``), or ``'0'`` without names; multi-label rows (N,K) of 0/1 ->
    ``'effusion|mass'`` (``'2|4'``), or ``'none'`` (medxfer's multilabel form)."""
    label = (lambda i: names[i]) if names else str
    if labels.ndim == 1:
        index = labels.astype(np.int64)
        if names and len(index) and (index.min() < 0 or index.max() >= len(names)):
            raise DataError(f"{what}: class index {int(index.max())} is outside this set's {len(names)} classes "
                            f"({', '.join(names)}); is this the file of the set it is named after? Import it with "
                            "--label-names index to keep the indices")
        return [label(int(v)) for v in index]
    if names and labels.shape[1] != len(names):
        raise DataError(f"{what}: {labels.shape[1]} label columns, but this set has {len(names)} findings "
                        f"({', '.join(names)}); import it with --label-names index to keep the indices")
    return ["|".join(label(int(i)) for i in np.flatnonzero(row)) or "none" for row in labels]

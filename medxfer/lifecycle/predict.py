"""Batch prediction: decode on CPU tasks, model replicas in an actor pool (Ray Data), or both in
this process for small inputs.

Why two stages: decoding a 2000x2000 DICOM costs far more CPU than a forward pass of a
small network on a GPU, so decoding runs as plain Ray tasks that scale over every CPU of
the cluster, while the model lives in a pool of long-lived actors (one GPU each when the
cluster has GPUs) that load the bundle once and see only ready tensors. Starting Ray costs
20 seconds or more, which dominates a handful of images: the local engine (``--engine``, auto
below ``data.local_max_images`` inputs) runs the same two functions, :func:`decode_batch` and
:func:`score_batch`, on this process's threads and model, so both engines give the same rows.
Every file is decoded in a budgeted decode worker (:mod:`medxfer.data.decode.sandbox`): a file
that needs more memory or time than its budget, or crashes its decoder, is one error row.

The decision (``positive`` / ``not positive``) needs an operating point, and the user names
where it comes from: an evaluation report of this bundle (``--report``) or a registry version
(``--registry-version MODEL:VERSION``), whose bundle and report were registered together. The
output says which one decided (``threshold_source`` column, ``summary.json``, the CLI line);
without one, prediction gives scores and no decision, and says so. The bundle itself never
carries an operating point: it is written once, by training.

Every input gets exactly one output row. A file that cannot be read or decoded gets a row
with an ``error`` (the reason) and empty predictions, so a clinician's worklist never
loses a study silently; ``--fail-on-bad`` stops at the first such file instead. The
preprocessing spec comes from the bundle, never from the command line, so the model sees
images prepared exactly as in training.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import FailureSection
from medxfer.data.cache.blocks import TASK_RETRIES, map_batches_bounded
from medxfer.data.decode import DEFAULT_MAX_IMAGE_BYTES, SUFFIXES
from medxfer.data.decode.sandbox import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_DECODE_BYTES,
    DecodeLimits,
    oversized_reason,
    preprocess_files,
)
from medxfer.errors import DataError, StorageError

log = logging.getLogger("medxfer.lifecycle.predict")

IMAGE_SUFFIXES = SUFFIXES  # the decoder's formats, and files without a suffix
MANIFEST_SUFFIXES = {".csv", ".jsonl", ".json", ".parquet"}


# ----------------------------------------------------------------------------- inputs


def _suffix(uri: str) -> str:
    return PurePosixPath(storage.basename(uri)).suffix.lower()


def list_inputs(input_uri: str) -> tuple[list[str], list[str]]:
    """``(images, skipped)`` for a folder (recursive) or a manifest with a ``path`` column.

    In a folder, files with an image suffix are inputs, and so are files with no suffix
    (DICOM files often have none); other files (``.txt``, ``.json``...), hidden files and
    symlinks leading outside the folder are skipped and reported, not predicted. A manifest's
    paths are checked as a training manifest's are (:func:`medxfer.data.manifest.image_paths`).
    """
    if _suffix(input_uri) in MANIFEST_SUFFIXES and not storage.is_dir(input_uri):
        from medxfer.data.manifest import image_paths

        return image_paths(input_uri), []
    files = storage.list_files(input_uri)
    if not files:
        raise DataError(f"{input_uri}: no files found; give a folder of images or a manifest (.csv/.parquet)")
    outside = set(storage.links_leaving(input_uri, files))
    images, skipped = [], []
    for f in files:
        name = storage.basename(f)
        suffix = PurePosixPath(name).suffix.lower()
        if f in outside or name.startswith(".") or (suffix and suffix not in IMAGE_SUFFIXES):
            skipped.append(f)
        else:
            images.append(f)
    return images, skipped


# ----------------------------------------------------------------------------- Ray stages


def decode_batch(
    batch: dict, spec: dict, max_pixels: int, fail_on_bad: bool, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> dict:
    """Read (``storage.read_many``, at most ``max_image_bytes`` per file) and preprocess each path in a
    budgeted decode worker (:mod:`medxfer.data.decode.sandbox`); bad files get a zero image and an error.
    A Ray Data task of the Ray engine, a plain call in the local one.

    An error names the kind of problem only, never text from inside the file (the decoder's
    reasons are written that way); this process running out of memory is not the file's fault and
    fails the run.
    """
    from medxfer.config import PreprocessConfig
    from medxfer.data.preprocess import output_shape

    sp = PreprocessConfig.model_validate(spec)
    limits = DecodeLimits(int(max_pixels), int(max_image_bytes), int(max_decode_bytes), float(decode_timeout_s))
    paths = [str(p) for p in batch["path"]]
    images = np.zeros((len(paths), *output_shape(sp)), dtype=np.float32)
    errors = [""] * len(paths)
    items, where = [], []
    for i, (p, blob) in enumerate(zip(paths, storage.read_many(paths, limits.max_image_bytes), strict=True)):
        if isinstance(blob, storage.TooLarge):
            errors[i] = oversized_reason(blob)
        elif isinstance(blob, StorageError):
            errors[i] = str(blob)  # missing or unreadable: a bad file's row
        else:
            items.append((p, blob))
            where.append(i)
    for i, r in zip(where, preprocess_files(items, sp, limits), strict=True):
        if r.reason is not None:
            errors[i] = r.reason
        else:
            images[i] = r.array
    if fail_on_bad:
        bad = next((i for i, e in enumerate(errors) if e), None)
        if bad is not None:
            # DataError (one-argument) pickles cleanly across Ray; the CLI prints it.
            raise DataError(f"{paths[bad]}: {errors[bad]} (stopped because of --fail-on-bad)")
    return {"index": np.asarray(batch["index"]), "path": np.asarray(paths, dtype=object),
            "image": images, "error": np.asarray(errors, dtype=object)}


def score_batch(model, task: str, width: int, batch: dict, batch_size: int, device: str) -> dict:
    """``batch`` (decode_batch's columns) with its ``image`` column replaced by ``scores``: NaN rows for
    the files with an error. The one scoring step of both engines."""
    from medxfer.lifecycle.inference import predict_arrays

    images = batch.pop("image")
    n = len(images)
    ok = np.array([not e for e in batch["error"]], dtype=bool) if "error" in batch else np.ones(n, dtype=bool)
    scores = np.full((n, width), np.nan, dtype=np.float32)
    if ok.any():
        s = predict_arrays(model, images[ok], task, batch_size, device)
        scores[ok] = s.reshape(int(ok.sum()), width)
    batch["scores"] = scores
    return batch


class BundlePredictor:
    """Ray Data actor: one model replica, loaded once from the bundle, scoring ready tensors.

    Rows whose ``error`` is set are passed through with NaN scores. The ``image`` column is
    dropped from the output, so only small rows travel back.
    """

    def __init__(self, bundle_uri: str, batch_size: int = 256):
        import torch

        from medxfer.lifecycle.bundle import load_bundle

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        b = load_bundle(bundle_uri)
        self.task = b.task
        self.width = 1 if b.task == "ordinal" else len(b.classes)
        self.model = b.build_model(self.device)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        return score_batch(self.model, self.task, self.width, batch, self.batch_size, self.device)


# Model replicas are not restarted: Ray Data's default restarts them without limit, and Ray 2.60 cannot
# restart an actor whose constructor arguments live in the object store, as Ray Data's do
# (ray-project/ray#53727; it says so on the command's output for every replica when restarts are
# allowed). Decoding runs in budgeted workers, so no file can kill a replica; a lost node fails the
# prediction, which the same command reruns. Tasks: TASK_RETRIES (medxfer.data.cache.blocks).
ACTOR_RESTARTS = 0

#: Seconds without a batch before the Ray engine says why: ``failure.watchdog_s``'s default.
DEFAULT_WATCHDOG_S = FailureSection.model_fields["watchdog_s"].default


def actor_pool(max_size: int | None = None):
    """``(compute, num_gpus)``: an autoscaling actor pool, one GPU per replica when there are GPUs."""
    import ray

    from medxfer.runtime import cluster_cpus, cluster_gpus

    gpus = int(cluster_gpus())
    if gpus >= 1:
        size = gpus if max_size is None else min(gpus, max_size)
        return ray.data.ActorPoolStrategy(min_size=1, max_size=size), 1
    size = max(1, int(cluster_cpus()) // 2) if max_size is None else max_size
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size), None


def map_bundle(ds, bundle_uri: str, batch_size: int):
    """``ds`` (rows with an ``image`` column) scored by the bundle in an actor pool: adds ``scores``."""
    compute, num_gpus = actor_pool()
    return map_batches_bounded(
        ds,
        BundlePredictor,
        fn_constructor_kwargs={"bundle_uri": bundle_uri, "batch_size": batch_size},
        batch_size=batch_size,
        batch_format="numpy",
        compute=compute,
        num_gpus=num_gpus,
        max_restarts=ACTOR_RESTARTS,
        max_task_retries=0,
    )


# ----------------------------------------------------------------------------- output


def _col(name: str) -> str:
    return "prob_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def predictions_table(df: pd.DataFrame, task: str, classes: list[str], positive_class: str | None = None,
                      decision: dict | None = None) -> pd.DataFrame:
    """Rows of (index, path, scores, error) -> the output table: class, probabilities, decision.

    ``task``, ``classes``, ``positive_class``: the bundle card's; ``decision``: the operating point
    that decides (from :func:`decision_from`), or None for scores without a decision.
    """
    from medxfer.lifecycle.inference import ordinal_to_grade

    classes = list(classes)
    scores = np.stack([np.asarray(s, dtype=np.float64).ravel() for s in df["scores"]]) if len(df) else (
        np.zeros((0, 1)))
    ok = (df["error"].fillna("") == "").to_numpy()
    out = pd.DataFrame({"path": df["path"].astype(str).to_numpy()})
    if task == "multiclass":
        pos_name = decision["positive_class"] if decision else positive_class
        pos = classes.index(pos_name)
        threshold = decision["threshold"] if decision else None
        arg = np.where(ok, np.nan_to_num(scores, nan=-1).argmax(axis=1), -1)
        out["predicted_class"] = [classes[i] if i >= 0 else None for i in arg]
        for j, c in enumerate(classes):
            out[_col(c)] = scores[:, j]
        out["positive_class"] = pos_name
        out["score"] = scores[:, pos]
        out["threshold"] = threshold
        out["threshold_source"] = decision["source"] if decision else None
        out["decision"] = [
            (pos_name if s >= threshold else "not " + pos_name) if o and threshold is not None else None
            for s, o in zip(scores[:, pos], ok, strict=True)
        ]
    elif task == "multilabel":
        for j, c in enumerate(classes):
            out[_col(c)] = scores[:, j]
        out["predicted_class"] = [
            "|".join(c for j, c in enumerate(classes) if row[j] >= 0.5) if o else None
            for row, o in zip(scores, ok, strict=True)
        ]
    else:  # ordinal
        grade = scores[:, 0]
        out["grade"] = grade
        out["predicted_class"] = [
            classes[int(ordinal_to_grade(g, len(classes)))] if o else None
            for g, o in zip(grade, ok, strict=True)
        ]
    out["error"] = df["error"].fillna("").astype(str).to_numpy()
    return out


def _operating_point(op: dict | None, bundle, source: str) -> dict | None:
    """The decision rule of ``op`` for ``bundle``: threshold, positive class, rule, and where it came from."""
    if bundle.task != "multiclass":
        return None  # multilabel and ordinal outputs need no operating point
    if not op or op.get("threshold") is None:
        raise DataError(f"{source} holds no operating point; evaluate the bundle (medxfer evaluate) and give "
                        "that report, or predict without one for scores only")
    if op.get("positive_class") not in bundle.classes:
        raise DataError(f"{source}: positive class {op.get('positive_class')!r} is not one of the bundle's "
                        f"classes {bundle.classes}")
    return {"threshold": float(op["threshold"]), "positive_class": op["positive_class"], "rule": op.get("rule"),
            "chosen_on": op.get("chosen_on"), "source": source}


def decision_from(bundle, report_uri: str | None) -> dict | None:
    """The operating point of ``report_uri`` — an evaluation report of exactly this bundle."""
    if report_uri is None:
        return None
    rep = storage.read_json(report_uri)
    if not isinstance(rep, dict) or rep.get("weights_sha256") != bundle.card.weights_sha256 or (
            rep.get("card_sha256") not in (None, bundle.card_sha256)):
        raise DataError(f"--report {report_uri}: not an evaluation of {bundle.uri} (bundle id "
                        f"{rep.get('bundle_id') if isinstance(rep, dict) else '?'}, not {bundle.id}); give that "
                        "bundle's report.json (medxfer evaluate --bundle ...)")
    return _operating_point(rep.get("operating_point"), bundle, f"report {report_uri}")


def _bundle_and_decision(bundle_uri: str | None, report: str | None, registry_version: str | None,
                         root: str | None):
    """``(bundle, bundle_uri, decision)`` for the sources the user named (at most one decides)."""
    from medxfer.lifecycle.bundle import load_bundle

    if report and registry_version:
        raise DataError("give --report or --registry-version, not both: one operating point decides")
    if registry_version:
        from medxfer.lifecycle.model_registry import resolve_version

        reg, version = resolve_version(root, registry_version)
        record, bundle = reg.get(version), reg.load_bundle(version)
        if bundle_uri is not None:
            given = load_bundle(bundle_uri)
            if (given.card.weights_sha256, given.card.card_sha256) != (record["weights_sha256"], record["card_sha256"]):
                raise DataError(f"--bundle {bundle_uri} is not the bundle of {reg.model} {version}; drop --bundle to "
                                "use the registry's copy")
        source = f"registry {reg.model} {version}"
        return bundle, bundle_uri or bundle.uri, _operating_point(record.get("operating_point"), bundle, source)
    if bundle_uri is None:
        raise DataError("predict: give --bundle URI, or --registry-version MODEL:VERSION")
    bundle = load_bundle(bundle_uri)  # verify before starting any work
    return bundle, bundle_uri, decision_from(bundle, report)


def _write_outputs(out: pd.DataFrame, output_uri: str) -> dict[str, str]:
    """predictions.parquet (the raw values) and predictions.csv (text cells that cannot run as
    spreadsheet formulas: :mod:`medxfer.lifecycle.csv_out`). Names are text: a local file whose name is not
    UTF-8 appears as its ``file://`` URI (:func:`medxfer.storage.text_path`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medxfer.lifecycle.csv_out import frame_to_csv

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(out, preserve_index=False), buf)
    paths = {"parquet": storage.join(output_uri, "predictions.parquet"),
             "csv": storage.join(output_uri, "predictions.csv")}
    storage.write_bytes(paths["parquet"], buf.getvalue())
    storage.write_text(paths["csv"], frame_to_csv(out))
    return paths


# ----------------------------------------------------------------------------- entry points


NO_DECISION = ("no operating point named (--report or --registry-version): scores only; the decision column "
               "is empty and predicted_class is the most probable class, not a decision")


def choose_engine(engine: str, n_inputs: int) -> str:
    """'local' or 'ray' for ``--engine``: 'auto' is local for at most ``data.local_max_images`` inputs
    (the rule, and the number, preprocessing uses), where starting Ray costs more than the work."""
    from medxfer.config import DataConfig

    if engine not in ("auto", "local", "ray"):
        raise DataError(f"--engine {engine!r}: give auto, local or ray")
    if engine != "auto":
        return engine
    return "local" if n_inputs <= DataConfig().local_max_images else "ray"


LOCAL_DECODE_BATCH = 16  # files per decode call of the local engine (as the Ray engine's decode tasks)


def _predict_local(bundle, paths: list[str], batch_size: int, decode_kwargs: dict) -> pd.DataFrame:
    """The Ray engine's two stages in this process: decode_batch on threads (one budgeted decode worker
    each), score_batch on the bundle's model as the batches arrive, in order."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = bundle.build_model(device)
    width = 1 if bundle.task == "ordinal" else len(bundle.classes)
    chunks = [{"index": np.arange(i, min(i + LOCAL_DECODE_BATCH, len(paths))),
               "path": np.asarray(paths[i : i + LOCAL_DECODE_BATCH], dtype=object)}
              for i in range(0, len(paths), LOCAL_DECODE_BATCH)]
    parts = []
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, len(chunks)))) as pool:
        for decoded in pool.map(lambda c: decode_batch(c, **decode_kwargs), chunks):
            scored = score_batch(model, bundle.task, width, decoded, batch_size, device)
            parts.append(pd.DataFrame({"index": scored["index"], "path": scored["path"], "error": scored["error"],
                                       "scores": list(scored["scores"])}))
    return pd.concat(parts, ignore_index=True)


def _predict_ray(bundle_uri: str, paths: list[str], batch_size: int, decode_kwargs: dict,
                 shared: bool = False, watchdog_s: float | None = None) -> pd.DataFrame:
    import ray

    from medxfer.runtime import init_ray, require_shared_storage
    from medxfer.runtime.waiting import watched

    init_ray()
    # Tasks and replicas on any node read the images and the bundle.
    require_shared_storage([bundle_uri, next((p for p in paths if storage.node_local(p)), None)], shared,
                           declare="--storage-shared")
    n = len(paths)
    items = [{"index": i, "path": p} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(n // 8, 512)))
    ds = map_batches_bounded(ds, decode_batch, fn_kwargs=decode_kwargs, batch_size=LOCAL_DECODE_BATCH,
                             batch_format="numpy", max_retries=TASK_RETRIES)
    parts = []
    # A decode task and a model replica each take a CPU (Ray Data's default), or the replica a GPU.
    with watched("predict", n, watchdog_s, need=1.0) as progress:
        for batch in map_bundle(ds, bundle_uri, batch_size).iter_batches(batch_format="pandas", batch_size=None):
            parts.append(batch)
            progress.tick(len(batch))
    return pd.concat(parts, ignore_index=True)


def predict(
    bundle_uri: str | None,
    input_uri: str,
    output_uri: str,
    batch_size: int = 64,
    fail_on_bad: bool = False,
    max_pixels: int | None = None,
    max_image_bytes: int | None = None,
    report: str | None = None,
    registry_version: str | None = None,
    root: str | None = None,
    engine: str = "auto",
    max_decode_bytes: int | None = None,
    decode_timeout_s: float | None = None,
    shared: bool = False,
    watchdog_s: float | None = DEFAULT_WATCHDOG_S,
) -> dict:
    """Predict every image of a folder or manifest; write predictions.parquet/.csv + summary.json.

    ``shared``: local inputs and bundle are mounted on every Ray node (a local folder on a cluster of
    several nodes is refused without it, as ``storage.shared`` does for training).
    ``watchdog_s``: with the Ray engine, each time this many seconds pass without a batch, say why
    (:mod:`medxfer.runtime.waiting`); None: never.

    ``report`` / ``registry_version``: where the operating point comes from (see the module docstring).
    ``engine``: 'local' (this process, no Ray), 'ray' (Ray Data tasks and an actor pool), or 'auto'
    (:func:`choose_engine`); both give the same rows. The limits default to :class:`DataConfig`'s.
    """
    from medxfer.config import DataConfig

    bundle, bundle_uri, decision = _bundle_and_decision(bundle_uri, report, registry_version, root)
    paths, skipped = list_inputs(input_uri)
    if not paths:
        raise DataError(f"{input_uri}: no image files (suffixes {sorted(IMAGE_SUFFIXES)} or none)")
    if skipped:
        log.warning("skipping %d non-image files (e.g. %s)", len(skipped), storage.basename(skipped[0]))
    n = len(paths)
    engine = choose_engine(engine, n)
    defaults = DataConfig()
    decode_kwargs = {
        "spec": bundle.card.preprocess.model_dump(mode="json"),
        "max_pixels": int(max_pixels or defaults.max_pixels),
        "max_image_bytes": int(max_image_bytes or defaults.max_image_bytes),
        "max_decode_bytes": int(max_decode_bytes or defaults.max_decode_bytes),
        "decode_timeout_s": float(decode_timeout_s or defaults.decode_timeout_s),
        "fail_on_bad": fail_on_bad,
    }
    log.info("predicting %d image%s with the %s engine", n, "" if n == 1 else "s", engine)
    if engine == "local":
        rows = _predict_local(bundle, paths, batch_size, decode_kwargs)
    else:
        rows = _predict_ray(bundle_uri, paths, batch_size, decode_kwargs, shared, watchdog_s)
    rows = rows.sort_values("index").reset_index(drop=True)
    if len(rows) != n:  # an invariant: one row per input, whatever happened to the file
        raise DataError(f"prediction returned {len(rows)} rows for {n} inputs")
    out = predictions_table(rows, bundle.card.task, bundle.card.classes, bundle.card.positive_class, decision)
    written = _write_outputs(out, output_uri)
    bad = out[out["error"] != ""]
    summary = {
        "bundle": bundle_uri,
        "bundle_id": bundle.id,
        "input": input_uri,
        "engine": engine,
        "n_inputs": n,
        "n_predicted": int(n - len(bad)),
        "n_errors": int(len(bad)),
        "errors": dict(zip(bad["path"], bad["error"], strict=True)),
        "skipped_non_images": skipped,
        "decision": decision or ({"source": None, "note": NO_DECISION} if bundle.task == "multiclass" else None),
        "outputs": written,
    }
    storage.write_json(storage.join(output_uri, "summary.json"), summary)
    return summary

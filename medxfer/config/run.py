"""Where and how a run executes: workers, restarts, storage (``scaling``, ``failure``, ``storage``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from medxfer.config.base import _Section


class ScalingSection(_Section):
    """How many Ray Train workers and what each gets."""

    num_workers: int = Field(
        1,
        ge=0,
        description="Data-parallel Ray Train workers. 0 trains in the command's own process (Ray Train's local "
        "mode) on cpus_per_worker threads: no Ray cluster or worker group to start, the fastest way to "
        "fine-tune on one machine.",
    )
    use_gpu: Literal["auto"] | bool = Field("auto", description="'auto' uses GPUs when the cluster has them.")
    cpus_per_worker: float = Field(
        1.0,
        gt=0,
        description="CPUs per worker (its torch threads on CPU). Training reads its data in the workers "
        "themselves (no Ray Data), so the workers may take every CPU of a node; preprocessing runs before they start.",
    )
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per worker when using GPUs.")

class FailureSection(_Section):
    max_failures: int = Field(
        2, ge=-1, description="Worker-group restarts from the last checkpoint (-1: unlimited)."
    )
    watchdog_s: float | None = Field(
        180.0,
        gt=0,
        description="When no training step or epoch is heard from the workers for this many seconds, the command "
        "says why: waiting for a placement group the cluster cannot place (the resources asked and those it "
        "has), a node lost and the checkpoint the run will resume from, or busy workers. Likewise when no "
        "batch of preprocess's or predict's Ray Data pipeline arrives: the cluster's CPUs and how many are "
        "free. Repeated every watchdog_s while the silence lasts. None: never.",
    )

class StorageSection(_Section):
    """Where datasets, caches, runs and the registry live."""

    root: str = Field(
        "./medxfer-runs",
        min_length=1,  # '' would put the cache and runs into whatever folder the command runs in
        description="Local folder or s3://bucket/prefix holding datasets/, cache/, runs/, registry/. On a Ray "
        "cluster of several nodes it must be storage every node sees: S3, or a folder mounted at the same path "
        "on every node (say so with shared: true). A relative folder is refused inside a `ray job submit` job, "
        "where it would resolve into the job's temporary working directory.",
    )
    shared: bool = Field(
        False,
        description="The local folders this job names (root, data.manifest and the images) are mounted at the "
        "same path on every Ray node (NFS, a shared volume). Without it, a local root or manifest on a cluster "
        "of more than one node is refused before any work: each node would write its own copy.",
    )

"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` when set, else a local Ray sized to the machine.

Why: the same command must work on a laptop (the embedded default, no cluster needed) and
inside ``ray job submit`` on a cluster, where Ray sets ``RAY_ADDRESS`` for the driver.
"""

from __future__ import annotations

import json
import logging
import os

from medxfer.allocator import glibc_tunables

log = logging.getLogger("medxfer")

_SHAREABLE = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"}


def init_ray(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when already connected.

    Ray Data's prompt start (``start_data_tasks_promptly``) is a setting of this process, not of
    the Ray session, so it applies even when the caller connected Ray itself (a notebook, a
    program embedding medxfer).
    """
    import ray

    start_data_tasks_promptly()
    if ray.is_initialized():
        return
    quiet_ray_logs()
    # Worker and actor output reaches the command only with -v: the lines a person follows come
    # through each run's control channel (medxfer.train.control), not Ray's log forwarding.
    verbose = logging.getLogger("medxfer").isEnabledFor(logging.DEBUG)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Train V2 is the default in Ray 2.60; make it explicit so behaviour does not drift.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Only non-secret settings travel in the runtime env (Ray writes it to its session logs):
    # on a cluster workers get credentials from their own pods (Secret or workload identity),
    # and a local raylet inherits this process's environment, credentials included.
    job_keys = _job_env_var_keys()
    env_vars = {k: v for k, v in os.environ.items()
                if (k in _SHAREABLE or k.startswith("MEDXFER_")) and k not in job_keys}
    # Worker processes keep freed memory instead of faulting it back in every step (see
    # medxfer.allocator); glibc reads this when each worker starts.
    tunables = glibc_tunables()
    if tunables and "GLIBC_TUNABLES" not in job_keys:
        env_vars["GLIBC_TUNABLES"] = tunables
    runtime_env = {"env_vars": env_vars} if env_vars else None
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose, logging_level=logging.WARNING)
        return
    # A Ray started here runs on this one machine, where no cloud provider announces preemptions:
    # Ray Train's preemption watcher would only be one more process polling on the cores that
    # training needs. On a cluster (RAY_ADDRESS set, above) it stays on.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        log_to_driver=verbose,
    )


def _job_env_var_keys() -> set[str]:
    """Variables the submitted job's own runtime env sets (``ray job submit --runtime-env-json``).

    Ray refuses a ``ray.init`` runtime env that names one of them again ("Failed to merge the
    Job's runtime env"). Their values are already in this driver's environment and reach the
    workers through the job's runtime env, so they are left out, not sent twice.
    """
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    from ray.job_config import JobConfig

    injected = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not injected:
        return set()
    runtime_env = JobConfig.from_json(json.loads(injected)).runtime_env or {}
    return set(runtime_env.get("env_vars") or {})


def quiet_ray_logs() -> None:
    """Keep job output to medxfer's own lines: Ray Train and Ray Data log every checkpoint and
    dataset execution at INFO, which buries the one line per epoch a person wants to follow.
    Called on the driver and at the start of each worker function; ``-v`` shows everything."""
    import warnings

    if logging.getLogger("medxfer").isEnabledFor(logging.DEBUG):
        return
    for name in ("ray.train", "ray.data", "ray.util", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Said once per cluster start: the local cluster keeps token authentication on (other users of
    # the host cannot submit work to it), which needs no action from the person running medxfer.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    for module in ("ray", "ray.data", "ray.train"):
        warnings.filterwarnings("ignore", module=rf"{module}(\..*)?$")
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.print_on_execution_start = False
        ctx.enable_progress_bars = _attached_to_terminal()
        # Ray Data's "Operator ... uses 615 MiB of memory per worker ... consider setting memory=" advice:
        # medxfer bounds a task's memory itself (data.max_image_bytes, blocks read a few files at a time),
        # so the advice is noise in preprocess's and predict's output.
        ctx.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


# How often (seconds) Ray Data re-reads how many CPUs it may use; Ray 2.60's default is 1 s.
DATA_LIMITS_REFRESH_S = 0.1


def start_data_tasks_promptly() -> None:
    """Let a Ray Data execution (preprocessing, scoring, prediction) use every CPU from its start.

    Why: Ray Data learns the CPUs it may use from its autoscaling coordinator, an actor it asks
    without waiting, and re-reads the answer once a second. Its first read finds no answer yet,
    so for the first second of every execution the limit is zero and Ray Data's liveness rule
    lets only one task run: on 2 CPUs, one core idle for a second. On benchmark 1's 600 images
    that was ~10 % of the run (63.9 against 70.5 images/s, 5 interleaved pairs). Reading every
    0.1 s, the interval at which Ray Data's scheduler already polls its tasks, starts the second
    task 0.1-0.2 s after the first instead of ~1 s; each read is one small, non-blocking actor
    call. The interval is a class attribute of Ray Data's resource manager, not a public
    setting: if a Ray release renames it, this does nothing and Ray's default holds.
    """
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:  # pragma: no cover - Ray Data's internals moved
        return
    current = getattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", None)
    if isinstance(current, (int, float)) and current > DATA_LIMITS_REFRESH_S:
        ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = DATA_LIMITS_REFRESH_S


def _attached_to_terminal() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def machine_memory() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def worker_memory(scaling, use_gpu: bool) -> float | None:
    """Bytes of memory one Ray Train worker can count on: on the smallest node that can hold a
    worker, Ray's ``memory`` resource (what Ray lets tasks and actors reserve there) shared by the
    workers that node holds; this machine's memory for a run in this process. None when no node
    can hold a worker (the watchdog names that case).

    Workers are packed onto as few nodes as fit (Ray Train's default), so a node holds as many as
    its CPUs (and GPUs) allow, at most ``num_workers``."""
    if scaling.num_workers == 0:
        return float(machine_memory())
    import ray

    shares = []
    for node in ray.nodes():
        res = node.get("Resources") or {}
        if not node.get("Alive") or not res.get("memory"):
            continue
        fits = res.get("CPU", 0.0) // scaling.cpus_per_worker
        if use_gpu:
            fits = min(fits, res.get("GPU", 0.0) // scaling.gpus_per_worker)
        if fits >= 1:
            shares.append(res["memory"] / min(fits, scaling.num_workers))
    return min(shares) if shares else None

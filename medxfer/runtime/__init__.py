"""Connecting to Ray: the cluster in ``RAY_ADDRESS`` when set, else a local Ray sized to the machine.

Why: the same command must work on a laptop (the embedded default, no cluster needed) and
inside ``ray job submit`` on a cluster, where Ray sets ``RAY_ADDRESS`` for the driver.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager

from medxfer.errors import ClusterError
from medxfer.runtime.allocator import glibc_tunables
from medxfer.runtime.ray_errors import route_ray_errors

log = logging.getLogger("medxfer")

_SHAREABLE = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"}
#: Whether :func:`init_ray` started a Ray of this command's own on this machine (it cannot grow).
_OWN_RAY = False


def init_ray(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when already connected.

    Ray Data's prompt start (``start_data_tasks_promptly``) is a setting of this process, not of
    the Ray session, so it applies even when the caller connected Ray itself (a notebook, a
    program embedding medxfer).
    """
    import ray

    start_data_tasks_promptly()
    if not logging.getLogger("medxfer").isEnabledFor(logging.DEBUG):
        route_ray_errors()  # a lost node is one line in medxfer's words, not Ray's 50
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
    # medxfer.runtime.allocator); glibc reads this when each worker starts.
    tunables = glibc_tunables()
    if tunables and "GLIBC_TUNABLES" not in job_keys:
        env_vars["GLIBC_TUNABLES"] = tunables
    runtime_env = {"env_vars": env_vars} if env_vars else None
    address = os.environ.get("RAY_ADDRESS")
    if address:
        if not job_keys and not _submitted_job():
            check_cluster(address)  # typed by hand: say what is wrong in seconds, not after Ray's retries
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose, logging_level=logging.WARNING)
        except ConnectionError as e:
            raise ClusterError(_connection_failed(address, e)) from None
        return
    # A Ray started here runs on this one machine, where no cloud provider announces preemptions:
    # Ray Train's preemption watcher would only be one more process polling on the cores that
    # training needs. On a cluster (RAY_ADDRESS set, above) it stays on.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # "local": a Ray of this command's own, even when someone ran `ray start` on this host (ray.init()
    # would join that cluster, and refuse num_cpus there): RAY_ADDRESS is how a cluster is chosen.
    global _OWN_RAY
    _OWN_RAY = True
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        log_to_driver=verbose,
    )


def _submitted_job() -> bool:
    """Whether this process is the driver of a ``ray job submit`` job (Ray sets its job config)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    return bool(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR))


_GCS_ADDRESS = re.compile(r"[\w.\-]+:\d+")


def check_cluster(address: str) -> None:
    """Ask the cluster at ``address`` who it is, once, before ``ray.init`` joins it.

    Why: ``ray.init`` retries an address that refuses it for about 25 s, printing one C++ warning a
    second, and ends in "Failed to connect to Ray cluster at ...", the cause (the cluster wants a
    token; nothing answers) buried in a chained traceback. One standalone GCS client call says which
    in ~2 s (measured here against a head with token authentication), and the message names the
    address and the fix. Only plain ``host:port`` addresses are checked; ``auto`` and ``ray://`` are
    left to Ray, and so is everything if Ray's client class moves (it is not public API).
    """
    if not _GCS_ADDRESS.fullmatch(address.strip()):
        return
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError, RpcError
    except ImportError:  # pragma: no cover - Ray's internals moved: ray.init speaks for itself
        return
    with _native_stderr_quiet():
        try:
            GcsClient(address=address.strip())
        except AuthenticationError:
            raise ClusterError(_token_refused(address)) from None
        except RpcError:
            raise ClusterError(_no_answer(address)) from None
        except Exception:  # noqa: BLE001 - anything else: ray.init tries and explains
            return


def _token_refused(address: str) -> str:
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (f"the Ray cluster at {address} (RAY_ADDRESS) uses token authentication and this command sent no "
                "token: export RAY_AUTH_MODE=token and give it the cluster's token (in ~/.ray/auth_token, the file "
                "named by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN; on Kubernetes, the medxfer-ray-token Secret)")
    return (f"the Ray cluster at {address} (RAY_ADDRESS) refused the token this command sent (from RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): give it the cluster's own token")


def _no_answer(address: str) -> str:
    return (f"no Ray cluster answers at {address} (RAY_ADDRESS): check the address (the head's GCS port, 6379 by "
            "default), that the head is running and that this machine can reach it; or unset RAY_ADDRESS to run "
            "on a Ray started here")


def _connection_failed(address: str, e: BaseException) -> str:
    """``ray.init``'s ConnectionError, with the cause it chains (a refused token, a timeout) named."""
    causes, cur = [], e
    while cur is not None and len(causes) < 10:
        causes.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    text = "\n".join(causes)
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        return _token_refused(address)
    return _no_answer(address)


@contextmanager
def _native_stderr_quiet():
    """Silence Ray's C++ warnings (written straight to file descriptor 2) for a moment, unless ``-v``."""
    import sys

    if logging.getLogger("medxfer").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


def require_shared_storage(uris: list[str | None], shared: bool, declare: str = "storage.shared: true") -> None:
    """Refuse local folders on a Ray cluster of more than one node, unless ``storage.shared`` says
    every node mounts them. Call once Ray is up.

    Why before any work: each node would read and write its own disk. Cache shards written by a Ray
    Data task on another node, and checkpoints uploaded by a worker there, land on that node; the
    run then fails three worker-group attempts later with "not a complete medxfer cache", or
    resumes from nothing. On one host (a laptop, a single-node cluster) local folders are fine. A
    cluster that autoscales from its head alone counts one node when this runs: use S3 there.
    """
    import ray

    from medxfer import storage

    local = [u for u in dict.fromkeys(uris) if u and storage.node_local(u)]
    if shared or not local:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    hosts = sorted({str(n.get("NodeManagerAddress")) for n in nodes})
    raise ClusterError(
        f"{', '.join(local)}: a local folder, and the Ray cluster has {len(nodes)} nodes (on {', '.join(hosts)}): "
        "each node would read and write its own disk, so cache shards and checkpoints written on one are missing "
        "on the others. Use storage every node sees: storage.root: s3://<bucket>/<prefix> (and the data there), "
        f"or a folder mounted at the same path on every node, declared with {declare}")


def require_placeable(scaling, use_gpu: bool) -> None:
    """Refuse (exit 2) a worker group that the Ray this command started on this machine can never place.

    That Ray has this machine's CPUs and GPUs and no more: Ray Train would wait for the workers'
    placement group forever (the shipped jobs' 2 workers of 2 CPUs and a GPU, run as they are on a
    2-core laptop). A cluster named by ``RAY_ADDRESS`` may grow (an autoscaler, a node that returns),
    so there the run waits and the watchdog says what it waits for."""
    if not _OWN_RAY or scaling.num_workers == 0:
        return
    import ray

    room, cpus, gpus = 0, 0.0, 0.0
    for node in ray.nodes():
        res = node.get("Resources") or {}
        if not node.get("Alive"):
            continue
        cpus, gpus = cpus + res.get("CPU", 0.0), gpus + res.get("GPU", 0.0)
        fits = res.get("CPU", 0.0) // scaling.cpus_per_worker
        if use_gpu:
            fits = min(fits, res.get("GPU", 0.0) // scaling.gpus_per_worker)
        room += int(fits)
    if room >= scaling.num_workers:
        return
    asked = f"{scaling.cpus_per_worker:g} CPU" + (f" and {scaling.gpus_per_worker:g} GPU" if use_gpu else "")
    fixes = ["Lower scaling.num_workers or scaling.cpus_per_worker"]
    if use_gpu and gpus < scaling.gpus_per_worker:
        fixes.append("set scaling.use_gpu: auto (GPUs when there are some)")
    raise ClusterError(
        f"scaling: {scaling.num_workers} worker(s) of {asked} each, and the Ray this command started on this "
        f"machine has {cpus:g} CPU and {gpus:g} GPU: room for {room}, so training could never start. "
        f"{'; '.join(fixes)}, or run on a Ray cluster that has them (RAY_ADDRESS)")


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

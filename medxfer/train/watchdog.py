"""Why a run is silent: the command's explanation when no step or epoch has come for a while.

A Ray Train run can wait without a word: for a placement group the cluster cannot place (more
workers or CPUs than it has), for a node that was lost and has not come back, or on workers that
are busy but report nothing. The command notices the silence (:class:`medxfer.train.control.Monitor`
counts the workers' heartbeats) and prints what it sees, in medxfer's words: the resources asked
and those the cluster has, the node that went and the checkpoint the run will resume from.

:func:`explain` is pure (tested without Ray); :func:`observe` reads Ray's view of the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    alive: bool
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Cluster:
    """What Ray says about the cluster right now."""

    nodes: tuple[Node, ...]
    available: dict = field(default_factory=dict)  # resources free now
    pending: int = 0  # this job's placement groups waiting to be placed

    @property
    def alive(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.alive)

    def total(self, resource: str) -> float:
        return sum(n.cpus if resource == "CPU" else n.gpus for n in self.alive)


@dataclass(frozen=True)
class Silence:
    """The run as the command knows it when it went silent."""

    name: str
    idle_s: float
    workers: int
    per_worker: dict  # {"CPU": 2.0, "GPU": 1.0}
    state: str | None  # Ray Train controller state (RUNNING, SCHEDULING, RESTARTING, ...), when known
    state_s: float  # seconds in that state
    lost: tuple[Node, ...] = ()  # nodes that were alive when the current worker group started and are not now
    epoch: int | None = None  # the last epoch the command printed
    checkpoint_epoch: int | None = None  # the run's newest checkpoint


def _res(d: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in d.items() if v)


def _ago(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


def explain(run: Silence, cluster: Cluster) -> str:
    """One message saying why ``run`` has been silent, in the terms a person can act on."""
    ask = f"{run.workers} worker(s) of {_res(run.per_worker)}"
    have = (f"{cluster.total('CPU'):g} CPU" + (f", {cluster.total('GPU'):g} GPU" if cluster.total("GPU") else "")
            + f" on {len(cluster.alive)} live node(s), {cluster.available.get('CPU', 0.0):g} CPU free")
    resume = (f"from its checkpoint of epoch {run.checkpoint_epoch}" if run.checkpoint_epoch
              else "from the start (no checkpoint yet)")
    head = f"{run.name}: no step or epoch for {_ago(run.idle_s)}"
    if run.lost:
        gone = "; ".join(f"node {n.address} (id {n.node_id[:8]}, {n.cpus:g} CPU{f', {n.gpus:g} GPU' if n.gpus else ''})"
                         for n in run.lost)
        at = f" during epoch {run.epoch + 1}" if run.epoch is not None else ""
        if cluster.pending:
            return (f"{head}: {gone} lost{at}. Ray Train is waiting for {ask}; the cluster has {have}. The run will "
                    f"resume {resume} when resources return (add a node), or stop it and run the same command later.")
        return (f"{head}: {gone} lost{at}. The cluster has {have} again and a new worker group is starting; it "
                f"resumes {resume}.")
    if cluster.pending:
        fits = [n for n in cluster.alive if n.cpus >= run.per_worker.get("CPU", 0)
                and n.gpus >= run.per_worker.get("GPU", 0)]
        why = ("no node can hold even one worker" if not fits
               else f"{len(fits)} node(s) can hold a worker, not all {run.workers} at once")
        waited = f" {_ago(run.state_s)}" if run.state in ("SCHEDULING", "RESCHEDULING") else ""
        return (f"{head}: waiting{waited} for {ask} (a placement group Ray cannot place yet: {why}); the "
                f"cluster has {have}. Add nodes, or lower scaling.num_workers or scaling.cpus_per_worker"
                + ("/gpus_per_worker" if run.per_worker.get("GPU") else "") + ".")
    if run.state not in (None, "RUNNING"):
        return (f"{head}: the worker group's resources are placed and its {run.workers} worker(s) are starting "
                f"({run.state.lower()}: importing, reading the data); the cluster has {have}.")
    return (f"{head}, while the worker group is running; the cluster has {have}. The workers may still be reading "
            f"the data or be stuck: `py-spy dump --pid <pid of ray::RayTrainWorker>` shows where.")


def observe(job_id: str | None) -> Cluster:
    """The cluster as Ray sees it: nodes (alive or not), free resources, this job's unplaced placement groups."""
    import ray

    nodes = tuple(
        Node(n.get("NodeID", ""), n.get("NodeManagerAddress", "?"), bool(n.get("Alive")),
             float((n.get("Resources") or {}).get("CPU", 0.0)), float((n.get("Resources") or {}).get("GPU", 0.0)))
        for n in ray.nodes()
    )
    pending = 0
    try:
        for pg_id, pg in ray.util.placement_group_table().items():
            # A placement group's id ends with the id of the job that made it (the run's controller is ours).
            if pg.get("state") in ("PENDING", "RESCHEDULING") and (job_id is None or pg_id.endswith(job_id)):
                pending += 1
    except Exception:  # noqa: BLE001 - the explanation is best effort
        pass
    return Cluster(nodes, dict(ray.available_resources()), pending)


def lost_since(start: tuple[Node, ...], now: Cluster) -> tuple[Node, ...]:
    """Nodes alive at ``start`` that are no longer alive."""
    alive = {n.node_id for n in now.alive}
    return tuple(n for n in start if n.alive and n.node_id not in alive)

"""A real Ray cluster of several nodes on this host, in a process of its own.

``ray.cluster_utils.Cluster`` starts a head and more raylets on this machine, each a node as Ray
sees it (its own resources, object store and worker processes). It runs in a child process so
that it never meets the test session's own Ray (fixture ``ray_cluster``); commands under test join
it through ``RAY_ADDRESS``, as they would join a real cluster. Closing the child's stdin stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SCRIPT = """
import sys
from ray.cluster_utils import Cluster

nodes, cpus = int(sys.argv[1]), float(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
for _ in range(nodes - 1):
    cluster.add_node(num_cpus=cpus)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def env_without_ray() -> dict:
    """This process's environment minus ``RAY_*``: a child that must not join the session's Ray."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


@contextmanager
def ray_nodes(nodes: int = 2, cpus: float = 2) -> Iterator[str]:
    """Start ``nodes`` Ray nodes of ``cpus`` CPUs each; yields the address to put in ``RAY_ADDRESS``."""
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(nodes), str(cpus)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env_without_ray(), text=True)
    try:
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the {nodes}-node Ray cluster did not start (exit {proc.wait(timeout=60)})")
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

"""Ray's cluster error messages in medxfer's words.

Ray's driver prints every error message the cluster publishes straight to stdout, whatever the
logging settings: when a node dies, the notice that it was "marked dead", the last 20 lines of its
raylet's log (``[state-dump]`` counters) and one line per task retried — some 50 lines for one lost
node in the middle of ``medxfer preprocess``, which had itself nothing to do (Ray Data retried the
tasks on the other nodes and the cache was complete). A person needs one line: which node, and what
happens to the work. So, unless ``-v`` asks for Ray's own output, :func:`route_ray_errors` sends
each message through :func:`say` instead: a node's death is one warning naming it, a task retried
is a debug line, and any other message is a warning with Ray's text (those are rare, and may matter).

This replaces ``ray._private.worker.print_to_stdstream``, the function Ray's error listener thread
calls; it is private to Ray, so a Ray without it leaves Ray's printing as it is (cosmetic only), and
``tests/runtime/test_ray_errors.py`` checks the name still exists.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("medxfer.ray")

_DEAD = re.compile(r"node id: (?P<id>[0-9a-f]+) and address: (?P<addr>\S+)(?: and node name: \S+)? has been marked dead")
_RAYLET_GONE = re.compile(r"^Raylet is terminated")
_RETRY = re.compile(r"^Task (?P<task>\S+) failed\. There are (?P<n>\d+) retries remaining")
_WORKER_STARTUP = re.compile(r"PYTHON worker processes have been started on node")

_seen_dead: set[str] = set()


def say(message: str) -> None:
    """Log one of Ray's published error messages the way a medxfer command speaks."""
    text = message.strip()
    if m := _DEAD.search(text):
        if m["id"] not in _seen_dead:
            _seen_dead.add(m["id"])
            log.warning("Ray node %s (id %s) died: Ray runs the work that was placed there again on the nodes "
                        "that are left (-v shows Ray's message)", m["addr"], m["id"][:8])
        log.debug("%s", text)
    elif _RAYLET_GONE.search(text) or _WORKER_STARTUP.search(text):
        log.debug("%s", text)  # a dead node's log dump; Ray's note on how many workers a node started
    elif m := _RETRY.search(text):
        log.debug("Ray retries task %s (%s retries left): %s", m["task"], m["n"], text)
    else:
        log.warning("Ray: %s", text)


def route_ray_errors() -> None:
    """Route the cluster error messages Ray prints on this driver through :func:`say`. Idempotent."""
    try:
        import ray._private.worker as worker
    except ImportError:
        return
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "medxfer_routed", False):
        return

    def routed(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":  # worker and actor output (shown with -v): Ray's own printing
            return original(data, ignore_prefix)
        for line in data.get("lines", ()):
            say(line)

    routed.medxfer_routed = True
    worker.print_to_stdstream = routed

"""Write the pins (constraints/image.txt) that the image and the tests both install, from this environment.

Why: the Dockerfile installs medxfer's dependencies with ``-c constraints/image.txt`` so an
image built next month runs the versions this environment was tested with, not whatever
PyPI resolves that day, and ``make install`` installs the tests' environment with the same
file, so the versions the tests pass with are the versions the image runs (a test compares them). The pins are medxfer's runtime dependencies (pyproject.toml's
``dependencies``, with the extras they name) and everything they need, as installed here,
plus the build backend. Dev tools are left out. The CUDA wheels (``nvidia-*``, ``cuda-*``,
``triton``) are left out too: the torch build for the base image's CUDA pins its own, and
local version labels (``+cu130``) are dropped so ``torch==X`` matches the cu128 build.

    .venv/bin/python constraints/freeze_image.py > constraints/image.txt   (make image-constraints)
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

CUDA_STACK = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
BUILD_BACKEND = ("setuptools",)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str) -> dict[str, str]:
    """Installed name -> version for ``root``'s non-dev requirements and everything below them."""
    todo = [(root, frozenset())]
    seen: dict[str, str] = {}
    walked: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (_norm(name), extras) in walked:
            continue
        walked.add((_norm(name), extras))
        dist = metadata.distribution(name)
        seen[_norm(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((req.name, frozenset(req.extras)))
    seen.pop(_norm(root))
    return seen


def main() -> int:
    pins = runtime_closure("medxfer")
    for name in BUILD_BACKEND:
        pins[name] = metadata.version(name)
    print("# The image's pins: `make image-constraints` writes this file from the tested environment")
    print("# (constraints/freeze_image.py says what is in it). Do not edit by hand.")
    for name in sorted(pins):
        if not CUDA_STACK.match(name):
            print(f"{name}=={pins[name].split('+', 1)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

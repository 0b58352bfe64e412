"""The image the pods run: built from a pinned Ray base as a non-root user, every dependency
pinned and installed before the code, so a code change rebuilds only the last layer."""

from __future__ import annotations

import re

import pytest
from k8sutil import REPO
from packaging.requirements import Requirement

from medxfer.k8s.names import RAY_VERSION

CONSTRAINTS = REPO / "constraints" / "image.txt"


def _dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, each on one line (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [" ".join(ln.split()) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerfile_and_dockerignore():
    docker = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", docker, re.M)
    assert base and re.search(r"^FROM \$\{BASE_IMAGE\}", docker, re.M), "the base image is an ARG a digest can pin"
    assert f"rayproject/ray:{RAY_VERSION}-py311-cu" in base.group(1), base.group(1)
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users and users[-1] == "ray", "the image must end as the non-root ray user"
    for line in re.findall(r"pip install[^\n]*", docker):
        assert "--no-cache-dir" in line, line
    assert not re.search(r"^(ENV|ARG)\s+\S*(SECRET|TOKEN|PASSWORD|ACCESS_KEY)", docker, re.M | re.I)
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for needed in (".venv", ".git", "medxfer-runs", "medxfer-demo", "data", "runs", "benchmarks/work"):
        assert any(i.strip("*/") == needed for i in ignored), f".dockerignore must exclude {needed}"


def test_image_pins_every_dependency_and_installs_them_before_the_code():
    """A rebuild gets the versions the tests ran with, and a code change rebuilds only the last layer."""
    lines = _dockerfile_instructions()
    for line in lines:
        if "pip install" in line:
            pinned = re.search(r" -c \S+", line) or "--no-deps" in line or re.search(r"grep \S+ '\^\(torch", line)
            assert pinned, f"unpinned install: {line}"
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9_.!+-]+", version), f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    assert "torch" in pins and "torchvision" in pins and "ray" in pins
    assert not [n for n in pins if n.startswith("nvidia-")], "CUDA wheels come with the torch build for the base image"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, project["dependencies"]):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{dep.name} is not pinned in {CONSTRAINTS.name}"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {dep}"

    def first(pattern: str) -> int:
        return next(i for i, ln in enumerate(lines) if re.search(pattern, ln))

    code = first(r"^COPY .*\bmedxfer /tmp/")
    assert first(r"^COPY .*constraints/image\.txt") < first(r"^RUN pip install .*(torch|torchvision)") < code
    assert first(r"^COPY .*pyproject\.toml") < first(r"pip install .*-c \S+ -r ") < code
    assert re.search(r"pip install .*--no-deps", "\n".join(lines[code:])), "the code installs without dependencies"
    steps = (REPO / "docs" / "cluster.md").read_text()
    assert re.search(r"rayproject/ray:\S+@sha256:", steps), "the release steps pin the base image by digest"
    assert "git rev-parse" in steps, "each build gets its own tag"


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def test_the_tests_run_the_versions_the_image_pins():
    """One set of pins for the image and the tests: ``make install`` installs with ``-c
    constraints/image.txt``, and here every runtime dependency the tests import is the version the
    image installs. A pin left behind after an upgrade (or a venv older than the pins) fails, naming
    the package, both versions and the make target that fixes each side."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("freeze_image", REPO / "constraints" / "freeze_image.py")
    freeze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(freeze)
    installed = {name: version.split("+", 1)[0] for name, version in freeze.runtime_closure("medxfer").items()
                 if not freeze.CUDA_STACK.match(name)}
    pins = _pins()
    drift = sorted(f"{name}: pinned {pins.get(name, '(not pinned)')}, tests run {version}"
                   for name, version in installed.items() if pins.get(name) != version)
    stale = sorted(set(pins) - set(installed) - set(freeze.BUILD_BACKEND))
    assert not drift and not stale, (
        "constraints/image.txt and the tested environment differ:\n  " + "\n  ".join(
            drift + [f"{n}: pinned but no longer a dependency" for n in stale])
        + "\n`make install` installs the pins; `make image-constraints` re-pins after a dependency change")
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install -c constraints/image\.txt -e '\.\[dev\]'", makefile), \
        "make install must install the image's pins"

"""The objects ``medxfer k8s render --kind`` can build, registered by the module that builds each.

Why a registry filled by the object modules: a new Kubernetes object is one module — its builder
decorated with :func:`kind` — plus its test; nothing else names it. :func:`builders` imports every
module of this package once, so each registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

#: ``(cfg, stage, image, config_file, overrides) -> object``, by ``--kind``.
Builder = Callable[..., dict]
_BUILDERS: dict[str, Builder] = {}


def kind(name: str) -> Callable[[Builder], Builder]:
    """Register the decorated function as the builder of ``--kind name``."""

    def register(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn

    return register


def builders() -> dict[str, Builder]:
    """Every registered builder (the package's modules imported first, so each has registered)."""
    import medxfer.k8s as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(sorted(_BUILDERS.items()))

"""Where each kind of thing lives under one storage root."""

from __future__ import annotations

from medxfer.storage.uri import join, normalize


class Layout:
    """The storage layout under one root: datasets/, cache/, runs/, registry/."""

    def __init__(self, root: str):
        self.root = normalize(root)

    def dataset(self, name: str) -> str:
        return join(self.root, "datasets", name)

    def cache(self, key: str = "") -> str:
        return join(self.root, "cache", key) if key else join(self.root, "cache")

    def runs(self) -> str:
        return join(self.root, "runs")

    def run(self, name: str) -> str:
        return join(self.root, "runs", name)

    def registry(self, model_name: str = "") -> str:
        return join(self.root, "registry", model_name) if model_name else join(self.root, "registry")

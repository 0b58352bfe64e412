"""What an importer recorded beside a manifest (``import.json``): the class order and the positive class.

Why beside the manifest rather than in it: a manifest is a plain table anyone can write, and one
written by hand has no record, so everything here is a default that ``data.classes`` and
``data.positive_class`` override. ``medxfer import medmnist`` records MedMNIST's class order, so
that output *i* of a model is MedMNIST's class *i* whether the labels are published names
(whose alphabetical order differs for PathMNIST, DermaMNIST or ChestMNIST) or indices, and a
binary set's finding as its positive class; ``import folder --positive-class`` records the class
the user named.
"""

from __future__ import annotations

from collections.abc import Sequence

from medxfer import storage

RECORD = "import.json"


def record_uri(manifest: str) -> str:
    return storage.join(storage.parent(storage.normalize(manifest)), RECORD)


def import_record(manifest: str | None) -> dict:
    """The ``import.json`` beside ``manifest``, or ``{}`` where there is none (a manifest written by hand)."""
    if not manifest:
        return {}
    uri = record_uri(manifest)
    if not storage.exists(uri):
        return {}
    record = storage.read_json(uri)
    return record if isinstance(record, dict) else {}


def recorded_order(manifest: str | None) -> list[str] | None:
    """The class order the import recorded, if it recorded one."""
    classes = import_record(manifest).get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) else None


def in_recorded_order(found: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """``found`` (the classes a manifest holds) in the recorded ``order``; classes the record does not
    list follow, in the order found. Only reorders: a class is never added or dropped here."""
    if not order:
        return list(found)
    rank = {c: i for i, c in enumerate(order)}
    return sorted(found, key=lambda c: (c not in rank, rank.get(c, 0)))

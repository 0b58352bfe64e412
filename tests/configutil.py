"""Walking the job config's JSON schema: every settable field, with the branches of its type."""

from __future__ import annotations


def resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def leaves(schema: dict, node: dict | None = None, path: tuple = ()):
    """(path, property schema) for every settable field; nested sections are walked into."""
    node = resolve(schema, schema if node is None else node)
    for name, prop in node.get("properties", {}).items():
        sub = resolve(schema, prop)
        if sub.get("type") == "object" and "properties" in sub:
            yield from leaves(schema, sub, (*path, name))
        else:
            yield (*path, name), prop


def branches(schema: dict, prop: dict) -> list[dict]:
    return [resolve(schema, b) for b in prop.get("anyOf", [prop])]


def nest(path: tuple, value) -> dict:
    """``{"a": {"b": value}}`` for the path ``("a", "b")``."""
    out = value
    for p in reversed(path):
        out = {p: out}
    return out

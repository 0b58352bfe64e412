"""Errors medxfer raises on purpose. The CLI prints them as messages, not tracebacks.

Each names the thing that is wrong and, where there is one, the fix. ``exit_code``
follows the CLI convention: 2 for bad input a user can correct, 1 for everything else.
"""

from __future__ import annotations


class MedxferError(Exception):
    """Base of all expected failures; the CLI prints ``str(e)`` and exits ``exit_code``."""

    exit_code = 1


class ConfigError(MedxferError):
    """An invalid job config. ``problems`` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(MedxferError):
    """A storage operation failed; the message names the URI and the cause."""


class DataError(MedxferError):
    """Bad input data: a manifest, a label, an image. The message says which and how to fix it."""

    exit_code = 2


class ImageDecodeError(DataError):
    """One image could not be decoded; ``path`` and ``reason`` go into skip lists and reports."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ClusterError(MedxferError):
    """The Ray cluster named by ``RAY_ADDRESS`` cannot be used as it is: no answer, a token it wants and
    was not given, or storage its nodes cannot all see. The message names the address and the fix."""

    exit_code = 2


class BundleError(MedxferError):
    """A model bundle is missing, incomplete, invalid or fails its integrity check (the URI given is wrong)."""

    exit_code = 2


class RegistryError(MedxferError):
    """A registry operation could not be completed (e.g. lost a promotion race)."""


def find_medxfer_error(e: BaseException) -> MedxferError | None:
    """The :class:`MedxferError` inside ``e``'s causes, if any: Ray wraps errors raised in workers,
    and the message a person needs is ours, not the wrapper's."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MedxferError):
            return cur
        inner = getattr(cur, "cause", None)
        if isinstance(inner, BaseException):
            found = find_medxfer_error(inner)
            if found:
                return found
        cur = cur.__cause__ or cur.__context__
    return None

"""One error hierarchy for samflow: every error a user can act on derives from SamflowError."""

from __future__ import annotations

import difflib


class SamflowError(Exception):
    """Base class of every error samflow raises on purpose."""


class CheckpointError(SamflowError):
    """A weights file is missing, unreadable, or does not fit the model it is loaded into."""


class InputError(SamflowError, ValueError):
    """An argument (image, prompt, shape) is not what was expected. Also a ValueError, as the official code raises."""


class GraphError(SamflowError):
    """A graph is invalid (unknown node type, bad wiring, bad params...)."""


class NodeError(SamflowError):
    """A node failed while running on an item."""


def nearest(name: str, choices: list[str] | set[str] | dict, limit: int = 3) -> list[str]:
    """The closest names among `choices` (for 'did you mean' hints)."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=limit, cutoff=0.5)
    if not found and "." in name:
        # 'decoder' alone is a good hint for 'sam.decoder' even when the family is wrong.
        tail = name.split(".")[-1]
        found = [c for c in choices if c.split(".")[-1].split("@")[0] == tail][:limit]
    return found

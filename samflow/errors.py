"""One error hierarchy for samflow: every error a user can act on derives from SamflowError."""

from __future__ import annotations


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

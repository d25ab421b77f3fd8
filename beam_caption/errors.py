"""Errors whose message is safe to show a user: they never carry an API key."""

from __future__ import annotations


class BeamCaptionError(Exception):
    """Base class; the message is meant for the user and carries no secret."""


class ConfigError(BeamCaptionError):
    """A bad flag, file or combination of options; the CLI prints it on one line and exits 2."""


class RunAborted(BeamCaptionError):
    """The run stopped early on a terminal error (bad key, no quota, a request no image passes)."""

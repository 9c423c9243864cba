"""Every exception class adbench raises on purpose, in one place.

Each message names the file, parameter or flag, what it got, what it expected and what to
do; the command line prints it without a traceback and exits 2 (see ``adbench.cli``).

=====================  ==================================================================
:class:`ConfigError`      an invalid configuration key or value (``--set``, ``--config``)
:class:`DataError`        bad input data: the file or subject and the problem
:class:`PluginError`      a broken plugin, or two plugins providing one name
:class:`UnknownNameError` an unknown method, dataset or preset name (lists the valid ones)
:class:`NotFittedError`   a detector used before ``fit`` or ``load_state_dict``
:class:`WeightsError`     pretrained weights missing, unreadable or of the wrong layout
:class:`RunDirError`      a run folder missing a file or holding an unreadable one
:class:`CheckpointError`  a training checkpoint written with other settings
=====================  ==================================================================
"""
from __future__ import annotations

__all__ = ["ConfigError", "DataError", "PluginError", "UnknownNameError", "NotFittedError",
           "WeightsError", "RunDirError", "CheckpointError"]


class ConfigError(ValueError):
    """An invalid configuration key or value; the message names it and the valid choices."""


class DataError(ValueError):
    """Bad input data. The message names the file (or subject) and the problem."""


class PluginError(RuntimeError):
    """A plugin is broken or two plugins clash."""


class UnknownNameError(KeyError):
    """An unknown method, dataset or preset name. ``str()`` lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class NotFittedError(RuntimeError):
    """A detector was asked for maps or state before it was fitted or loaded."""


class WeightsError(FileNotFoundError):
    """Backbone weights are missing, unreadable or of the wrong layout."""


class RunDirError(FileNotFoundError):
    """A run folder is missing a file or holds an unreadable one (the message names it)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (other settings or seed); the message names
    the file and the keys."""

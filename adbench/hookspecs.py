"""Hook specifications: the whole plugin contract of adbench.

A plugin is a module (or object) with functions marked ``@adbench.hookimpl`` and is made
known through the setuptools entry-point group ``adbench``::

    [project.entry-points.adbench]
    myplugin = "my_package.plugin"

The built-in methods and datasets are registered through exactly the same entry points.
An implementation may accept fewer arguments than its specification (pluggy's rule), so
specifications can grow without breaking plugins.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("adbench")


@hookspec
def adbench_methods():
    """Return the detector methods this plugin provides.

    Called once when the plugin manager is built, for every plugin; the results of all
    plugins are collected (not ``firstresult``).

    :return: a list of :class:`adbench.MethodSpec`. A method name must be unique across
        all installed plugins: two plugins giving the same name is an error that names
        both distributions.
    """


@hookspec
def adbench_datasets():
    """Return the datasets this plugin provides.

    Called once when the plugin manager is built, for every plugin; results are collected.

    :return: a list of :class:`adbench.DatasetSpec`; names are unique as for methods.
    """


@hookspec
def adbench_run_started(run_dir, config):
    """Called by the runner after the run folder and its ``config.yaml`` exist and before
    any data is loaded or model fitted.

    :param pathlib.Path run_dir: the run folder (``runs/<dataset>/<method>/<run-id>``).
    :param dict config: the fully resolved configuration written to ``config.yaml``.
    :return: ignored. Exceptions propagate and fail the run: a logger must not hide errors.
    """


@hookspec
def adbench_run_finished(run_dir, summary):
    """Called by the runner after ``per_volume.csv`` and ``summary.json`` are written.

    :param pathlib.Path run_dir: the run folder.
    :param dict summary: the content of ``summary.json`` (metric means, stds, counts, timings).
    :return: ignored.
    """

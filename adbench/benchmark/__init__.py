"""Benchmark grids (``adbench benchmark``): :mod:`.grid` parses, validates and expands a grid
file into cells; :mod:`.plan` says which are done, which train and which reuse a model;
:mod:`.execute` runs cells (local, one worker per GPU, or Ray); :mod:`.state` keeps the grid
folder's grid.json and report.md; :mod:`.plots` draws the sweep plots; :mod:`.run` ties
them together in one function, :func:`adbench.benchmark.run.run_grid`."""

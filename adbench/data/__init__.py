"""Data: what a dataset delivers and how it becomes slices.

==============  ==================================================================
``volume``      :class:`Volume` (one scan) and :class:`SliceSet` (preprocessed slices)
``dataset``     the :class:`Dataset` base class of dataset plugins
``nifti``       reading NIfTI files with errors that name the file
``validate``    checks every reader shares (grids, label maps, duplicates)
``preprocess``  the shared preprocessing (RAS, crop, resize, equalise, match, normalise)
``native``      maps put back on the source scan's grid (inverse of RAS, crop, resize)
``selection``   the one slice rule (which axial slices are trained on and evaluated)
``cache``       the per-subject slice cache and the streaming of preprocessed volumes
``sampling``    index batches and even subsets of a SliceSet
==============  ==================================================================
"""
from adbench.data.dataset import Dataset, ListedDataset
from adbench.data.volume import DataError, SliceSet, Volume

__all__ = ["Volume", "SliceSet", "DataError", "Dataset", "ListedDataset"]

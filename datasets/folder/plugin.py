"""Registers the ``folder`` dataset (a user's own NIfTI images)."""
from __future__ import annotations

from adbench import DatasetSpec, hookimpl
from adbench.datasets.folder.reader import NiftiFolder


@hookimpl
def adbench_datasets():
    return [DatasetSpec(
        name="folder",
        factory=NiftiFolder,
        default_config={
            "data_root": None,
            "train_pattern": "train/*.nii*",            # healthy images; None = no train split
            "test_pattern": "test/*.nii*",              # lesioned images; None = no test split
            "mask_pattern": "test_masks/{name}.nii*",   # {name} {dir} {subject}, then globbed
            "brain_pattern": None,                      # None: brain = image > brain_threshold
            "manifest": None,                           # CSV subject,image[,mask,brain,split]
            "subject_regex": None,                      # None: id = file name without .nii[.gz]
            "lesion_labels": None,                      # None: label > 0
            "label_values": None,                       # None: any non-negative integer labels
            "brain_threshold": 0.0,
            "max_subjects": None,
            "val_subjects": None,                       # healthy ids for "val" (thresholds)
        },
        splits=("train", "test"),  # and "val": NiftiFolder.has_val_split
        description="your own NIfTI images (+ lesion/brain masks) by glob patterns or a CSV manifest",
        presets={"smoke": {"max_subjects": 2}, "default": {}},
    )]

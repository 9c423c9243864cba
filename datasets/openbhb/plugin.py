"""Registers the ``openbhb`` dataset (healthy training scans, quasi-raw release)."""
from __future__ import annotations

from adbench import DatasetSpec, hookimpl
from adbench.datasets.openbhb.reader import OpenBHB


@hookimpl
def adbench_datasets():
    return [DatasetSpec(
        name="openbhb",
        factory=OpenBHB,
        default_config={
            "data_root": None,          # OpenBHB folder (participants.tsv + quasi-raw arrays)
            "form": "auto",             # "npy" (quasi-raw arrays) | "nifti" (BIDS) | "auto"
            "n_subjects": 640,          # the paper's 640 healthy scans; None = all
            "seed": 0,                  # seed of the subject draw
            "source_split": None,       # e.g. "train" to keep participants.tsv split == train
            "npy_affine": None,         # None: release template, else FSL MNI152 1 mm grid
            "brain_threshold": 0.0,     # brain = image > threshold (skull-stripped data)
            "n_val": 20,                # healthy "val" scans drawn from those not drawn for train
        },
        splits=("train",),  # and "val": OpenBHB.has_val_split
        description="OpenBHB healthy T1w scans (quasi-raw .npy or BIDS NIfTI), 640 drawn by default",
        presets={"smoke": {"n_subjects": 4, "n_val": 2}, "default": {}, "paper": {}},
    )]

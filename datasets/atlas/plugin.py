"""Registers the ``atlas`` dataset (ATLAS v2.0 stroke lesions, T1w in MNI space)."""
from __future__ import annotations

from adbench import DatasetSpec, hookimpl
from adbench.datasets.atlas.reader import ATLAS2


@hookimpl
def adbench_datasets():
    return [DatasetSpec(
        name="atlas",
        factory=ATLAS2,
        default_config={
            "data_root": None,          # folder holding ATLAS_2/
            "brain_mask": "mni152",     # or a per-subject file pattern, e.g. "{prefix}_brainmask.nii.gz"
            "lesion_labels": None,      # None: label > 0
            "label_values": [0, 1],
            "max_subjects": None,       # None: every usable subject
        },
        splits=("test",),
        description="ATLAS v2.0 stroke lesions as distributed (ATLAS_2/Training, MNI152NLin2009aSym)",
        presets={"smoke": {"max_subjects": 2}, "default": {}, "paper": {}},
    )]

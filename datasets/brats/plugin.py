"""Registers the ``brats`` dataset (BraTS2020 training data, T1 by default)."""
from __future__ import annotations

from adbench import DatasetSpec, hookimpl
from adbench.datasets.brats.reader import BRATS_LABELS, BraTS2020


@hookimpl
def adbench_datasets():
    return [DatasetSpec(
        name="brats",
        factory=BraTS2020,
        default_config={
            "data_root": None,              # folder holding MICCAI_BraTS2020_TrainingData/
            "modality": "t1",               # the paper tests on T1
            "lesion_labels": None,          # None: label > 0 (whole tumour); e.g. [1, 4]
            "label_values": list(BRATS_LABELS),
            "seg_overrides": {},            # {subject id: seg file} for misnamed segmentations;
                                            # subject 355's W39_...Segm.nii is known already
            "max_subjects": None,           # None: every usable subject
        },
        splits=("test",),
        description="BraTS2020 glioma volumes as distributed (MICCAI_BraTS2020_TrainingData)",
        presets={"smoke": {"max_subjects": 2}, "default": {}, "paper": {}},
    )]

"""Evaluation: exact metrics, the region rule, statistics, and the test half of a run.

============  =====================================================================
``metrics``   exact AUROC, ⌈Dice⌉, AUPRC, pooled ⌈Dice⌉, slice scores, summaries
``volume``    per-volume evaluation over R = brain ∩ selected slices, the definitions
``stats``     paired t-tests, bootstrap CIs, the star rule of the tables
``test_set``  stream test volumes through a detector and evaluate them
============  =====================================================================
"""
from adbench.evaluation.volume import DEFINITIONS, definitions, evaluate_volume, region_mask

__all__ = ["evaluate_volume", "region_mask", "definitions", "DEFINITIONS"]

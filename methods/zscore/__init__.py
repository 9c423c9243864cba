"""Voxel-wise z-score model of healthy appearance (sanity baseline)."""

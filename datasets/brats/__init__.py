"""BraTS2020 (T1 by default) as distributed."""

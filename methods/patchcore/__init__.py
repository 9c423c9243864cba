"""PatchCore (Roth et al., CVPR 2022) on VGG16 features."""

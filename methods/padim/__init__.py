"""PaDiM (Defard et al., ICPR 2021) on VGG16 features."""

"""f-AnoGAN (Schlegl et al., Medical Image Analysis 2019): WGAN-GP plus an izi_f encoder."""

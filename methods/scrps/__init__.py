"""SCRPS: StyleGAN-based latent Code Retrieval and Partial Swap (Wei et al., MICCAI 2025)."""

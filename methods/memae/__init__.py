"""MemAE: memory-augmented convolutional autoencoder (Gong et al., ICCV 2019)."""

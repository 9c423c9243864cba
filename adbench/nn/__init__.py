"""Neural-network parts shared by several methods (never inside one method's folder).

====================  ================================================================
``weights``           pretrained weights: torchvision's cache, a path, or random by name
``backbones``         frozen VGG16 / ResNet trunks (torchvision ``create_feature_extractor``)
``timm_backbones``    timm models (``backbone: timm/<model>``) as frozen extractors
``extractor``         building a frozen extractor for a detector, and its fingerprint
``perceptual``        the perceptual score A_per and the inversion's perceptual loss
``maps``              patch grid to anomaly map: upsampling, Gaussian smoothing
``coreset``           greedy k-centre coreset with random projection (PatchCore)
``gaussian``          per-position Gaussians and Mahalanobis distances (PaDiM)
``synthesis``         pseudo-anomalies for DRÆM/RealNet/MediCLIP (Perlin masks, textures, exact masks)
``quality``           generator sample quality: KID/FID on VGG16 features, SWD (StyleGAN2)
====================  ================================================================
"""

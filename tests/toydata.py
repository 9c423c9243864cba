"""A tiny in-memory dataset plugin for core tests: ellipsoid 'brains' with bright blobs.

Small (40 x 48 x 12 voxels at 4 mm), deterministic, and with a known answer: test lesions
are bright spheres, so a healthy-appearance model must score them highest.
"""
from __future__ import annotations

import numpy as np

from adbench import Dataset, DatasetSpec, Volume, hookimpl


def toy_volume(i: int, lesion: bool, seed: int = 0, shape=(40, 48, 12)) -> Volume:
    rng = np.random.default_rng([seed, i, int(lesion)])
    X, Y, Z = shape
    xx, yy, zz = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    c = np.array([X / 2, Y / 2, Z / 2]) + rng.normal(0, 0.5, 3)
    r = np.array([X * 0.38, Y * 0.42, Z * 0.45])
    d = ((xx - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((zz - c[2]) / r[2]) ** 2
    brain = d < 1
    img = np.where(brain, 100 + 40 * np.cos(3 * np.sqrt(d)) + rng.normal(0, 2, shape), 0).astype(np.float32)
    les = None
    if lesion:
        lc = c + np.array([X * 0.12, -Y * 0.1, 0]) * rng.choice([-1, 1], 3)
        les = (((xx - lc[0]) ** 2 + (yy - lc[1]) ** 2) / 16 + (zz - lc[2]) ** 2 / 4 < 1) & brain
        img[les] = 260
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    return Volume(img, brain, les, aff, f"toy{'L' if lesion else 'H'}{i:02d}", {"image_path": f"<toy {i}>"})


class ToyDataset(Dataset):
    name = "toy"

    def __init__(self, n_train: int = 4, n_test: int = 3, seed: int = 0):
        self.n_train, self.n_test, self.seed = n_train, n_test, seed

    def subjects(self, split):
        n = self.n_train if split == "train" else self.n_test
        return [f"toy{'H' if split == 'train' else 'L'}{i:02d}" for i in range(n)]

    def load(self, subject):
        return toy_volume(int(subject[-2:]), subject[3] == "L", self.seed)


@hookimpl
def adbench_datasets():
    return [DatasetSpec(name="toy", factory=ToyDataset, default_config={"n_train": 4, "n_test": 3, "seed": 0},
                        splits=("train", "test"), description="tiny ellipsoid test data",
                        presets={"smoke": {"n_train": 3, "n_test": 2}})]

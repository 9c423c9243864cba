"""Named random streams: every random draw of a training comes from one of them.

A stream is a ``torch.Generator`` seeded from (seed, rank, stream index, iteration), so each
rank draws its own data and latents, and a training that is checkpointed with the streams'
states resumes bit for bit (no global random state anywhere).
"""
from __future__ import annotations

import torch

__all__ = ["RandomStreams"]


class RandomStreams:
    """Generators by name. ``cpu_streams`` live on the CPU whatever the device (data order:
    the index draw must not depend on the accelerator), the others on ``device``."""

    def __init__(self, names: tuple[str, ...], seed: int, rank: int, device: torch.device | str,
                 iteration: int = 0, cpu_streams: tuple[str, ...] = ("data",)):
        if len(set(names)) != len(names):
            raise ValueError(f"random streams: duplicate names in {names}")
        self.names = tuple(names)
        self._gens: dict[str, torch.Generator] = {}
        for k, name in enumerate(self.names):
            g = torch.Generator(device="cpu" if name in cpu_streams else device)
            g.manual_seed(int(seed) * 1_000_003 + int(rank) * 7919 + k * 104_729 + int(iteration))
            self._gens[name] = g

    def __getitem__(self, name: str) -> torch.Generator:
        try:
            return self._gens[name]
        except KeyError:
            raise KeyError(f"no random stream {name!r}; streams: {self.names}") from None

    def state(self) -> dict[str, torch.Tensor]:
        """``rng_<name>`` -> generator state, for a checkpoint."""
        return {f"rng_{k}": g.get_state() for k, g in self._gens.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for k, g in self._gens.items():
            g.set_state(state[f"rng_{k}"])

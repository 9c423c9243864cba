"""The shared training package: one phase-driven loop, its checkpoints, random streams,
data parallelism, logs, and the losses GANs and autoencoders share.

==================  ===========================================================
``loop``            :func:`train`, :class:`Phase`, :class:`TrainingTask`, :class:`EMA`
``checkpoint``      atomic checkpoints, resume check by config digest
``streams``         named, checkpointed random generators
``distributed``     torchrun start-up, gradient all-reduce (gloo on CPU, NCCL on GPU)
``records``         the JSONL loss log and sample grids
``losses``          logistic / non-saturating GAN losses, R1, path length, WGAN-GP
==================  ===========================================================
"""
from .checkpoint import CheckpointError, config_digest, load_checkpoint, save_checkpoint
from .distributed import all_reduce_mean, dist_info, init_distributed, sync_grads
from .loop import (EMA, PRECISIONS, Env, LoopSettings, Phase, Step, TrainingTask,
                   epoch_iterations, train, work_folder)

__all__ = ["train", "work_folder", "Phase", "Step", "EMA", "TrainingTask", "LoopSettings", "Env",
           "PRECISIONS", "epoch_iterations",
           "config_digest", "load_checkpoint", "save_checkpoint", "CheckpointError",
           "init_distributed", "dist_info", "all_reduce_mean", "sync_grads"]

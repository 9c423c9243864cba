"""One benchmark run: (method, test dataset, training dataset, config, seed) → run folder.

The flow (architecture §4–§5):

1. resolve and validate the whole config, build the datasets and list their subjects —
   all before anything is written, so a bad flag or path leaves no run folder behind;
2. create ``<output>/<dataset>/<method>/<run-id>/`` (never reused) and write ``config.yaml``;
3. load the healthy training slices (preprocessed, cached per subject) and the
   histogram-matching reference;
4. fit the detector, or load it from the model cache keyed by (method, config,
   training-data fingerprint, preprocessing, seed); the cache folder is also the
   detector's ``ctx.workdir``, so an interrupted fit resumes with the same command;
5. stream the test volumes: predict the selected slices, score reconstructions with the
   shared perceptual score A_per, evaluate per volume, write NIfTI maps;
6. write ``per_volume.csv`` and, last, ``summary.json`` — a run folder without
   ``summary.json`` is incomplete (its ``error.txt`` says why when it failed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adbench import __version__
from adbench.config import (PREPROCESS_PRESETS, RUNNER_DEFAULTS, RUNNER_PRESETS, ConfigError,
                            check_device, check_preset, load_config_file, merge_section, parse_sets,
                            preprocess_config)
from adbench.data.cache import finalize_image, iter_preprocessed, to_slices
from adbench.data.dataset import Dataset
from adbench.data.preprocess import HistogramReference, PreprocessConfig
from adbench.data.selection import select_slices
from adbench.data.volume import DataError, SliceSet
from adbench.detector import Context, Detector
from adbench.io import (cache_dir, file_sha256, load_tensors, save_tensors, show_progress,
                        write_json)
from adbench.params import check_config
from adbench.plugins import Registry, get_registry
from adbench.rundir import RunFolder

__all__ = ["RunSpec", "resolve", "load_split", "run"]

log = logging.getLogger("adbench")


@dataclass
class RunSpec:
    """A fully resolved run, before anything is written."""

    method: str
    dataset: str
    train_on: str
    preset: str | None
    seed: int
    device: str
    weights: str
    strict: bool
    method_config: dict[str, Any]
    dataset_config: dict[str, Any]
    train_config: dict[str, Any]
    preprocess: PreprocessConfig
    runner: dict[str, Any]
    registry: Registry = field(repr=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "dataset": self.dataset, "train_on": self.train_on,
            "preset": self.preset, "seed": self.seed, "device": self.device, "weights": self.weights,
            "strict": self.strict, "method_config": self.method_config,
            "dataset_config": self.dataset_config, "train_config": self.train_config,
            "preprocess": self.preprocess.to_dict(), "runner": self.runner,
            "versions": versions(),
        }


def versions() -> dict[str, str]:
    import nibabel
    import scipy
    import sklearn
    import torchvision
    return {"adbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "nibabel": nibabel.__version__}


def resolve(method: str, dataset: str, *, train_on: str | None = None, preset: str | None = None,
            config_file: str | None = None, sets: list[str] | None = None, seed: int = 0,
            device: str = "cpu", weights: str | None = None, data_root: str | None = None,
            train_root: str | None = None, strict: bool = False,
            registry: Registry | None = None) -> RunSpec:
    """Validate names, presets and every config key; no files are touched."""
    reg = registry or get_registry()
    mspec = reg.method(method)
    dspec = reg.dataset(dataset)
    device = check_device(device)
    train_name = train_on or dataset
    tspec = reg.dataset(train_name)
    if "test" not in dspec.splits:
        raise ConfigError(f"dataset {dataset!r} has no test split (it provides {list(dspec.splits)}); "
                          f"choose a dataset with lesion masks for --dataset")
    if "train" not in tspec.splits:
        raise ConfigError(f"dataset {train_name!r} has no healthy 'train' split; pass --train-on with "
                          f"a healthy dataset, e.g. --train-on openbhb --train-root PATH")
    known = (set(RUNNER_PRESETS) | set(PREPROCESS_PRESETS) | set(mspec.presets) | set(dspec.presets)
             | set(tspec.presets) | {"default"})
    check_preset(preset, known)
    files = load_config_file(config_file) if config_file else {s: {} for s in ("method", "dataset", "train", "preprocess", "runner")}
    over = parse_sets(sets)

    runner_cfg = merge_section("runner", RUNNER_DEFAULTS, RUNNER_PRESETS, preset, files["runner"], over["runner"],
                               {"weights": str(weights)} if weights is not None else {})
    if runner_cfg["localisation"] not in ("perceptual", "native"):
        raise ConfigError(f"runner.localisation={runner_cfg['localisation']!r}: expected 'perceptual' or 'native'")
    method_cfg = merge_section(f"method {method!r}", mspec.default_config, mspec.presets, preset,
                               files["method"], over["method"])
    if "weights" in method_cfg and "weights" not in files["method"] and "weights" not in over["method"]:
        method_cfg["weights"] = runner_cfg["weights"]  # one weights choice for the whole run
    check_config(mspec.factory, method_cfg, f"method {method!r}")  # types and ranges, now
    for key in mspec.file_keys:
        if method_cfg.get(key) is not None:
            path = Path(str(method_cfg[key])).expanduser()
            if not path.is_file():
                raise ConfigError(f"method {method!r} config key {key!r}: {method_cfg[key]} is not "
                                  f"a file (--set {key}=PATH names the file that fit reads)")
            method_cfg[key] = str(path.resolve())

    def dataset_layer(spec, name, root, flag):
        if root is None:
            return {}
        if "data_root" not in spec.default_config:
            raise ConfigError(f"{flag} was given but dataset {name!r} reads no data_root "
                              f"(its config keys: {', '.join(sorted(spec.default_config)) or '(none)'})")
        return {"data_root": str(root)}

    dataset_cfg = merge_section(f"dataset {dataset!r}", dspec.default_config, dspec.presets, preset,
                                files["dataset"], dataset_layer(dspec, dataset, data_root, "--data-root"),
                                over["dataset"])
    if train_name == dataset:
        if over["train"] or files["train"] or train_root:
            raise ConfigError("train.* settings and --train-root need --train-on with a different dataset; "
                              "without it the test dataset's own train split is used (set dataset.*)")
        train_cfg = dataset_cfg
    else:
        train_cfg = merge_section(f"dataset {train_name!r}", tspec.default_config, tspec.presets, preset,
                                  files["train"], dataset_layer(tspec, train_name, train_root, "--train-root"),
                                  over["train"])
    pre = preprocess_config(preset, files["preprocess"], over["preprocess"])
    return RunSpec(method=method, dataset=dataset, train_on=train_name, preset=preset, seed=int(seed),
                   device=device, weights=str(runner_cfg["weights"]), strict=strict, method_config=method_cfg,
                   dataset_config=dataset_cfg, train_config=train_cfg, preprocess=pre,
                   runner=runner_cfg, registry=reg)


# -- data ---------------------------------------------------------------------------------
def _train_slices(ds: Dataset, name: str, cfg: PreprocessConfig, *, strict: bool, report: list,
                  progress: bool, limit: int | None, sources: dict | None = None,
                  ) -> tuple[SliceSet, HistogramReference | None]:
    kept = []
    for pre in iter_preprocessed(ds, name, "train", cfg, strict=strict, report=report,
                                 progress=progress, limit=limit):
        if sources is not None:  # data choices a reader recorded (e.g. OpenBHB's affine_source)
            for k, v in pre.meta.items():
                if k.endswith("_source"):
                    sources.setdefault(k, set()).add(str(v))
        z = _select(pre, cfg.slices_train, cfg)
        if len(z):
            kept.append((pre, z))
    if not kept:
        raise DataError(f"dataset {name!r}: no usable training volumes/slices "
                        f"({len(report)} skipped: {[r['reason'] for r in report][:3]})")
    reference = None
    if cfg.match:
        reference = HistogramReference.fit([(p.image[:, :, z], p.brain[:, :, z]) for p, z in kept],
                                           cfg.n_quantiles)
    parts = [to_slices(p, finalize_image(p, reference, cfg), z) for p, z in kept]
    return SliceSet.concat(parts), reference


def _select(pre, rule, cfg) -> np.ndarray:
    return select_slices(pre.brain, pre.lesion, rule, cfg.min_brain_fraction)


def load_split(dataset: str, split: str, *, dataset_config: dict | None = None, preset: str | None = None,
               data_root: str | None = None, progress: bool = False, strict: bool = False,
               report: list | None = None, preprocess: dict | None = None,
               reference: HistogramReference | None = None, registry: Registry | None = None) -> SliceSet:
    """Preprocessed slices of a registered dataset's split (api for scripts and `prepare`).

    The training split builds its own histogram reference; a test split is matched to
    ``reference`` when given (else only equalised and normalised).
    """
    reg = registry or get_registry()
    spec = reg.dataset(dataset)
    if split not in spec.splits:
        raise ConfigError(f"dataset {dataset!r} has no {split!r} split (it provides {list(spec.splits)})")
    layer = {"data_root": str(data_root)} if data_root is not None else {}
    cfg = merge_section(f"dataset {dataset!r}", spec.default_config, spec.presets, preset,
                        dict(dataset_config or {}), layer)
    pcfg = preprocess_config(preset, dict(preprocess or {}))
    ds = spec.factory(**cfg)
    report = report if report is not None else []
    if split == "train":
        return _train_slices(ds, dataset, pcfg, strict=strict, report=report, progress=progress, limit=None)[0]
    parts = []
    for pre in iter_preprocessed(ds, dataset, split, pcfg, strict=strict, report=report, progress=progress):
        z = _select(pre, pcfg.slices_test, pcfg)
        if len(z):
            parts.append(to_slices(pre, finalize_image(pre, reference, pcfg), z))
    if not parts:
        raise DataError(f"dataset {dataset!r} split {split!r}: no usable slices ({len(report)} skipped)")
    return SliceSet.concat(parts)


# -- the run ------------------------------------------------------------------------------
def input_files(spec: RunSpec) -> dict[str, dict[str, str]]:
    """key -> {"path", "sha256"} of the files the method's config names (``file_keys``)."""
    mspec = (spec.registry or get_registry()).method(spec.method)
    return {k: {"path": str(spec.method_config[k]), "sha256": file_sha256(spec.method_config[k])}
            for k in mspec.file_keys if spec.method_config.get(k) is not None}


def _model_key(spec: RunSpec, train_fp: str) -> str:
    predict_only = set((spec.registry or get_registry()).method(spec.method).predict_keys)
    fit_config = {k: v for k, v in spec.method_config.items() if k not in predict_only}
    # a file enters the key by content, not by name
    fit_config.update({k: f"sha256:{v['sha256']}" for k, v in input_files(spec).items()})
    payload = json.dumps({"method": spec.method, "config": fit_config, "train": train_fp,
                          "preprocess": spec.preprocess.to_dict(), "seed": spec.seed,
                          "max_train_volumes": spec.runner["max_train_volumes"]},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _fit_or_load(detector: Detector, train: SliceSet, spec: RunSpec, train_fp: str, ctx: Context,
                 folder: RunFolder) -> tuple[str, Path]:
    key = _model_key(spec, train_fp)
    mdir = cache_dir("models", spec.method, key)
    state_path = mdir / "state.pt"
    ctx.workdir = mdir / "work"
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    if state_path.exists():
        log.info("reusing cached model %s", mdir)
        detector.load_state_dict(load_tensors(state_path, map_location="cpu"))
        status = "cached"
    else:
        log.info("fitting %s on %d training slices (model cache %s)", spec.method, len(train), mdir)
        detector.fit(train, ctx)
        write_json(mdir / "params.json", detector.get_params())
        save_tensors(state_path, detector.state_dict())
        status = "fitted"
    folder.write_model({"cache_dir": str(mdir), "key": key, "status": status,
                        "params": detector.get_params()})
    return status, mdir


def run(method: str, dataset: str, *, output: str | Path = "runs", quiet: bool = False,
        progress: bool | None = None, **kwargs: Any) -> Path:
    """Resolve, then execute one run; returns the run folder. kwargs go to :func:`resolve`."""
    spec = resolve(method, dataset, **kwargs)
    return execute(spec, output=output, quiet=quiet, progress=progress)


def execute(spec: RunSpec, *, output: str | Path = "runs", quiet: bool = False,
            progress: bool | None = None) -> Path:
    """Run a resolved spec. Progress bars: ``progress`` when given, none when ``quiet``,
    else only when stderr is a terminal."""
    progress = show_progress(False if quiet else progress)
    reg = spec.registry or get_registry()
    dspec, tspec = reg.dataset(spec.dataset), reg.dataset(spec.train_on)

    def build(ds_spec, cfg):
        # A dataset that generates or downloads shows progress like the run; only a
        # presentation choice, so it is not part of the recorded config.
        if "progress" in ds_spec.default_config and cfg.get("progress") is None:
            cfg = {**cfg, "progress": progress}
        return ds_spec.factory(**cfg)

    test_ds = build(dspec, spec.dataset_config)
    train_ds = test_ds if spec.train_on == spec.dataset else build(tspec, spec.train_config)
    test_subjects = test_ds.subjects("test")
    if not test_subjects and not test_ds.problems("test"):
        raise DataError(f"dataset {spec.dataset!r} lists no test subjects "
                        f"(config {spec.dataset_config})")

    folder = RunFolder.create(output, spec.dataset, spec.method, spec.seed)
    run_dir = folder.path
    config = spec.to_dict()
    folder.write_config(config)
    handler = logging.FileHandler(folder.log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        reg.run_started(run_dir=run_dir, config=config)
        summary = _execute(spec, folder, test_ds, train_ds, progress=progress)
        reg.run_finished(run_dir=run_dir, summary=summary)
        return run_dir
    except BaseException as exc:
        folder.write_error(exc)
        log.error("run failed: %s", exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _execute(spec: RunSpec, folder: RunFolder, test_ds: Dataset, train_ds: Dataset, *,
             progress: bool) -> dict:
    from adbench.evaluation.test_set import evaluate_test_set  # maps, metrics, figures

    timings: dict[str, float] = {}
    skipped_train: list[dict] = []
    train_sources: dict[str, set] = {}
    t0 = time.perf_counter()
    train, reference = _train_slices(train_ds, spec.train_on, spec.preprocess, strict=spec.strict,
                                     report=skipped_train, progress=progress,
                                     limit=spec.runner["max_train_volumes"], sources=train_sources)
    timings["load_train_s"] = time.perf_counter() - t0
    log.info("training data: %d slices from %d volumes of %r", len(train),
             len(set(train.subjects)), spec.train_on)
    train_fp = train_ds.fingerprint("train")
    ctx = Context(device=spec.device, seed=spec.seed, progress=progress, log=log)
    detector = reg_factory(spec)
    t0 = time.perf_counter()
    model_status, model_cache = _fit_or_load(detector, train, spec, train_fp, ctx, folder)
    timings["fit_s" if model_status == "fitted" else "load_model_s"] = time.perf_counter() - t0
    n_train_slices = len(train)
    del train

    result = evaluate_test_set(spec, folder, detector, ctx, test_ds, reference, progress=progress)
    folder.write_rows(result.rows)
    skipped = skipped_train + result.skipped
    extra_means = {k: v for k, v in result.summary.items() if k.startswith("extra_")}
    summary = {"method": spec.method, "dataset": spec.dataset, "train_on": spec.train_on,
               "preset": spec.preset, "seed": spec.seed,
               **{k: v for k, v in result.summary.items() if k not in extra_means},
               "skipped": skipped, "timings": {**timings, **result.timings}, **extra_means,
               "model": {"status": model_status, "cache_dir": str(model_cache)},
               "inputs": input_files(spec),
               "train_data_sources": {k: sorted(v) for k, v in sorted(train_sources.items())},
               "n_train_slices": n_train_slices, "skipped_train_or_test": len(skipped)}
    folder.write_summary(summary)  # last: marks the run complete
    log.info("done: %s", folder.path)
    return summary


def reg_factory(spec: RunSpec) -> Detector:
    mspec = (spec.registry or get_registry()).method(spec.method)
    det = mspec.factory(**spec.method_config)
    if not isinstance(det, Detector):
        raise TypeError(f"method {spec.method!r}: factory returned {type(det).__name__}, "
                        f"expected an adbench.Detector")
    return det

"""One benchmark run: (method, test dataset, training dataset, config, seed) → run folder.

The flow (architecture §4–§5):

1. resolve and validate the whole config, check every path flag, build the datasets and
   list their subjects — all before anything is written, so a bad flag or path leaves no
   run folder behind;
2. create ``<output>/<dataset>/<method>/<run-id>/`` (never reused; a ``running.json`` marker
   says which process owns it) and write ``config.yaml``; SIGTERM from here on unwinds like
   Ctrl-C, so a stopped run leaves ``error.txt`` saying "interrupted";
3. load the healthy training slices (preprocessed, cached per subject) and the
   histogram-matching reference;
4. fit the detector, or load it from the model cache keyed by (method, config, the
   training set actually used: the sha256 of each used subject's source files and the
   subjects skipped, preprocessing, seed); the cache folder is also the detector's
   ``ctx.workdir``, so an interrupted fit resumes with the same command. A cached
   ``state.pt`` that is unreadable is moved aside and the model fitted again, and a refit
   says why (no model with these settings, or one fitted on other training data);
5. stream the test volumes: predict the selected slices, score reconstructions with the
   shared perceptual score A_per, evaluate per volume, write NIfTI maps;
6. write ``per_volume.csv`` and, last, ``summary.json`` — a run folder without
   ``summary.json`` is incomplete (its ``error.txt`` says why when it failed).
"""
from __future__ import annotations

import contextlib
import logging
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adbench import __version__
from adbench.config import (PREPROCESS_PRESETS, RUNNER_DEFAULTS, RUNNER_PRESETS, ConfigError,
                            check_device, check_preset, check_runner_config, load_config_file,
                            merge_section, parse_sets, preprocess_config)
from adbench.data.cache import finalize_image, iter_preprocessed, to_slices
from adbench.data.dataset import Dataset, validation_source
from adbench.data.preprocess import HistogramReference, PreprocessConfig
from adbench.data.selection import select_slices
from adbench.data.volume import DataError, SliceSet
from adbench.detector import Context, Detector
from adbench.io import show_progress
from adbench.model_cache import TrainingSet, fit_or_load, input_files, training_set
from adbench.params import check_config
from adbench.plugins import Registry, get_registry
from adbench.rundir import RunFolder

__all__ = ["RunSpec", "TrainingSet", "Interrupted", "resolve", "load_split", "run", "execute"]

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
    check_runner_config(runner_cfg)   # types and ranges (runner.batch_size=-1), now
    method_cfg = merge_section(f"method {method!r}", mspec.default_config, mspec.presets, preset,
                               files["method"], over["method"])
    if ("weights" in method_cfg and "weights" not in files["method"]
            and "weights" not in over["method"] and _inherits_weights(method_cfg, runner_cfg)):
        method_cfg["weights"] = runner_cfg["weights"]  # one weights choice for the whole run
    check_config(mspec.factory, method_cfg, f"method {method!r}")  # types and ranges, now
    cross_check = getattr(mspec.factory, "validate_config", None)
    if callable(cross_check):
        cross_check(method_cfg)   # e.g. MediCLIP's CLIP checkpoint, before any run folder
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
        if not Path(root).expanduser().is_dir():  # now, before a run folder exists
            what = "is not a folder" if Path(root).expanduser().exists() else "does not exist"
            raise ConfigError(f"{flag} {root}: {what}; pass the folder of dataset {name!r}")
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
    check_config(dspec.factory, dataset_cfg, f"dataset {dataset!r}")  # e.g. max_subjects=-1
    if train_name != dataset:
        check_config(tspec.factory, train_cfg, f"dataset {train_name!r}")
    pre = preprocess_config(preset, files["preprocess"], over["preprocess"])
    return RunSpec(method=method, dataset=dataset, train_on=train_name, preset=preset, seed=int(seed),
                   device=device, weights=str(runner_cfg["weights"]), strict=strict, method_config=method_cfg,
                   dataset_config=dataset_cfg, train_config=train_cfg, preprocess=pre,
                   runner=runner_cfg, registry=reg)


def _inherits_weights(method_cfg: dict[str, Any], runner_cfg: dict[str, Any]) -> bool:
    """Whether the method's ``weights`` follows ``runner.weights`` (``--weights``): always for
    the named sources (imagenet, random); a file only when the method's backbone is the
    VGG16 that the file is for (a timm or ResNet backbone keeps its own ``weights``)."""
    if str(runner_cfg["weights"]) in ("imagenet", "random"):
        return True
    return str(method_cfg.get("backbone", "vgg16")) == "vgg16"


# -- data ---------------------------------------------------------------------------------
def _train_slices(ds: Dataset, name: str, cfg: PreprocessConfig, *, strict: bool, report: list,
                  progress: bool, limit: int | None, sources: dict | None = None,
                  used: list | None = None) -> tuple[SliceSet, HistogramReference | None]:
    """The training SliceSet and its histogram reference; ``used`` (when given) receives the
    subjects whose slices are in it."""
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
    if used is not None:
        used.extend(p.subject_id for p, _ in kept)
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
    # both listings now: a wrong root of either dataset fails before a run folder exists
    for ds, name, split in ((test_ds, spec.dataset, "test"), (train_ds, spec.train_on, "train")):
        if not ds.subjects(split) and not ds.problems(split):
            cfg = spec.dataset_config if split == "test" else spec.train_config
            raise DataError(f"dataset {name!r} lists no {split} subjects (config {cfg})")

    with _sigterm_interrupts():
        folder = RunFolder.create(output, spec.dataset, spec.method, spec.seed)
        run_dir = folder.path
        handlers = []
        try:
            config = spec.to_dict()
            folder.write_config(config)
            handlers = _log_handlers(folder.log_file)
            reg.run_started(run_dir=run_dir, config=config)
            summary = _execute(spec, folder, test_ds, train_ds, progress=progress)
            reg.run_finished(run_dir=run_dir, summary=summary)
            return run_dir
        except BaseException as exc:
            folder.write_error(exc)
            how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            log.error("run %s: %s", how, exc or type(exc).__name__)
            raise
        finally:
            for h in handlers:
                log.removeHandler(h)
                h.close()


def _log_handlers(log_file: Path) -> list[logging.Handler]:
    """The run's log file, and warnings on stderr when nothing else shows them: with a
    handler on the logger, Python no longer prints warnings through its last-resort handler,
    so a damaged cache file moved aside would otherwise be mentioned only in log.txt."""
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    out = [handler]
    if not logging.getLogger().handlers:  # `adbench -v` and pytest configure the root logger
        warn = logging.StreamHandler(sys.stderr)
        warn.addFilter(lambda r: r.levelno == logging.WARNING)  # errors: the CLI prints them
        warn.setFormatter(logging.Formatter("adbench: warning: %(message)s"))
        out.append(warn)
    for h in out:
        log.addHandler(h)
    log.setLevel(logging.INFO)
    return out


class Interrupted(KeyboardInterrupt):
    """SIGTERM during a run. A KeyboardInterrupt, so it unwinds like Ctrl-C: the run folder
    gets ``error.txt`` ("interrupted") and the command line exits as for Ctrl-C."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises :class:`Interrupted` in the main thread while the block runs (once: a
    second SIGTERM gets the previous handler, so a stuck clean-up can still be stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:  # the parent asked for SIGTERM to be ignored: keep that
        yield
        return
    previous = signal.SIG_DFL if previous is None else previous  # set outside Python

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(spec: RunSpec, folder: RunFolder, test_ds: Dataset, train_ds: Dataset, *,
             progress: bool) -> dict:
    from adbench.evaluation.test_set import evaluate_test_set  # maps, metrics, figures
    from adbench.evaluation.thresholds import apply_thresholds  # Dice without test labels

    timings: dict[str, float] = {}
    # healthy validation subjects for the thresholds (the dataset's "val", else held out)
    train_ds, validation = validation_source(train_ds, spec.train_on,
                                             float(spec.runner["val_holdout"]), spec.seed)
    skipped_train: list[dict] = []
    train_sources: dict[str, set] = {}
    used: list[str] = []
    t0 = time.perf_counter()
    train, reference = _train_slices(train_ds, spec.train_on, spec.preprocess, strict=spec.strict,
                                     report=skipped_train, progress=progress,
                                     limit=spec.runner["max_train_volumes"], sources=train_sources,
                                     used=used)
    train_set = training_set(train_ds, spec.train_on, spec.preprocess, used, skipped_train)
    timings["load_train_s"] = time.perf_counter() - t0
    log.info("training data: %d slices from %d volumes of %r (training set %s)", len(train),
             len(set(train.subjects)), spec.train_on, train_set.fingerprint)
    ctx = Context(device=spec.device, seed=spec.seed, progress=progress, log=log)
    detector = reg_factory(spec)
    t0 = time.perf_counter()
    model, _ = fit_or_load(detector, train, spec, train_set, ctx, folder)
    timings["fit_s" if model["status"] == "fitted" else "load_model_s"] = time.perf_counter() - t0
    n_train_slices = len(train)
    del train

    result = evaluate_test_set(spec, folder, detector, ctx, test_ds, reference, progress=progress)
    # a method's own account of its predict work (SCRPS: inversion start and step counts),
    # taken before the validation slices add to it
    method_info = getattr(detector, "inversion_summary", None)
    inversion = method_info() if callable(method_info) else None
    t0 = time.perf_counter()  # after the test set: predicting more first could change its maps
    thresholds = apply_thresholds(spec, train_ds, validation, reference, detector, ctx, result,
                                  progress=progress)
    timings["validation_s"] = time.perf_counter() - t0
    folder.write_rows(result.rows)
    skipped = skipped_train + result.skipped
    extra_means = {k: v for k, v in result.summary.items() if k.startswith("extra_")}
    summary = {"method": spec.method, "dataset": spec.dataset, "train_on": spec.train_on,
               "preset": spec.preset, "seed": spec.seed,
               **{k: v for k, v in result.summary.items() if k not in extra_means},
               "skipped": skipped, "timings": {**timings, **result.timings}, **extra_means,
               "model": model, "training_set": train_set.to_dict(),
               "inputs": input_files(spec),
               "train_data_sources": {k: sorted(v) for k, v in sorted(train_sources.items())},
               "n_train_slices": n_train_slices, "skipped_train_or_test": len(skipped),
               **thresholds, **({"inversion": inversion} if inversion else {})}
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

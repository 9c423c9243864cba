"""Contract checks a detector plugin can run, like scikit-learn's ``check_estimator``.

Every registered method is run through these checks by adbench's own test suite
(``tests/test_contract.py``); a plugin author runs the same on their own method::

    from adbench.plugins import get_registry
    from adbench.testing import check_detector

    check_detector(get_registry().method("mymethod"))      # raises AssertionError on failure

or, for one pytest test per check, with the fitted detectors shared by the checks::

    from adbench.testing import DetectorChecks, parametrize_detector_checks

    @pytest.fixture(scope="module")
    def checks():
        with DetectorChecks(get_registry().method("mymethod")) as h:
            yield h

    @parametrize_detector_checks(["mymethod"])
    def test_contract(checks, method, check):
        check(checks)

The detector is built with ``spec.factory(**config)``, where ``config`` is the spec's
``default_config`` overlaid with its "smoke" preset (or with the ``config`` given), and with
``weights="random"`` whenever the config has a ``weights`` key, since no pretrained weights
exist offline (a ``weights`` given explicitly in ``config`` is kept). It is fitted on tiny,
seeded synthetic slices of 160 x 128 (the real pipeline's size): textured ellipses on a -1
background with brain masks; test slices carry a bright disc. Each fit gets a workdir of its
own under a temporary folder, so no checkpoint of one fit can leak into another.

The checks (:func:`check_functions`, in this order; each docstring says what it checks):
``check_fit_returns_self``, ``check_not_fitted`` (NotFittedError before fit),
``check_prediction`` (maps (B, H, W) float32 finite; reconstructions (B, 1, H, W) in [-1, 1]),
``check_state_round_trip`` (bit-identical maps after torch.save / torch.load(weights_only=True)),
``check_deterministic`` (same seed, same maps), ``check_refit_starts_afresh`` (fit A then B =
fit B) and ``check_get_params`` (exactly the constructor arguments; the factory rebuilds it).
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adbench.data.volume import SliceSet
from adbench.detector import Context, Detector, Prediction
from adbench.errors import NotFittedError
from adbench.plugins import MethodSpec

__all__ = ["check_detector", "check_functions", "parametrize_detector_checks", "DetectorChecks",
           "contract_config", "synthetic_slices", "SLICE_SHAPE",
           "check_fit_returns_self", "check_not_fitted", "check_prediction",
           "check_state_round_trip", "check_deterministic", "check_refit_starts_afresh",
           "check_get_params"]

#: (H, W) of the synthetic slices: the preprocessed grid of the real pipeline (SCRPS's
#: StyleGAN2 is built for it).
SLICE_SHAPE = (160, 128)


# -- data -------------------------------------------------------------------------------------
def synthetic_slices(n: int, seed: int, *, blob: bool = False,
                     shape: tuple[int, int] = SLICE_SHAPE) -> SliceSet:
    """``n`` seeded 'brain' slices: textured ellipses in [-1, 1] on a -1 background.

    images (n, 1, H, W), brain (n, H, W) = the ellipse; ``blob=True`` adds a bright disc
    (value 1) inside every brain and marks it in ``lesion``. Subjects hold 4 slices each.
    """
    h, w = shape
    g = torch.Generator().manual_seed(int(seed))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    axes = 0.75 + 0.1 * torch.rand(n, 2, 1, 1, generator=g)           # half-axes, in [-1, 1] units
    phase = 6.28 * torch.rand(n, 2, 1, 1, generator=g)
    r = (yy / axes[:, 0]) ** 2 + (xx / axes[:, 1]) ** 2                 # (n, H, W)
    texture = 0.15 * torch.sin(9 * yy + phase[:, 0]) * torch.cos(8 * xx + phase[:, 1])
    brain = r < 1
    img = torch.where(brain, 0.2 - 0.3 * r + texture, torch.tensor(-1.0))
    lesion = torch.zeros_like(brain)
    if blob:
        centre = 0.3 * (2 * torch.rand(n, 2, 1, 1, generator=g) - 1)   # well inside the brain
        lesion = ((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2 < 0.15 ** 2) & brain
        img = torch.where(lesion, torch.tensor(1.0), img)
    tag = "test" if blob else "train"
    return SliceSet(images=img[:, None].float().clamp(-1, 1).contiguous(), brain=brain,
                    lesion=lesion, subjects=[f"{tag}{seed}-{i // 4:02d}" for i in range(n)],
                    z=np.arange(n) % 4)


# -- configuration ----------------------------------------------------------------------------
def contract_config(spec: MethodSpec, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The constructor arguments the checks use: ``default_config`` overlaid with ``config``
    (default: the "smoke" preset, if any), with ``weights="random"`` unless ``config`` names
    its own ``weights``. A deep copy, so a detector that mutates its arguments cannot change
    the spec."""
    overlay = spec.presets.get("smoke", {}) if config is None else config
    unknown = sorted(set(overlay) - set(spec.default_config))
    if unknown:
        raise ValueError(f"check_detector({spec.name!r}): config keys {unknown} are not in the "
                         f"method's default_config; valid keys: {sorted(spec.default_config)}")
    cfg = copy.deepcopy({**spec.default_config, **overlay})
    for key in ("weights", "clip_weights"):
        if key in cfg and key not in (config or {}):
            cfg[key] = "random"   # offline: pretrained weights must be asked for by name
    return cfg


@dataclass
class _Fit:
    detector: Detector
    returned: Any              # what fit() returned (should be `detector`)
    prediction: Prediction     # on the harness's test slices
    params_before: dict | None  # get_params() before fit (None: it raised)


class DetectorChecks:
    """One detector method under test: its config, data, a temporary root and the fitted
    detectors the checks share (each (data, run) is fitted once, on first use).

    spec    the MethodSpec; config, seed, device as for :func:`check_detector`.
    root    folder for workdirs and saved states (None: a temporary folder removed by
            :meth:`close`, or on leaving a ``with`` block).
    """

    def __init__(self, spec: MethodSpec, *, config: dict[str, Any] | None = None, seed: int = 0,
                 device: str = "cpu", root: str | Path | None = None):
        self.spec = spec
        self.name = spec.name
        self.config = contract_config(spec, config)
        self.seed = int(seed)
        self.device = device
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix=f"adbench-{spec.name}-")
        self.root = Path(root if root is not None else self._tmp)
        # Two training sets of different sizes: state sized by the first fit must not survive
        # a refit on the second.
        self.train = {"A": synthetic_slices(12, seed=1000), "B": synthetic_slices(10, seed=2000)}
        self.test = synthetic_slices(3, seed=3000, blob=True)
        self._fits: dict[tuple[str, int], _Fit] = {}
        self._counter = 0

    # -- helpers the checks use ---------------------------------------------------------------
    def new(self) -> Detector:
        """A fresh, unfitted detector: ``spec.factory(**config)`` (config deep-copied)."""
        return self.spec.factory(**copy.deepcopy(self.config))

    def folder(self, label: str) -> Path:
        """A new, empty folder under root (a fresh workdir per fit: SCRPS resumes from its
        workdir by design, which would hide a fit that ignores its data)."""
        self._counter += 1
        path = self.root / f"{self._counter:02d}-{label}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    def context(self, label: str) -> Context:
        return Context(device=self.device, seed=self.seed, workdir=self.folder(label))

    def predict(self, det: Detector) -> Prediction:
        x = self.test.images.clone()
        try:
            pred = det.predict(x, Context(device=self.device, seed=self.seed))
        except Exception as exc:   # chained: the traceback stays; the message names the method
            raise self.fail("predict", f"predict(x) raised {type(exc).__name__}: {exc}") from exc
        if not torch.equal(x, self.test.images):
            raise self.fail("predict", "predict(x) changed its input x in place (copy it first)")
        return pred

    def fit(self, det: Detector, data: str) -> Any:
        """``det.fit(train[data], ctx)`` in a fresh workdir; returns what fit returned."""
        try:
            return det.fit(self.train[data], self.context(f"fit-{data}"))
        except Exception as exc:
            raise self.fail("fit", f"fit() on {len(self.train[data])} synthetic slices of "
                            f"{SLICE_SHAPE} raised {type(exc).__name__}: {exc}") from exc

    def fitted(self, data: str = "A", run: int = 0) -> _Fit:
        """The detector fitted on ``data`` (fit number ``run``), fitted on first use."""
        key = (data, run)
        if key not in self._fits:
            det = self.new()
            try:
                before = copy.deepcopy(det.get_params())
            except Exception:   # reported by check_get_params
                before = None
            returned = self.fit(det, data)
            self._fits[key] = _Fit(det, returned, self.predict(det), before)
        return self._fits[key]

    def take(self, data: str, run: int) -> _Fit:
        """Like :meth:`fitted`, but removed from the cache: the caller may change it."""
        fit = self.fitted(data, run)
        del self._fits[(data, run)]
        return fit

    def fail(self, check: str, what: str) -> AssertionError:
        factory = getattr(self.spec.factory, "__name__", repr(self.spec.factory))
        return AssertionError(f"detector {self.name!r} ({factory}) failed {check}: {what}")

    def close(self) -> None:
        self._fits.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> DetectorChecks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- comparisons ------------------------------------------------------------------------------
def _equal(a: Any, b: Any) -> bool:
    """Parameter equality that also works for tensors and arrays (their == is elementwise)."""
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        return type(a) is type(b) and a.shape == b.shape and bool((a == b).all())
    try:
        return bool(a == b)
    except Exception:   # an == that cannot give one bool: the values are not plain equal
        return False


def _differs(a: torch.Tensor | None, b: torch.Tensor | None) -> str | None:
    """None when a and b are bit-identical (NaNs included), else a short description."""
    if a is None or b is None:
        return None if a is None and b is None else f"one is None ({a is None}, {b is None})"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    a, b = a.detach().cpu(), b.detach().cpu()
    same = (a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a == b
    if bool(same.all()):
        return None
    diff = (a.double() - b.double()).abs().nan_to_num(float("inf"))
    return f"{int((~same).sum())} of {a.numel()} values differ, max |diff| {diff.max().item():.3g}"


def _same_predictions(h: DetectorChecks, check: str, a: Prediction, b: Prediction,
                      how: str) -> None:
    for field in ("maps", "reconstructions"):
        d = _differs(getattr(a, field), getattr(b, field))
        if d is not None:
            raise h.fail(check, f"{field} are not bit-identical {how}: {d}")


# -- the checks -------------------------------------------------------------------------------
def check_fit_returns_self(h: DetectorChecks) -> None:
    """``fit`` returns ``self`` (so ``det = Method(...).fit(train)`` works) and does not change
    the constructor parameters (scikit-learn: learned state goes to attributes ending in _)."""
    fit = h.fitted("A")
    if fit.returned is not fit.detector:
        raise h.fail("check_fit_returns_self", f"fit() returned {type(fit.returned).__name__} "
                     f"{fit.returned!r:.80}, expected the detector itself (return self)")
    before = fit.params_before
    if before is None:
        return
    after = fit.detector.get_params()
    changed = sorted(k for k in before if k not in after or not _equal(after[k], before[k]))
    if changed:
        raise h.fail("check_fit_returns_self", f"fit() changed constructor parameters {changed} "
                     f"(before fit {[before[k] for k in changed]}, after "
                     f"{[after.get(k) for k in changed]}); store learned values in attributes "
                     f"ending in '_'")


def check_not_fitted(h: DetectorChecks) -> None:
    """``predict`` and ``state_dict`` of an unfitted detector raise NotFittedError."""
    x = h.test.images[:1].clone()
    calls: list[tuple[str, Callable[[Detector], Any]]] = [
        ("predict(x)", lambda d: d.predict(x, Context(device=h.device, seed=h.seed))),
        ("state_dict()", lambda d: d.state_dict())]
    for what, call in calls:
        try:
            call(h.new())
        except NotFittedError:
            continue
        except Exception as exc:
            raise h.fail("check_not_fitted", f"{what} before fit raised {type(exc).__name__}: "
                         f"{exc}; expected adbench.errors.NotFittedError (call "
                         f"self.check_fitted() first)") from exc
        raise h.fail("check_not_fitted", f"{what} before fit raised nothing; expected "
                     f"adbench.errors.NotFittedError")


def check_prediction(h: DetectorChecks) -> None:
    """Maps (B, H, W) float32, finite; reconstructions (B, 1, H, W) in [-1, 1] for
    reconstruction detectors; every extra has leading dimension B."""
    pred = h.fitted("A").prediction
    b, _, hh, ww = h.test.images.shape
    maps = pred.maps
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != (b, hh, ww):
        raise h.fail("check_prediction", f"maps have shape {tuple(getattr(maps, 'shape', ()))}, "
                     f"expected (B, H, W) = {(b, hh, ww)}")
    if maps.dtype != torch.float32:
        raise h.fail("check_prediction", f"maps have dtype {maps.dtype}, expected torch.float32")
    if not bool(torch.isfinite(maps).all()):
        raise h.fail("check_prediction", f"maps hold {int((~torch.isfinite(maps)).sum())} "
                     f"non-finite values (NaN or inf)")
    rec = pred.reconstructions
    if h.new().reconstructs:
        if rec is None or tuple(rec.shape) != (b, 1, hh, ww):
            raise h.fail("check_prediction", "a reconstruction detector must return "
                         f"reconstructions of shape {(b, 1, hh, ww)}, got "
                         f"{None if rec is None else tuple(rec.shape)}")
        if not bool(torch.isfinite(rec).all()) or rec.min() < -1 or rec.max() > 1:
            raise h.fail("check_prediction", f"reconstructions must be finite and in [-1, 1], "
                         f"got range [{rec.min().item():.4g}, {rec.max().item():.4g}]")
    for key, value in pred.extras.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != b:
            raise h.fail("check_prediction", f"extras[{key!r}] has shape "
                         f"{tuple(getattr(value, 'shape', ()))}; expected leading dimension B={b}")


def check_state_round_trip(h: DetectorChecks) -> None:
    """state_dict → torch.save → torch.load(weights_only=True) → a fresh detector's
    load_state_dict gives bit-identical maps (and reconstructions)."""
    fit = h.fitted("A")
    state = fit.detector.state_dict()
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not isinstance(state, dict) or bad:
        raise h.fail("check_state_round_trip", f"state_dict() must map names to tensors; "
                     f"non-tensor entries: {bad}")
    path = h.folder("state") / "state.pt"
    torch.save(state, path)
    try:
        loaded = torch.load(path, weights_only=True)
    except Exception as exc:
        raise h.fail("check_state_round_trip", f"torch.load({path}, weights_only=True) failed: "
                     f"{type(exc).__name__}: {exc}") from exc
    fresh = h.new()
    fresh.load_state_dict(loaded)
    # a second predict of the original first: a difference there is not the state's fault
    _same_predictions(h, "check_state_round_trip", h.predict(fit.detector), fit.prediction,
                      "between two predict() calls of one fitted detector")
    _same_predictions(h, "check_state_round_trip", h.predict(fresh), fit.prediction,
                      "after load_state_dict(state_dict()) through torch.save/torch.load")
    # the runner saves what it loaded (e.g. a cached model copied into a run folder)
    again = fresh.state_dict()
    if set(again) != set(state):
        raise h.fail("check_state_round_trip", f"state_dict() of a loaded detector has other "
                     f"keys: missing {sorted(set(state) - set(again))}, extra "
                     f"{sorted(set(again) - set(state))}")
    for key in sorted(state):
        d = _differs(again[key], state[key])
        if d is not None:
            raise h.fail("check_state_round_trip", f"state_dict()[{key!r}] of a loaded "
                         f"detector differs from the state it loaded: {d}")


def check_deterministic(h: DetectorChecks) -> None:
    """Two fits with the same seed (and data, in fresh workdirs) give bit-identical maps:
    randomness must come from ctx.seed, not from global random state."""
    _same_predictions(h, "check_deterministic", h.fitted("A", 0).prediction,
                      h.fitted("A", 1).prediction, "between two fits with the same seed")


def check_refit_starts_afresh(h: DetectorChecks) -> None:
    """fit(A) then fit(B) on one instance gives the maps of a fresh detector fitted on B."""
    refit = h.take("A", 1).detector        # fitted on A already; shared fits are not touched
    returned = h.fit(refit, "B")
    if returned is not refit:
        raise h.fail("check_refit_starts_afresh", "the second fit() did not return self")
    _same_predictions(h, "check_refit_starts_afresh", h.predict(refit), h.fitted("B").prediction,
                      "between fit(A) + fit(B) and a fresh fit(B): fit must reset learned state")


def check_get_params(h: DetectorChecks) -> None:
    """get_params() returns exactly the constructor arguments (names and values), they are
    the spec's default_config keys, and spec.factory(**det.get_params()) rebuilds an equal
    detector (scikit-learn's clone)."""
    det = h.new()
    try:
        params = det.get_params()
    except Exception as exc:
        raise h.fail("check_get_params", f"get_params() raised {type(exc).__name__}: {exc} "
                     f"(store each __init__ argument under its own name)") from exc
    if set(params) != set(h.config):
        raise h.fail("check_get_params", f"get_params() keys differ from the constructor "
                     f"arguments: missing {sorted(set(h.config) - set(params))}, extra "
                     f"{sorted(set(params) - set(h.config))} (store each __init__ argument "
                     f"under its own name; keep spec.default_config in sync)")
    wrong = sorted(k for k in params if not _equal(params[k], h.config[k]))
    if wrong:
        raise h.fail("check_get_params", f"get_params() values differ from the constructor "
                     f"arguments for {wrong}: got {[params[k] for k in wrong]}, constructed "
                     f"with {[h.config[k] for k in wrong]} (__init__ must store, not convert)")
    try:
        clone = h.spec.factory(**copy.deepcopy(params))
    except Exception as exc:
        raise h.fail("check_get_params", f"spec.factory(**get_params()) raised "
                     f"{type(exc).__name__}: {exc}") from exc
    again = clone.get_params() if type(clone) is type(det) else {}
    if set(again) != set(params) or not all(_equal(again[k], params[k]) for k in params):
        raise h.fail("check_get_params", f"spec.factory(**get_params()) built {clone!r:.120}, "
                     f"expected {det!r:.120}")


_CHECKS: tuple[Callable[[DetectorChecks], None], ...] = (
    check_fit_returns_self, check_not_fitted, check_prediction, check_state_round_trip,
    check_deterministic, check_refit_starts_afresh, check_get_params)


def check_functions() -> tuple[Callable[[DetectorChecks], None], ...]:
    """Every check, in the order :func:`check_detector` runs them; each takes a
    :class:`DetectorChecks` and raises AssertionError naming the detector and the failure."""
    return _CHECKS


def check_detector(spec: MethodSpec, *, config: dict[str, Any] | None = None, seed: int = 0,
                   device: str = "cpu") -> None:
    """Run every contract check on ``spec``'s detector; raises AssertionError at the first
    failure, naming the detector, the check and what went wrong.

    spec     a MethodSpec, e.g. ``adbench.plugins.get_registry().method("padim")``.
    config   overrides of ``spec.default_config`` (default: its "smoke" preset).
    seed     ``Context.seed`` of every fit.  device  ``Context.device``.

    Fits the detector four times on 12 or 10 slices of 160 x 128 (CPU minutes at most for a
    method whose smoke preset is sized for CI).
    """
    with DetectorChecks(spec, config=config, seed=seed, device=device) as h:
        for check in _CHECKS:
            check(h)


def parametrize_detector_checks(names: Iterable[str]):
    """``pytest.mark.parametrize("method, check", ...)`` over every (method name, check),
    with ids like ``padim-check_state_round_trip``."""
    import pytest

    pairs = [(name, check) for name in names for check in _CHECKS]
    return pytest.mark.parametrize("method, check", pairs,
                                   ids=[f"{n}-{c.__name__}" for n, c in pairs])

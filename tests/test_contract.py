"""The detector contract (adbench.testing) over every registered method, and proof that the
checks catch a broken detector (so the suite cannot pass vacuously).

One test per (method, check); a module-scoped cache fits each method only as often as the
checks need (four fits), in the method's "smoke" preset with random weights.
"""
from __future__ import annotations

import pytest
import torch

from adbench import Detector, MethodSpec, Prediction
from adbench.plugins import get_registry
from adbench.testing import (
    DetectorChecks,
    check_detector,
    check_functions,
    parametrize_detector_checks,
    synthetic_slices,
)

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = sorted(get_registry().methods)


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """name → DetectorChecks, created on first use and kept for the module, so the fitted
    detectors are shared by that method's checks."""
    made: dict[str, DetectorChecks] = {}

    def get(name: str) -> DetectorChecks:
        if name not in made:
            made[name] = DetectorChecks(get_registry().method(name),
                                        root=tmp_path_factory.mktemp(f"contract-{name}"))
        return made[name]

    yield get
    for h in made.values():
        h.close()


def test_every_plugin_loads():
    """A plugin that fails to import drops its methods from the registry, and with them from
    the parametrisation below: that must fail loudly, not shrink the suite."""
    broken = get_registry().broken
    assert not broken, f"plugins failed to load, their methods are not checked: {broken}"
    assert METHODS, "no method is registered"


@parametrize_detector_checks(METHODS)
def test_detector_contract(checks, method, check):
    check(checks(method))


def test_synthetic_slices_are_seeded_and_brain_like():
    a, b = synthetic_slices(4, seed=7), synthetic_slices(4, seed=7)
    assert a.images.shape == (4, 1, 160, 128) and a.brain.shape == (4, 160, 128)
    assert torch.equal(a.images, b.images)
    assert torch.all(a.images[:, 0][~a.brain] == -1) and a.images.abs().max() <= 1
    test = synthetic_slices(3, seed=1, blob=True)
    assert test.lesion.any(dim=(1, 2)).all() and torch.all(test.images[:, 0][test.lesion] == 1)
    assert not torch.equal(synthetic_slices(4, seed=8).images, a.images)


# -- a toy detector, correct and broken in one way at a time -------------------------------
class ToyMean(Detector):
    """Pixel-wise |x - mean| with a seeded random offset: every contract point exercised."""

    def __init__(self, scale: float = 1.0, bug: str = "none"):
        self.scale = scale
        self.bug = bug

    def fit(self, train, ctx=None):
        out = super().fit(train, ctx)
        return None if self.bug == "fit-returns-none" else out

    def _fit(self, train, ctx):
        mean = train.images[:, 0].mean(0)
        if self.bug == "refit-accumulates" and hasattr(self, "mean_"):
            mean = (mean + self.mean_) / 2          # remembers the previous fit
        g = None if self.bug == "global-rng" else ctx.generator(0)
        self.mean_ = mean + 1e-3 * torch.rand(mean.shape, generator=g)
        if self.bug == "mutates-params":
            self.scale = float(self.scale) * 2

    def _predict(self, x, ctx):
        m = (x[:, 0] - self.mean_).abs() * self.scale
        if self.bug == "float64-maps":
            m = m.double()
        return Prediction(maps=m)

    def _state_dict(self):
        return {"mean": self.mean_}

    def _load_state_dict(self, state):
        self.mean_ = state["mean"] + (1e-6 if self.bug == "lossy-state" else 0.0)


class ToyUnchecked(ToyMean):
    """Predicts before fit without raising NotFittedError (its own predict skips the check)."""

    def predict(self, x, ctx=None):
        if not hasattr(self, "mean_"):
            return Prediction(maps=torch.zeros(x.shape[0], *x.shape[2:]))
        return super().predict(x, ctx)


class ToyClipping(ToyMean):
    """Validates in __init__ (clips scale), so get_params() is not what it was given."""

    def __init__(self, scale: float = 1.0, bug: str = "none"):
        self.scale = max(scale, 2.0)
        self.bug = bug


class ToyRenamed(ToyMean):
    """Stores a constructor argument under another name: get_params() cannot find it."""

    def __init__(self, scale: float = 1.0, bug: str = "none"):
        self.factor = scale
        self.bug = bug

    def _predict(self, x, ctx):
        return Prediction(maps=(x[:, 0] - self.mean_).abs() * self.factor)


def _spec(factory=ToyMean, bug="none"):
    return MethodSpec(name=f"toy-{bug}", factory=factory, kind="baseline",
                      default_config={"scale": 1.0, "bug": "none"}, description="test toy",
                      presets={"smoke": {"bug": bug}})


def test_a_correct_toy_detector_passes():
    check_detector(_spec())


@pytest.mark.parametrize("factory, bug, message", [
    (ToyMean, "fit-returns-none", (r"'toy-fit-returns-none' \(ToyMean\) failed "
                                   r"check_fit_returns_self: fit\(\) returned NoneType")),
    (ToyMean, "mutates-params", (r"check_fit_returns_self: fit\(\) changed constructor "
                                 r"parameters \['scale'\]")),
    (ToyUnchecked, "none", r"check_not_fitted: predict\(x\) before fit raised nothing"),
    (ToyMean, "float64-maps", r"check_prediction: maps have dtype torch.float64"),
    (ToyMean, "lossy-state", (r"check_state_round_trip: maps are not bit-identical after "
                              r"load_state_dict")),
    (ToyMean, "global-rng", r"check_deterministic: maps are not bit-identical between two fits"),
    (ToyMean, "refit-accumulates", r"check_refit_starts_afresh: maps are not bit-identical"),
    (ToyClipping, "none", (r"check_get_params: get_params\(\) values differ from the "
                           r"constructor arguments for \['scale'\]")),
    (ToyRenamed, "none", r"check_get_params: get_params\(\) raised AttributeError"),
])
def test_a_broken_detector_is_caught(factory, bug, message):
    with pytest.raises(AssertionError, match=message):
        check_detector(_spec(factory, bug))


def test_each_check_runs_alone_and_names_itself():
    """Every check is callable on its own (the pytest parametrisation relies on it)."""
    spec = _spec(bug="lossy-state")
    failed = []
    with DetectorChecks(spec) as h:
        for check in reversed(check_functions()):     # any order: shared fits are fitted lazily
            try:
                check(h)
            except AssertionError as exc:
                failed.append((check.__name__, str(exc)))
    assert [name for name, _ in failed] == ["check_state_round_trip"], failed
    assert "toy-lossy-state" in failed[0][1]


def test_config_overrides_the_smoke_preset_and_weights_default_to_random():
    from adbench.testing import contract_config

    class ToyWeights(ToyMean):
        def __init__(self, scale: float = 1.0, bug: str = "none", weights: str = "imagenet"):
            super().__init__(scale, bug)
            self.weights = weights

    spec = MethodSpec(name="w", factory=ToyWeights, kind="baseline", description="",
                      default_config={"scale": 1.0, "bug": "none", "weights": "imagenet"},
                      presets={"smoke": {"scale": 2.0}})
    assert contract_config(spec) == {"scale": 2.0, "bug": "none", "weights": "random"}
    assert contract_config(spec, {"weights": "/w.pt"}) == {"scale": 1.0, "bug": "none",
                                                       "weights": "/w.pt"}
    with pytest.raises(ValueError, match=r"config keys \['nope'\] are not in"):
        contract_config(spec, {"nope": 1})

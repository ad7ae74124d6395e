"""Progress bars and the projected-time warning (hessnorm.estimators._progress)."""

import time
import warnings

import pytest
import torch

from hessnorm.estimators import _progress
from hessnorm.estimators._progress import SlowRunWarning, progress_bar
from hessnorm.estimators.blockwise import blockwise_smoothness
from hessnorm.estimators.cauchy import l11_norm
from hessnorm.estimators.lanczos import spectral_norm, top_eigenpairs
from hessnorm.estimators.local_smoothness import local_smoothness
from hessnorm.partition import Partition


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class SlowOp:
    """A dense Hessian whose every HVP takes ``cost`` seconds of a fake clock."""

    def __init__(self, H, clock, cost):
        self.H, self.clock, self.cost = H, clock, cost
        self.d, self.dtype, self.device = H.shape[0], H.dtype, H.device
        self.matvec_count = 0

    def hvp(self, v):
        k = 1 if v.dim() == 1 else v.shape[0]
        self.matvec_count += k
        self.clock.t += self.cost * k
        return v @ self.H


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(_progress, "_clock", c)
    return c


def _H(d=12):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return A + A.T


def _op(name, clock, cost):
    return SlowOp(_H(390 if "exact" in name else 12), clock, cost)


def _slow_warnings(record):
    return [w for w in record if issubclass(w.category, SlowRunWarning)]


RUNS = {
    "spectral_norm": lambda op: spectral_norm(op, max_iter=50, progress=False),
    "top_eigenpairs": lambda op: top_eigenpairs(op, 2, max_iter=50, progress=False),
    "l11_norm": lambda op: l11_norm(op, n=40, chunk_size=4, progress=False),
    "blockwise_smoothness": lambda op: blockwise_smoothness(
        op,
        Partition.from_labels([0] * 6 + [1] * 6),
        exact_threshold=0,
        pairs="diagonal",
        progress=False,
    ),
    # identity block columns, in batches of at most 256 HVPs
    "blockwise_smoothness (exact columns)": lambda op: blockwise_smoothness(
        op,
        Partition.from_labels([0] * 130 + [1] * 130 + [2] * 130),
        exact_threshold=10**6,
        progress=False,
    ),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_slow_run_warns_once_with_projection_and_advice(clock, name):
    op = _op(name, clock, 100.0)  # 100 s per HVP: any plan of > 6 HVPs is slow
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        RUNS[name](op)
    slow = _slow_warnings(record)
    assert len(slow) == 1, [str(w.message) for w in record]
    msg = str(slow[0].message)
    assert name.split("_")[0] in msg and "To cut it" in msg and "would take about" in msg


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fast_run_does_not_warn(clock, name):
    op = _op(name, clock, 0.1)  # 0.1 s per HVP: every plan here is < 10 minutes
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        RUNS[name](op)
    assert _slow_warnings(record) == []


def test_projection_uses_the_second_update(clock):
    """The first update's one-off cost counts once, not for every remaining unit."""
    with pytest.warns(
        SlowRunWarning, match=r"4 HVP\(s\) took 100 s \(10 s each\).*300 would take about 51 min"
    ):
        with progress_bar(300, "x", enabled=False) as bar:
            clock.t = 80.0  # first two HVPs: graph building makes them slow
            bar.update(2)
            assert bar.projected is None
            clock.t = 100.0
            bar.update(2)
            assert bar.projected == pytest.approx(100.0 + 296 * 10.0)
            clock.t = 1e6  # later updates do not warn again
            bar.update(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with progress_bar(300, "z", enabled=False) as bar:
            clock.t += 200.0  # a slow first HVP, then fast ones: no warning
            bar.update(1)
            clock.t += 1.0
            bar.update(1)
            assert bar.projected == pytest.approx(201.0 + 298.0)
    with pytest.warns(SlowRunWarning, match=r"at most \(it stops when converged\).*fewer"):
        with progress_bar(10, "y", enabled=False, upper=True, advice="fewer") as bar:
            clock.t += 1000.0  # the first unit alone is over the threshold
            bar.update(1)


def test_real_sleeping_operator_warns(monkeypatch):
    """With the real clock: a sleeping HVP and a lowered threshold."""
    monkeypatch.setattr(_progress, "WARN_SECONDS", 0.05)

    class Sleepy(SlowOp):
        def hvp(self, v):
            time.sleep(0.01)
            return super().hvp(v)

    with pytest.warns(SlowRunWarning, match="spectral_norm"):
        spectral_norm(Sleepy(_H(), FakeClock(), 0.0), max_iter=30, progress=False)


def test_local_smoothness_counts_gradients(clock):
    A = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    w, w1 = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)

    def slow_grad(x):
        clock.t += 100.0
        return A @ x

    with pytest.warns(SlowRunWarning, match=r"local_smoothness.*grad.*11 would take about 18 min"):
        est = local_smoothness(None, w, w1, grad_fn=slow_grad)
    assert est.details["n_grad"] == 11


# ---------------------------------------------------------------------- spectrum estimators
# (issue 15) trace, SLQ densities and the diagonal: one bar per HVP loop, total = the plan.
from hessnorm.estimate import Estimate  # noqa: E402
from hessnorm.estimators.density import block_spectra, spectral_density  # noqa: E402
from hessnorm.estimators.diagonal import Diagonal, diagonal, diagonal_share  # noqa: E402
from hessnorm.estimators.trace import exact_trace, trace  # noqa: E402

SPECTRUM = {
    "trace (hutch++)": lambda op, p: trace(op, n=10, progress=p),  # n < d = 12
    "trace (hutch++, chunked)": lambda op, p: trace(op, n=10, chunk_size=2, progress=p),
    "trace (hutchinson)": lambda op, p: trace(
        op, n=10, method="hutchinson", chunk_size=3, progress=p
    ),
    "trace (exact)": lambda op, p: trace(op, n=40, chunk_size=3, progress=p),
    "exact_trace": lambda op, p: exact_trace(op, chunk_size=3, progress=p),
    "diagonal (Rademacher)": lambda op, p: diagonal(
        op, n=20, exact=False, chunk_size=4, progress=p
    ),
    "diagonal (exact)": lambda op, p: diagonal(op, exact=True, chunk_size=5, progress=p),
    "diagonal_share": lambda op, p: diagonal_share(
        op, n_diag=20, n_l11=40, exact_diagonal=False, chunk_size=4, progress=p
    ),
    "spectral_density": lambda op, p: spectral_density(op, n_probes=3, steps=8, progress=p),
    "spectral_density (groups, chunks)": lambda op, p: spectral_density(
        op, n_probes=3, steps=8, memory_budget=1, chunk_size=2, progress=p
    ),
    "block_spectra": lambda op, p: block_spectra(
        op, Partition.from_labels([0] * 5 + [1] * 7), n_probes=2, steps=4, progress=p
    ),
}


def _n_hvp(result, d):
    if isinstance(result, tuple):  # exact_trace: d unit vectors
        return d
    if isinstance(result, dict):  # block spectra
        return sum(sd.n_hvp for sd in result.values())
    return result.n_hvp


def _fingerprint(result):
    """Everything a result says except its wall-clock seconds."""
    if isinstance(result, Estimate):
        return (result.value, result.low, result.high, result.n_hvp, repr(result.details))
    if isinstance(result, Diagonal):
        return (
            result.values.tolist(),
            result.std_error.tolist(),
            dict(result.per_tensor),
            result.total_std_error,
            result.n_hvp,
        )
    if isinstance(result, tuple):
        return result[0], result[1].tolist()
    return result  # SpectralDensity (or a dict of them): equality ignores seconds


@pytest.fixture
def bars(monkeypatch):
    """Every ProgressBar the estimators open, in order."""
    made = []

    class Recording(_progress.ProgressBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.enabled = kwargs.get("enabled", True)  # tqdm's own flag flips at close
            made.append(self)

    monkeypatch.setattr(_progress, "ProgressBar", Recording)
    return made


@pytest.mark.parametrize("name", sorted(SPECTRUM))
def test_spectrum_bar_total_is_the_hvps_spent(clock, bars, name):
    op = SlowOp(_H(12), clock, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowRunWarning)  # 0.1 s per HVP: no warning
        result = SPECTRUM[name](op, False)
    n_hvp = _n_hvp(result, op.d)
    assert op.matvec_count == n_hvp  # the result reports what was spent
    ours = [b for b in bars if "l11_norm" not in b.desc]  # diagonal_share also runs l11_norm
    assert len(ours) == 1, [b.desc for b in bars]
    assert name.split(" ")[0].split("_")[0] in ours[0].desc
    assert sum(b.total for b in bars) == sum(b.done for b in bars) == n_hvp
    assert all(b.projected is not None and b.projected < _progress.WARN_SECONDS for b in bars)


@pytest.mark.parametrize("name", sorted(SPECTRUM))
def test_spectrum_slow_run_warns_before_the_work_is_done(clock, bars, name):
    op = SlowOp(_H(12), clock, 100.0)  # 100 s per HVP: every plan here is over 10 minutes
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = SPECTRUM[name](op, False)
    slow = _slow_warnings(record)
    assert len(slow) == len(bars) >= 1, [str(w.message) for w in record]  # one per bar
    for w, bar in zip(slow, bars):
        msg = str(w.message)
        assert bar.desc in msg and "would take about" in msg and "To cut it" in msg
        assert bar.advice and bar.advice in msg
    # As an error, the warning stops the run before its HVPs are spent.
    op = SlowOp(_H(12), clock, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowRunWarning)
        with pytest.raises(SlowRunWarning):
            SPECTRUM[name](op, False)
    if name == "trace (hutch++)":
        # Unchunked Hutch++ makes two HVP calls (HS, then H[Q, G]); the projection needs
        # two updates, so here it comes with the last HVPs (at d = 12; from d > 2²⁷/n on
        # the default chunk is below n/3 rows and the calls are many).
        assert op.matvec_count == _n_hvp(result, op.d)
    else:
        assert 0 < op.matvec_count < _n_hvp(result, op.d)


@pytest.mark.parametrize("name", sorted(SPECTRUM))
def test_spectrum_results_identical_with_and_without_bar(name):
    off = SPECTRUM[name](_H(12), False)
    on = SPECTRUM[name](_H(12), True)
    assert _fingerprint(on) == _fingerprint(off)


def test_density_bar_is_an_upper_bound_when_krylov_closes(bars):
    """Two distinct eigenvalues: each probe stops after 2 steps of the 8 planned."""
    H = torch.diag(torch.tensor([1.0] * 6 + [3.0] * 6, dtype=torch.float64))
    sd = spectral_density(H, n_probes=3, steps=8, progress=False)
    (bar,) = bars
    assert bar.upper and bar.total == 3 * 8
    assert bar.done == sd.n_hvp == 3 * 2


@pytest.mark.parametrize("progress", [False, True])
def test_analyze_passes_its_progress_setting_to_the_spectrum_estimators(bars, progress):
    """``hessnorm analyze --quiet`` runs the rows with progress=False: no bar may show."""
    from hessnorm.operator import HessianOperator
    from hessnorm.registry import parse_estimators

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2
    op = HessianOperator.from_module(net.double(), torch.nn.functional.cross_entropy, (x, y))
    for sel in parse_estimators("trace,density,diagonal-share,block-spectra:by_tensor"):
        name = sel.label
        before = len(bars)
        sel.spec.run(
            op, sel.resolve({"n_cauchy": 10} if name == "diagonal-share" else {}), progress=progress
        )
        assert len(bars) > before, name
        assert all(b.enabled is progress for b in bars[before:]), name

import math

import pytest
import torch

from hessnorm.errors import ConfigError, SelectionError
from hessnorm.estimators.density import (
    SpectralDensity,
    _js_distance,
    _mean_pairwise,
    block_heterogeneity,
    block_spectra,
    spectral_density,
)
from hessnorm.partition import Partition


def _spectrum_matrix(ev, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = len(ev)
    U = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return U @ torch.diag(torch.as_tensor(ev, dtype=torch.float64)) @ U.T


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "transformer"])
def test_moments_and_lambda_max(problems, name):
    """Moments 1, 2 cover tr(H)/d, tr(H²)/d within their Monte-Carlo error; top node ≈ λ_max."""
    _, H = problems[name]
    lam = torch.linalg.eigvalsh(H)
    t1, t2 = float(H.trace()), float((H * H).sum())
    hits1 = hits2 = 0
    for s in range(10):
        sd = spectral_density(
            H, n_probes=10, steps=4, seed=s, progress=False
        )  # degree <= 7 is exact
        e1, e2 = sd.trace_power(1), sd.trace_power(2)
        hits1 += e1.covers(t1)
        hits2 += e2.covers(t2)
        assert abs(sd.moments(2)[1] * H.shape[0] - e1.value) < 1e-8 * (1 + abs(t1))
        assert abs(sd.moments(2)[0] - 1) < 1e-12  # weights are probability vectors
    assert hits1 >= 8 and hits2 >= 8, (hits1, hits2)
    sd = spectral_density(H, n_probes=2, progress=False)  # default steps
    assert abs(sd.lambda_max - float(lam[-1])) < 1e-3 * max(1.0, abs(float(lam[-1]))), (
        sd.lambda_max,
        float(lam[-1]),
    )
    assert sd.lambda_min >= float(lam[0]) - 1e-9 and sd.lambda_max <= float(lam[-1]) + 1e-9


@pytest.mark.slow  # ~20 s on an idle 2-core machine, minutes under load
def test_wasserstein_shrinks_with_probes(problems):
    _, H = problems["mlp"]
    lam = torch.linalg.eigvalsh(H)

    def w1(k):
        return (
            sum(
                spectral_density(H, n_probes=k, steps=32, seed=s, progress=False).wasserstein(lam)
                for s in range(3)
            )
            / 3
        )

    w = [w1(k) for k in (1, 4, 16, 64)]
    assert w[0] > w[1] > w[2] > w[3], w
    assert w[3] < 0.5 * w[0], w


def test_full_steps_recover_exact_spectrum():
    ev = [-2.0, -0.5, 0.1, 1.0, 3.0, 7.0]
    H = _spectrum_matrix(ev)
    sd = spectral_density(H, n_probes=3, steps=50, progress=False)
    assert sd.steps == 6
    for p in range(3):
        assert torch.allclose(sd.nodes[p], torch.tensor(ev, dtype=torch.float64), atol=1e-10)
    # with Rademacher starts, a diagonal matrix's weights are exactly 1/d
    sd = spectral_density(
        torch.diag(torch.tensor(ev, dtype=torch.float64)), n_probes=2, progress=False
    )
    assert torch.allclose(sd.weights, torch.full((2, 6), 1 / 6, dtype=torch.float64))
    assert sd.wasserstein(torch.tensor(ev, dtype=torch.float64)) < 1e-12


def test_breakdown_pads_with_zero_weight():
    H = torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.float64))
    sd = spectral_density(H, n_probes=2, steps=6, progress=False)
    assert sd.n_hvp < 12  # the Krylov space closes after 2 steps
    assert torch.allclose(sd.weights.sum(1), torch.ones(2, dtype=torch.float64))
    assert sd.lambda_max == pytest.approx(2.0) and sd.lambda_min == pytest.approx(1.0)


def test_operator_path_grouping_and_seed(problems):
    op, H = problems["mlp"]
    a = spectral_density(op, n_probes=3, steps=12, seed=5, progress=False)
    b = spectral_density(
        H, n_probes=3, steps=12, seed=5, memory_budget=1, progress=False
    )  # one probe per group
    assert torch.allclose(a.nodes, b.nodes, atol=1e-8) and torch.allclose(
        a.weights, b.weights, atol=1e-8
    )
    assert a.n_hvp == 36
    c = spectral_density(H, n_probes=3, steps=12, seed=6, progress=False)
    assert not torch.allclose(c.nodes, b.nodes)
    g = spectral_density(H, n_probes=3, steps=12, seed=5, start="gaussian", progress=False)
    assert g.start == "gaussian" and not torch.allclose(g.nodes, b.nodes)


def test_density_plot_frame_and_estimate():
    H = _spectrum_matrix(torch.linspace(-1, 4, 50).tolist())
    sd = spectral_density(H, n_probes=4, steps=20, progress=False)
    x = torch.linspace(-3, 6, 4001, dtype=torch.float64)
    mass = torch.trapezoid(sd.density(x, sigma=0.1), x)
    assert abs(float(mass) - 1) < 1e-6
    assert sd.density().shape == (1000,)
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert sd.plot(ax) is ax and ax.get_yscale() == "log" and len(ax.lines) == 1
    df = sd.to_frame()
    assert list(df.columns) == ["block", "probe", "node", "weight"] and len(df) == 80
    assert abs(df.groupby("probe").weight.sum() - 1).max() < 1e-12
    est = sd.to_estimate()
    assert est.name == "spectral_density" and est.covers(float(H.trace()))
    assert est.details["lambda_max"] == sd.lambda_max and len(est.details["nodes"]) == 80


def test_block_spectra_match_exact_blocks(problems):
    op, H = problems["conv_bn"]
    part = Partition.by_tensor(op)
    spectra = block_spectra(H, part, n_probes=4, steps=40, seed=1, progress=False)
    assert list(spectra) == op.param_names
    total = 0
    for name, idx in zip(part.names, part.blocks()):
        Hb = H[idx][:, idx]
        lam = torch.linalg.eigvalsh(Hb)
        sd = spectra[name]
        assert sd.d == len(idx) and sd.name == name
        assert abs(sd.lambda_max - float(lam[-1])) < 1e-6 * (1 + abs(float(lam[-1]))), name
        assert sd.trace_power(1).covers(float(Hb.trace())) or len(idx) <= 40, name
        total += sd.n_hvp
    assert total == sum(4 * min(40, len(i)) for i in part.blocks()) or total < 4 * 40 * 8
    same = block_spectra(H, part, n_probes=4, steps=40, seed=1, memory_budget=1, progress=False)
    for name in spectra:
        assert torch.allclose(same[name].nodes, spectra[name].nodes, atol=1e-8)
    by_name = block_spectra(
        op, "by_tensor", n_probes=2, steps=4, seed=1, progress=False
    )  # the operator path
    assert list(by_name) == op.param_names
    dense = block_spectra(H, part, n_probes=2, steps=4, seed=1, progress=False)
    for name in by_name:
        assert torch.allclose(by_name[name].nodes, dense[name].nodes, atol=1e-8), name


def _js_truth(blocks, sigma, grid):
    dens = []
    for ev in blocks:
        ev = torch.as_tensor(ev, dtype=torch.float64)
        phi = torch.exp(-0.5 * ((grid[:, None] - ev[None]) / sigma) ** 2).mean(1)
        dens.append(phi / phi.sum())
    return float(_mean_pairwise(torch.stack(dens)))


@pytest.mark.slow
def test_block_heterogeneity_covers_exact_value():
    evs = [
        torch.linspace(0, 1, 30),
        torch.linspace(0.5, 3, 30),
        torch.cat([torch.zeros(25), torch.full((5,), 4.0)]),
    ]
    H = torch.block_diag(*[_spectrum_matrix(e.tolist(), seed=i) for i, e in enumerate(evs)])
    part = Partition.from_labels(torch.arange(3).repeat_interleave(30))
    hits = 0
    for s in range(8):
        spectra = block_spectra(H, part, n_probes=10, steps=30, seed=s, progress=False)
        est = block_heterogeneity(spectra, sigma=0.1, seed=s, n_boot=100)
        lo, hi, num = est.details["grid"]
        truth = _js_truth(evs, 0.1, torch.linspace(lo, hi, num, dtype=torch.float64))
        hits += est.covers(truth)
        assert 0 < est.value < math.sqrt(math.log(2)) and est.d == 3
        assert len(est.details["pairwise"]) == 3
    assert hits >= 7, hits


def test_block_heterogeneity_zero_for_identical_and_high_for_disjoint():
    H = torch.diag(torch.tensor([1.0, 2.0, 3.0] * 3, dtype=torch.float64))  # weights exactly 1/3
    same = block_spectra(
        H, Partition.from_labels([0, 0, 0, 1, 1, 1, 2, 2, 2]), n_probes=2, steps=3, progress=False
    )
    assert block_heterogeneity(same, sigma=0.05).value < 1e-6
    D = torch.diag(torch.tensor([1.0, 1.0, 50.0, 50.0], dtype=torch.float64))
    far = block_spectra(D, Partition.from_labels([0, 0, 1, 1]), n_probes=1, progress=False)
    est = block_heterogeneity(far, sigma=0.1)
    assert abs(est.value - math.sqrt(math.log(2))) < 1e-6  # disjoint supports: maximal distance
    assert math.isnan(est.confidence) and est.low == est.high  # one probe: no interval


def test_js_distance_matches_scipy():
    from scipy.spatial.distance import jensenshannon

    g = torch.Generator().manual_seed(0)
    P = torch.rand(2, 50, generator=g, dtype=torch.float64)
    P = P / P.sum(1, keepdim=True)
    assert abs(float(_js_distance(P[0], P[1])) - jensenshannon(P[0].numpy(), P[1].numpy())) < 1e-12


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda H: spectral_density(H, n_probes=0, progress=False),
            ConfigError,
            "n_probes must be",
        ),
        (lambda H: spectral_density(H, steps=0, progress=False), ConfigError, "steps must be"),
        (
            lambda H: spectral_density(H, start="uniform", progress=False),
            ConfigError,
            "start must be one of",
        ),
        (
            lambda H: spectral_density(H, memory_budget=0, progress=False),
            ConfigError,
            "memory_budget",
        ),
        (
            lambda H: spectral_density(H, steps=2, progress=False).trace_power(4),
            ConfigError,
            "exact only up to degree 3",
        ),
        (
            lambda H: spectral_density(H, n_probes=1, progress=False).trace_power(1),
            ConfigError,
            "n_probes >= 2",
        ),
        (
            lambda H: spectral_density(H, progress=False).trace_power(1, confidence=2),
            ConfigError,
            "confidence",
        ),
        (lambda H: spectral_density(H, progress=False).moments(-1), ConfigError, "k must be"),
        (
            lambda H: spectral_density(H, progress=False).density(sigma=-1.0),
            ConfigError,
            "sigma must be",
        ),
        (lambda H: block_spectra(H, "by_magic", progress=False), ConfigError, "by_magic"),
        (
            lambda H: block_spectra(H, [0, 1], progress=False),
            SelectionError,
            "must be a hessnorm.Partition",
        ),
        (
            lambda H: block_spectra(H, Partition.single(3), progress=False),
            SelectionError,
            "covers 3 coordinates",
        ),
        (
            lambda H: block_heterogeneity({"a": spectral_density(H, progress=False)}),
            ConfigError,
            ">= 2 spectra",
        ),
        (
            lambda H: block_heterogeneity(
                {
                    "a": spectral_density(H, progress=False),
                    "b": spectral_density(H, progress=False),
                },
                sigma=0.0,
            ),
            ConfigError,
            "sigma must be positive",
        ),
        (
            lambda H: block_heterogeneity(
                {
                    "a": spectral_density(H, progress=False),
                    "b": spectral_density(H, progress=False),
                },
                num=1,
            ),
            ConfigError,
            "num >= 2",
        ),
    ],
)
def test_errors(call, err, match):
    H = torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64))
    with pytest.raises(err, match=match):
        call(H)


def test_spectral_density_is_frozen():
    sd = spectral_density(torch.eye(3, dtype=torch.float64), n_probes=2, progress=False)
    assert isinstance(sd, SpectralDensity)
    with pytest.raises(AttributeError):
        sd.d = 4

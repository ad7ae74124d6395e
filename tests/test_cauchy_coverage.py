"""Coverage of l11_norm's interval on Hessians whose rows are independent, dependent, or both.

Issue 9.1: the old bootstrap interval sat ≈ √(d_eff/n) standard errors above the
estimate on (block-)diagonal H. Here every case runs 30 seeds per method; the
probe results of all seeds come from one dense matmul and go through the same
summary code as ``l11_norm`` (checked bit for bit against ``l11_norm`` below).
"""

import math

import pytest
import torch

from hessnorm.estimators import exact
from hessnorm.estimators.cauchy import (
    _interval,
    _summarize,
    cauchy_probes,
    cauchy_scale_bias,
    l11_norm,
)
from hessnorm.experiments.table1 import table1_hessian

SEEDS = range(30)
N = 50


def _dense(d, seed=0):
    return torch.Generator().manual_seed(seed)


def _cases(problems):
    g = _dense(0, 11)
    d = 1000
    U = torch.linalg.qr(torch.randn(d, 4, generator=g, dtype=torch.float64))[0]
    lowrank_diag = U @ torch.diag(torch.tensor([40.0, -20.0, 10.0, 5.0], dtype=torch.float64)) @ U.T
    lowrank_diag += torch.diag(torch.rand(d, generator=g, dtype=torch.float64) + 0.5)
    blocks = torch.randn(500, 4, 4, generator=g, dtype=torch.float64)
    blocks = blocks + blocks.transpose(1, 2)
    U3 = torch.linalg.qr(torch.randn(500, 3, generator=_dense(0, 5), dtype=torch.float64))[0]
    return {
        "identity": torch.eye(1500, dtype=torch.float64),
        "positive_diagonal": torch.diag(
            torch.rand(1500, generator=g, dtype=torch.float64) * 10 + 0.1
        ),
        "block_diag_4x4": torch.block_diag(*blocks),
        "lowrank_plus_diag": lowrank_diag,
        "mlp": problems["mlp"][1],
        "conv_bn": problems["conv_bn"][1],
        "transformer": problems["transformer"][1],
        "rank3": U3 @ torch.diag(torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64)) @ U3.T,
        "rotated_quadratic": table1_hessian(0.1),
    }


def _estimates(H, method, seeds=SEEDS, n=N, **kw):
    """(value, low, high) per seed, exactly as l11_norm(H, n=n, seed=s, method=method)."""
    d = H.shape[0]
    V = torch.cat([cauchy_probes(s, 0, n, d) for s in seeds])
    Y = (V @ H.T).view(len(seeds), n, d)
    c_n = cauchy_scale_bias(n, method)
    out = []
    for Ys in Y:
        raw, _, Z, _ = _summarize(Ys, method, c_n, {"all": slice(0, d)}, True, **kw)
        low, high, _, _ = _interval(raw, Z, n, method, c_n, 0.95)
        out.append((raw / c_n, low, high))
    return out


@pytest.fixture(scope="module")
def table(problems):
    rows = {}
    for name, H in _cases(problems).items():
        truth = exact.l11_norm(H)
        for method in ("median", "iqr"):
            est = _estimates(H, method)
            rows[name, method] = {
                "hits": sum(lo <= truth <= hi for _, lo, hi in est),
                "inside": all(lo <= v <= hi for v, lo, hi in est),
                "width": sum((hi - lo) / truth for _, lo, hi in est) / len(est),
            }
    return rows


def test_vectorised_path_is_l11_norm(problems):
    H = _cases(problems)["block_diag_4x4"]
    for method in ("median", "iqr"):
        v, lo, hi = _estimates(H, method, seeds=[3])[0]
        e = l11_norm(H, n=N, seed=3, method=method, progress=False)
        assert (e.value, e.low, e.high) == pytest.approx((v, lo, hi), rel=1e-12)


@pytest.mark.parametrize("method", ["median", "iqr"])
def test_coverage_every_shape(table, method):
    rows = {k[0]: r for k, r in table.items() if k[1] == method}
    for name, r in rows.items():
        print(f"{method:6s} {name:18s} coverage {r['hits']}/30  mean width/truth {r['width']:.4f}")
    pooled = sum(r["hits"] for r in rows.values()) / (30 * len(rows))
    assert 0.88 <= pooled <= 0.995, rows
    assert min(r["hits"] for r in rows.values()) >= 24, rows  # none badly under-covered
    assert all(r["inside"] for r in rows.values()), rows


def test_issue_9_identity_example():
    H = torch.eye(2000, dtype=torch.float64)
    e = l11_norm(H, n=50, seed=0, progress=False)
    assert e.low <= e.value <= e.high and e.covers(2000.0), e
    # the half-width is ≈ t·se with se² ≈ Var of one row's statistic × d
    assert 0.5 * (e.high - e.low) < 2.2 * math.sqrt(2000 * 0.0501), e


def test_se_matches_spread_over_seeds():
    """On a diagonal H (independent rows) E[se²] equals the variance of the estimate."""
    H = torch.diag(torch.linspace(0.1, 5.0, 400, dtype=torch.float64))
    seeds = range(200)
    d, n = 400, N
    V = torch.cat([cauchy_probes(s, 0, n, d) for s in seeds])
    Y = (V @ H).view(len(seeds), n, d)
    c_n = cauchy_scale_bias(n)
    vals, se2 = [], []
    for Ys in Y:
        raw, _, Z, _ = _summarize(Ys, "median", c_n, {"all": slice(0, d)}, True)
        _, _, se, _ = _interval(raw, Z, n, "median", c_n, 0.95)
        vals.append(raw / c_n)
        se2.append(se**2)
    var = torch.tensor(vals).var().item()
    ratio = sum(se2) / len(se2) / var
    assert 0.8 < ratio < 1.25, ratio  # 200 seeds: the sample variance is within ±20% (2 s.e.)


@pytest.mark.parametrize("n", [12, 21])
def test_coverage_at_small_n(problems, n):
    """The t interval with κ_n also holds at the small n that analyze/blockwise users pick."""
    cases = _cases(problems)
    hits = {}
    for name in ("identity", "block_diag_4x4", "rank3", "mlp"):
        H, truth = cases[name], exact.l11_norm(cases[name])
        for method in ("median", "iqr"):
            est = _estimates(H, method, n=n)
            assert all(lo <= v <= hi for v, lo, hi in est)
            hits[name, method] = sum(lo <= truth <= hi for _, lo, hi in est)
    print(n, hits)
    assert sum(hits.values()) / (30 * len(hits)) >= 0.88, hits
    assert min(hits.values()) >= 24, hits


class _Sliced:
    """A dense H with named row slices, as a model operator has per-tensor slices."""

    def __init__(self, H, slices):
        self.H, self.param_slices = H, slices
        self.d, self.dtype, self.device = H.shape[0], H.dtype, H.device

    def hvp(self, V):
        return V @ self.H


def _per_tensor_cases():
    """Three tensors of 100 / 400 / 1000 rows on every row-dependence shape."""
    g = _dense(0, 21)
    d = 1500
    slices = {"small": slice(0, 100), "mid": slice(100, 500), "big": slice(500, 1500)}
    diag = torch.diag(torch.rand(d, generator=g, dtype=torch.float64) * 10 + 0.1)
    band = torch.zeros(d, d, dtype=torch.float64)
    for k in range(4):  # 9-band: neighbouring rows share entries
        off = torch.randn(d - k, generator=g, dtype=torch.float64) / (k + 1)
        band += torch.diag(off, k) + (torch.diag(off, -k) if k else 0)
    U = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))[0]
    U[:100] *= 6.0  # the small tensor carries much of the low-rank mass
    lowrank = U @ torch.diag(torch.tensor([30.0, -10.0, 4.0], dtype=torch.float64)) @ U.T
    lowrank += torch.diag(torch.rand(d, generator=g, dtype=torch.float64) * 0.2)
    return slices, {"diagonal": diag, "banded": band, "lowrank_plus_diag": lowrank}


def test_per_tensor_and_share_intervals_cover():
    """Each tensor's sum and its share of the total get intervals that cover at ~95%,
    on rows that are independent, banded and low-rank alike."""
    from hessnorm.estimators.cauchy import _per_tensor_intervals

    slices, cases = _per_tensor_cases()
    c_n = cauchy_scale_bias(N)
    hits, trials, per_case = 0, 0, {}
    for name, H in cases.items():
        rows = H.abs().sum(dim=1)
        truth = {k: float(rows[s].sum()) for k, s in slices.items()}
        total = sum(truth.values())
        d = H.shape[0]
        V = torch.cat([cauchy_probes(s, 0, N, d) for s in SEEDS])
        Y = (V @ H).view(len(SEEDS), N, d)
        case_hits = dict.fromkeys(slices, 0) | {f"{k} share": 0 for k in slices}
        for Ys in Y:
            raw, pt, Z, ptz = _summarize(Ys, "median", c_n, slices, True, memory_budget=1 << 20)
            iv = _per_tensor_intervals(raw, Z, pt, ptz, c_n, N, "median", c_n, 0.95)
            for k in slices:
                lo, hi = iv["per_tensor_interval"][k]
                case_hits[k] += lo <= truth[k] <= hi
                lo, hi = iv["per_tensor_share_interval"][k]
                case_hits[f"{k} share"] += lo <= truth[k] / total <= hi
                assert lo <= pt[k] / raw <= hi
        per_case[name] = case_hits
        hits += sum(case_hits.values())
        trials += len(case_hits) * len(SEEDS)
    print(per_case)
    assert 0.9 <= hits / trials <= 0.995, per_case
    assert min(h for c in per_case.values() for h in c.values()) >= 24, per_case


def test_l11_norm_per_tensor_details_match_the_summary():
    slices, cases = _per_tensor_cases()
    op = _Sliced(cases["banded"], slices)
    e = l11_norm(op, n=N, seed=4, progress=False, memory_budget=1 << 16)  # many column slices
    whole = l11_norm(op, n=N, seed=4, progress=False)
    assert set(e.details["per_tensor_interval"]) == set(slices)
    for k in slices:
        lo, hi = e.details["per_tensor_interval"][k]
        assert lo <= e.details["per_tensor"][k] <= hi
        assert e.details["per_tensor_interval"][k] == pytest.approx(
            whole.details["per_tensor_interval"][k], rel=1e-9
        )
    shares = e.details["per_tensor_share_interval"]
    assert sum(lo for lo, _ in shares.values()) <= 1.0 <= sum(hi for _, hi in shares.values())
    assert (e.value, e.low, e.high) == pytest.approx(
        (whole.value, whole.low, whole.high), rel=1e-12
    )

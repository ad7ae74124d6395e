"""Paper 003's synthetic (L0, L1) experiments (``hessnorm reproduce l0l1``).

Never imported by the library.

* :func:`shi_adam_distances` runs random-reshuffling Adam (paper 003, Eq. (2)) on the
  finite-sum problem of Shi et al. (2021) used in paper 003, Section 4.1 / Fig. 2.
* :func:`gd_divergence_example` and :func:`sgd_divergence_example` are our own
  constructions of the two phenomena of paper 003, Section 4.3 (Examples 1 and 2),
  whose appendix constructions are not in our copy of the paper; the properties are
  proved in their docstrings.
* :func:`reproduce` writes all of it to ``reports/l0l1/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hessnorm._io import atomic_write, atomic_write_bytes
from hessnorm.errors import ConfigError
from hessnorm.l0l1 import fit_l0l1
from hessnorm.report.figures import plot_l0l1

__all__ = [
    "SHI_N",
    "shi_objective",
    "shi_component_gradients",
    "shi_adam_distances",
    "tail_average",
    "gd_divergence_radius",
    "gd_divergence_example",
    "sgd_divergence_example",
    "trajectory_smoothness",
    "reproduce",
]


# ---------------------------------------------------------------------------- Shi et al.

SHI_N = 10
"""Number of components of the Shi et al. problem."""


def shi_objective(x):
    r"""``f(x) = Σ_{i=0}^{9} f_i(x) = x²/10`` (paper 003, Section 4.1, after Shi et al. 2021).

    ``f_0(x) = (x − 3)² + 1/10`` and ``f_i(x) = −(x − 10/3)²/10 + 1/10`` for i = 1..9.
    The paper's convention is the **sum** (Eq. (1): ``f = Σ_{i=0}^{n−1} f_i``), and
    indeed ``(x−3)² − (9/10)(x − 10/3)² + 1 = x²/10``; the unique minimizer is 0.

    Example:
        >>> x = np.array([0.0, 1.0, 2.5])
        >>> parts = [(x - 3) ** 2 + 0.1] + [-((x - 10 / 3) ** 2) / 10 + 0.1] * 9
        >>> shi_objective(x).tolist(), np.allclose(sum(parts), shi_objective(x))
        ([0.0, 0.1, 0.625], True)
    """
    return np.asarray(x, dtype=float) ** 2 / 10.0


def shi_component_gradients(index, x):
    """``∇f_i(x)``: ``2(x − 3)`` for ``i = 0`` and ``−(x − 10/3)/5`` otherwise (broadcasting).

    Example:
        >>> g = shi_component_gradients(np.arange(SHI_N), 1.0)
        >>> float(g[0]), round(float(g[1]), 6), round(float(g.sum()), 12)  # Σ_i ∇f_i(1) = 1/5
        (-4.0, 0.466667, 0.2)
    """
    x = np.asarray(x, dtype=float)
    return np.where(np.asarray(index) == 0, 2.0 * (x - 3.0), -0.2 * (x - 10.0 / 3.0))


def shi_adam_distances(
    beta2s: Sequence[float],
    *,
    epochs: int,
    n_seeds: int = 8,
    beta1: float = 0.9,
    eta1: float = 1.0,
    eps: float = 1e-8,
    x0: float = 1.0,
    nu0: str = "warm",
    seed: int = 0,
    signed: bool = False,
) -> np.ndarray:
    r"""Random-reshuffling Adam on the Shi et al. problem; ``|x_{k,0}|`` per epoch.

    Implements paper 003, Eq. (2) in float64, vectorized over ``β2`` and seeds: at
    epoch k a permutation τ of the 10 components is drawn, and for i = 0..9

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        \nu \leftarrow \beta_2 \nu + (1-\beta_2) g^2,\quad
        x \leftarrow x - \frac{\eta_k}{\sqrt{\nu} + \varepsilon} m,
        \qquad g = \nabla f_{\tau_i}(x),\ \eta_k = \eta_1/\sqrt{k},

    with no bias correction (as in Eq. (2)); m and ν carry over between epochs.
    Seed ``s`` draws the same permutations for every β2 (common random numbers), so
    the β2 comparison is paired. Paper 003 leaves the initial state free; we start
    from ``m = 0`` and, with ``nu0="warm"``, ``ν = (1/n) Σ_i ∇f_i(x0)²`` (one pass
    over the data). This avoids the first un-bias-corrected steps of size
    ``η(1−β1)/√(1−β2)`` that, with ``nu0="zero"``, throw x far out for β2 near 1 and
    make the transient long; the limit behaviour is the same.

    Cost: ``10·epochs`` component gradients per (β2, seed); about 0.35 s per 1000
    epochs for 3 β2 × 8 seeds.

    Args:
        beta2s: the β2 values (each in [0, 1)).
        epochs: number of epochs K.
        n_seeds: number of independent shuffling sequences.
        beta1, eta1, eps, x0: Adam hyper-parameters and start point.
        nu0: ``"warm"`` or ``"zero"`` (initial second moment, see above).
        seed: seed of the ``numpy.random.Generator`` drawing the permutations.
        signed: return ``x_{k,0}`` itself instead of its distance ``|x_{k,0}|`` to 0.

    Returns:
        Array of shape ``(len(beta2s), n_seeds, epochs + 1)``: ``|x_{k,0}|`` (the
        distance to the minimizer 0), or ``x_{k,0}`` if ``signed``, at the start of
        epochs 1..K+1.

    Example:
        >>> dist = shi_adam_distances([0.9, 0.99], epochs=20, n_seeds=2)
        >>> dist.shape, dist[:, :, 0].tolist()  # column 0: |x0| = 1
        ((2, 2, 21), [[1.0, 1.0], [1.0, 1.0]])
    """
    b2 = np.asarray(beta2s, dtype=float)
    if b2.ndim != 1 or b2.size == 0 or ((b2 < 0) | (b2 >= 1)).any():
        raise ConfigError(f"beta2s must be a non-empty list of values in [0, 1), got {beta2s!r}")
    if not 0 <= beta1 < 1:
        raise ConfigError(f"beta1 must lie in [0, 1), got {beta1}")
    if int(epochs) < 1 or int(n_seeds) < 1:
        raise ConfigError(f"epochs and n_seeds must be >= 1, got {epochs} and {n_seeds}")
    if nu0 not in ("warm", "zero"):
        raise ConfigError(f"nu0 must be 'warm' or 'zero', got {nu0!r}")
    epochs, n_seeds = int(epochs), int(n_seeds)
    shape = (b2.size, n_seeds)
    beta2 = b2[:, None]
    x = np.full(shape, float(x0))
    m = np.zeros(shape)
    g_start = shi_component_gradients(np.arange(SHI_N), x0)
    nu = np.full(shape, float(np.mean(g_start**2)) if nu0 == "warm" else 0.0)
    rng = np.random.default_rng(seed)
    out = np.empty(shape + (epochs + 1,))
    out[..., 0] = x
    chunk = 1000
    for c0 in range(0, epochs, chunk):
        nc = min(chunk, epochs - c0)
        # One permutation per (epoch, seed), shared across beta2.
        perms = np.argsort(rng.random((nc, n_seeds, SHI_N)), axis=-1)
        for j in range(nc):
            k = c0 + j + 1
            eta = eta1 / math.sqrt(k)
            for i in range(SHI_N):
                g = shi_component_gradients(perms[j, :, i], x)
                m = beta1 * m + (1.0 - beta1) * g
                nu = beta2 * nu + (1.0 - beta2) * g * g
                x = x - eta * m / (np.sqrt(nu) + eps)
            out[..., k] = x
    return out if signed else np.abs(out)


def tail_average(distances: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Mean of the last ``fraction`` of epochs along the last axis.

    Example:
        >>> tail_average(np.arange(10.0)).item(), tail_average(np.arange(10.0), 0.3).item()
        (9.0, 8.0)
        >>> tail_average(np.ones((2, 3, 50))).shape  # one value per (β2, seed)
        (2, 3)
    """
    n = distances.shape[-1]
    k = max(1, int(round(fraction * n)))
    return distances[..., n - k :].mean(axis=-1)


# ---------------------------------------------------------------------------- Section 4.3


def _adam_full_batch(grad, w0, steps, *, eta1, beta1=0.9, beta2=0.999, eps=1e-8):
    """Full-batch Adam (Eq. (2) with n = 1), ``η_t = η1/√t``, ``m = ν = 0`` at the start.

    (A warm ``ν = ∇f(w0)²`` would make Adam crawl for ~ln(∇f(w0)²)/(1−β2) steps after a
    start in a steep region: correct, but not the point of these examples.)
    """
    w = np.asarray(w0, dtype=float).copy()
    m = np.zeros_like(w)
    nu = np.zeros_like(w)
    traj = [w.copy()]
    for t in range(1, steps + 1):
        g = grad(w)
        m = beta1 * m + (1 - beta1) * g
        nu = beta2 * nu + (1 - beta2) * g * g
        w = w - eta1 / math.sqrt(t) * m / (np.sqrt(nu) + eps)
        traj.append(w.copy())
    return np.array(traj)


def _gd(grad, w0, steps, *, eta1, blowup=1e6):
    """GD with ``η_t = η1/√t``; stops (and pads with inf) once ``|w| > blowup``."""
    w = np.asarray(w0, dtype=float).copy()
    traj = np.full((steps + 1,) + w.shape, np.inf)
    traj[0] = w
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            w = w - eta1 / math.sqrt(t) * grad(w)
            if not np.isfinite(w).all() or np.abs(w).max() > blowup:
                break
            traj[t] = w
    return traj


def gd_divergence_radius(eta1: float) -> float:
    """Smallest ``a ≥ 1`` with ``0.86·η1·e^a/(2a+1) ≥ 1`` (to 1e-9): GD with ``η_t = η1/√t``
    on ``2cosh`` diverges from every ``|w0| ≥ a`` (proof in :func:`gd_divergence_example`).

    Example:
        >>> a = gd_divergence_radius(0.5)
        >>> round(a, 6), 0.86 * 0.5 * math.exp(a) / (2 * a + 1) >= 1.0, gd_divergence_radius(100.0)
        (2.70039, True, 1.0)
    """
    if not eta1 > 0 or not math.isfinite(eta1):
        raise ConfigError(f"eta1 must be a positive finite number, got {eta1}")

    def ok(a: float) -> bool:
        return 0.86 * eta1 * math.exp(a) / (2 * a + 1) >= 1.0

    if ok(1.0):
        return 1.0
    lo, hi = 1.0, 2.0
    while not ok(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-9:  # e^a/(2a+1) is increasing on [1/2, ∞): bisection is exact
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def gd_divergence_example(
    eta1: float = 0.5, starts: Sequence[float] = (1.0, 2.5, 3.5, 6.0), steps: int = 500
) -> dict[str, Any]:
    r"""GD with ``η_t = η1/√t`` diverges on an (L0, L1)-smooth loss; Adam does not.

    Our construction for paper 003, Section 4.3, Example 1 (a linear classifier, as
    the paper says, but with the exponential loss): two examples ``(x, y) = (1, +1)``
    and ``(1, −1)`` and the loss ``f(w) = e^{−w} + e^{w} = 2\cosh w``, minimized at
    ``w = 0``.

    *(L0, L1)-smoothness.* ``f'' = 2\cosh w ≤ 2 + 2|\sinh w| = 2 + |f'|``, and for
    ``|δ| ≤ 1``, ``\cosh(w+δ) ≤ e^{|δ|}\cosh w``, so for ``|w_1 − w_2| ≤ 1``:
    ``|f'(w_1) − f'(w_2)| ≤ e(2 + |f'(w_1)|)|w_1 − w_2|`` — Assumption 1 with
    ``L0 = 2e, L1 = e``. No global L exists (``f''`` is unbounded).

    *GD diverges from an infinite-measure region, for every η1.* Let
    ``a_t = |w_t|`` and ``h(a) = e^a/(2a+1)``. For ``a ≥ 1``,
    ``2\sinh a ≥ (1−e^{−2})e^a ≥ 0.86 e^a``, hence
    ``a_{t+1} ≥ 2η_t\sinh a_t − a_t ≥ 0.86 (η1/√t) e^{a_t} − a_t``. Suppose
    ``a_1 ≥ 1`` and ``0.86 η1 h(a_1) ≥ 1``. Induction: if ``a_t ≥ a_1 + t − 1`` then,
    as ``h`` is increasing on [1/2, ∞) with ``h(a+1)/h(a) = e(2a+1)/(2a+3) ≥ 1.6`` for
    ``a ≥ 1``, ``0.86 η1 h(a_t) ≥ 1.6^{t−1} ≥ √t``, i.e.
    ``0.86 (η1/√t) e^{a_t} ≥ 2a_t + 1`` and so ``a_{t+1} ≥ a_t + 1``. Therefore
    ``|w_t| → ∞`` and ``f(w_t), |f'(w_t)| → ∞`` for every start in
    ``E = {|w| ≥ R(η1)}``, ``R(η1)`` the smallest ``a ≥ 1`` with
    ``0.86 η1 h(a) ≥ 1`` — a set of infinite measure (the bound is loose; in practice
    the blow-up is doubly exponential).

    *Adam does not.* With ``β1² < β2`` each Adam step has ``|Δw| ≤ η_t (1−β1)
    /\sqrt{(1−β2)(1 − β1²/β2)}`` regardless of the gradient size, so the iterate can
    only move O(η_t) per step and never overshoots into ever-steeper regions; with
    ``Σ η_t = ∞`` it reaches the minimizer's neighbourhood (shown numerically).

    Returns:
        dict with ``eta1``, ``R`` (the proven threshold), ``starts``, ``gd`` and
        ``adam`` (arrays ``(len(starts), steps+1)``; GD rows are ``inf`` after blow-up,
        ``|w| > 1e6``), and ``gd_diverged`` / ``adam_final_abs`` per start.

    Example:
        >>> r = gd_divergence_example(0.5, starts=(1.0, 6.0), steps=50)
        >>> r["gd_diverged"], [a < 2.0 for a in r["adam_final_abs"]], r["gd"].shape
        ([False, True], [True, True], (2, 51))
    """
    grad = lambda w: 2.0 * np.sinh(w)  # noqa: E731
    a = gd_divergence_radius(eta1)
    gd = np.stack([_gd(grad, np.array(s), steps, eta1=eta1) for s in starts])
    adam = np.stack([_adam_full_batch(grad, np.array(s), steps, eta1=eta1) for s in starts])
    return {
        "eta1": eta1,
        "R": a,
        "starts": list(starts),
        "gd": gd,
        "adam": adam,
        "gd_diverged": [bool(not np.isfinite(row).all()) for row in gd],
        "adam_final_abs": [float(abs(row[-1])) for row in adam],
    }


def sgd_divergence_example(
    a: float = 20.0, w0: float = 1.0, steps: int = 200, seed: int = 0
) -> dict[str, Any]:
    r"""SGD with ``η1 = 1/L`` diverges where GD converges (paper 003, Section 4.3, Example 2).

    Our construction: ``f = f_0 + f_1`` with ``f_0(w) = e^{w} + a w`` and
    ``f_1(w) = e^{−w} − a w`` (``a > 0``), so ``f(w) = 2\cosh w`` again.

    *(L0, L1)-smoothness of each component.* ``f_0'' = e^w ≤ |e^w + a| + a =
    |f_0'| + a`` (and symmetrically for f_1); with ``\cosh``-type growth over a
    unit ball as in :func:`gd_divergence_example`, Assumption 1 holds with
    ``L0 = e·a, L1 = e``.

    *GD converges.* On the sub-level set ``S = {f ≤ f(w0)} = [−|w0|, |w0|]``,
    ``f'' ≤ L = 2\cosh w0``. For ``0 < w ∈ S`` and ``η ≤ 1/L``:
    ``0 ≤ w − η f'(w) ≤ w`` because ``2w ≤ f'(w) ≤ L w`` (f' odd, ``2 ≤ f'' ≤ L`` on
    S), and symmetrically for ``w < 0``. So with ``η_t = η1/√t``, ``η1 = 1/L``,
    ``|w_{t+1}| ≤ (1 − 2η_t)|w_t|`` and ``Π(1 − 2η_t) → 0`` since ``Σ η_t = ∞``.

    *Random-reshuffling SGD diverges* (each epoch takes one step on each component
    in random order, ``η_k = η1/√k``). From ``w0 = 1`` with ``a = 20``, ``η1 = 1/L ≈
    0.324``: if f_1 comes first, ``w = 1 + η1(e^{−1} + a) ≈ 7.6``, then the f_0 step
    is ``−η1(e^{7.6} + a) ≈ −650``; if f_0 comes first, ``w ≈ −6.36`` and the f_1
    step gives ``≈ +187``. Either way the iterate lands where ``|f_i'|`` is
    astronomically larger, and each later step overshoots by more (the argument of
    :func:`gd_divergence_example` applies). The step out of S is what a full-batch
    step never does. Adam with the same schedule moves O(η_k) per step and converges
    to a neighbourhood of 0.

    Returns:
        dict with ``a``, ``w0``, ``eta1``, ``L``, ``gd``, ``sgd`` (per-epoch iterates,
        ``inf`` after blow-up), ``adam`` (per-epoch iterates), ``sgd_diverged``.

    Example:
        >>> r = sgd_divergence_example(steps=20)
        >>> r["sgd_diverged"], bool(abs(r["gd"][-1]) < 0.01), round(r["L"], 6)  # L = 2 cosh 1
        (True, True, 3.086161)
    """
    L = 2.0 * math.cosh(w0)
    eta1 = 1.0 / L
    grads = (lambda w: np.exp(w) + a, lambda w: -np.exp(-w) - a)
    rng = np.random.default_rng(seed)
    gd = _gd(lambda w: 2.0 * np.sinh(w), np.array(w0), steps, eta1=eta1)

    sgd = np.full(steps + 1, np.inf)
    sgd[0] = w = w0
    adam = np.empty(steps + 1)
    adam[0] = x = w0
    m = 0.0
    nu = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            eta = eta1 / math.sqrt(k)
            order = rng.permutation(2)
            for i in order:
                if not diverged:
                    w = w - eta * grads[i](w)
                    diverged = not math.isfinite(w) or abs(w) > 1e6
                g = grads[i](x)
                m = beta1 * m + (1 - beta1) * g
                nu = beta2 * nu + (1 - beta2) * g * g
                x = x - eta * m / (math.sqrt(nu) + eps)
            if not diverged:
                sgd[k] = w
            adam[k] = x
    return {
        "a": a,
        "w0": w0,
        "eta1": eta1,
        "L": L,
        "gd": gd,
        "sgd": sgd,
        "adam": adam,
        "sgd_diverged": bool(diverged),
    }


# ---------------------------------------------------------------------------- reproduce


def _save_fig(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))


def _save_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _save_frame(path: Path, frame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def trajectory_smoothness(grad_fn, trajectory: np.ndarray, alpha: float = 0.1):
    """(‖∇f(w_k)‖, local smoothness) along a 1-D or flat trajectory, via
    :func:`hessnorm.estimators.local_smoothness.local_smoothness` (steps with Δ = 0
    are skipped). Returns two numpy arrays.

    Example:
        For f(w) = w² (f' = 2w, f'' = 2) the local smoothness is 2 at every step:

        >>> grad_norm, smooth = trajectory_smoothness(lambda w: 2 * w, np.array([1.0, 0.5, 0.5, 0.2]))
        >>> grad_norm.tolist(), smooth.round(12).tolist()  # the repeated 0.5 is skipped
        ([2.0, 1.0], [2.0, 2.0])
    """
    import torch

    from hessnorm.estimators.local_smoothness import local_smoothness

    traj = torch.as_tensor(np.asarray(trajectory, dtype=float)).reshape(len(trajectory), -1)

    def grad(x):
        return torch.as_tensor(grad_fn(x.numpy()), dtype=torch.float64).reshape(x.shape)

    gn, sm = [], []
    for k in range(len(traj) - 1):
        if torch.equal(traj[k], traj[k + 1]) or not torch.isfinite(traj[k + 1]).all():
            continue
        est = local_smoothness(None, traj[k], traj[k + 1], alpha=alpha, grad_fn=grad)
        gn.append(est.details["grad_norm"])
        sm.append(est.value)
    return np.array(gn), np.array(sm)


def reproduce(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = True) -> None:
    """Write the (L0, L1) experiments of paper 003 to ``out_dir`` (``hessnorm reproduce l0l1``).

    Files: ``shi_adam.png`` / ``shi_adam.csv`` / ``shi_adam_tail.csv`` (Section 4.1,
    Fig. 2), ``divergence.png`` / ``divergence.csv`` (Section 4.3, our examples),
    ``l0l1_fit.png`` / ``l0l1_points.csv`` (local smoothness vs gradient norm along
    the Adam and GD trajectories of the cosh example, with the fitted bound),
    ``summary.json`` and ``README.md``.

    Args:
        out_dir: output folder (created).
        quick: 6,000 epochs instead of 100,000 (CI/tests); β2 ∈ {0.9, 0.99, 0.999}.
        seed: seed of the permutations.
        progress: print one line per stage.

    Example:
        ``hessnorm reproduce l0l1`` calls it; ``quick`` takes a few seconds
        (tests/test_experiments.py runs it), so the example checks the dispatch:

        >>> from hessnorm.experiments import resolve
        >>> resolve("l0l1") is reproduce
        True
    """
    import pandas as pd
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)

    # 1. Shi et al. problem, Fig. 2.
    epochs = 6000 if quick else 100000
    n_seeds = 8
    beta2s = [0.9, 0.99, 0.999]
    say(f"[l0l1] Shi et al. problem: Adam, {epochs} epochs, beta2 in {beta2s}, {n_seeds} seeds")
    xs = shi_adam_distances(beta2s, epochs=epochs, n_seeds=n_seeds, seed=seed, signed=True)
    dist = np.abs(xs)
    tail = tail_average(dist, 0.1)
    tail_x = tail_average(xs, 0.1)
    tail_rows = [
        {
            "beta2": b,
            "tail_mean_distance": float(tail[i].mean()),
            "tail_std_over_seeds": float(tail[i].std(ddof=1)),
            "tail_min_seed": float(tail[i].min()),
            "tail_max_seed": float(tail[i].max()),
            "tail_mean_x": float(tail_x[i].mean()),
            "epochs": epochs,
            "tail_epochs": max(1, int(round(0.1 * dist.shape[-1]))),
            "n_seeds": n_seeds,
        }
        for i, b in enumerate(beta2s)
    ]
    tail_df = pd.DataFrame(tail_rows)
    _save_frame(out_dir / "shi_adam_tail.csv", tail_df)
    # Store a log-spaced subset of epochs (the full array is large).
    keep = np.unique(np.geomspace(1, epochs + 1, 400).astype(int) - 1)
    long = pd.DataFrame(
        [
            {"beta2": b, "epoch": int(e) + 1, "seed": s, "x": float(xs[i, s, e])}
            for i, b in enumerate(beta2s)
            for s in range(n_seeds)
            for e in keep
        ]
    )
    _save_frame(out_dir / "shi_adam.csv", long)
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    ep = np.arange(1, epochs + 2)
    for i, b in enumerate(beta2s):
        mean = dist[i].mean(axis=0)
        ax.plot(ep, mean, lw=1.2, label=f"β2 = {b} (tail mean {tail[i].mean():.3g})")
        ax.fill_between(ep, dist[i].min(axis=0), dist[i].max(axis=0), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch k")
    ax.set_ylabel("distance to the minimum |x_{k,0} − 0|")
    ax.set_title(f"RR-Adam on Shi et al. problem (β1=0.9, η_k=1/√k, {n_seeds} seeds)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save_fig(fig, out_dir / "shi_adam.png")

    # 2. Divergence examples, Section 4.3.
    say("[l0l1] divergence examples (Section 4.3)")
    ex1 = gd_divergence_example()
    ex2 = sgd_divergence_example(seed=seed)
    fig = Figure(figsize=(13, 4.6))
    axes = fig.subplots(1, 2)
    ax = axes[0]
    steps1 = np.arange(ex1["gd"].shape[1])
    for j, s in enumerate(ex1["starts"]):
        gd_row = np.abs(ex1["gd"][j])
        (line,) = ax.plot(steps1, gd_row, "-", label=f"GD, w0={s:g}")
        ax.plot(
            steps1, np.abs(ex1["adam"][j]), "--", color=line.get_color(), label=f"Adam, w0={s:g}"
        )
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("step t")
    ax.set_ylabel("|w_t| (distance to the minimizer)")
    ax.set_title(
        f"Ex. 1: f(w) = 2cosh(w), η_t = {ex1['eta1']:g}/√t\n"
        f"GD provably diverges from |w0| ≥ {ex1['R']:.2f}; Adam converges",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    ax = axes[1]
    k2 = np.arange(len(ex2["sgd"]))
    ax.plot(k2, np.abs(ex2["gd"]), "-", label="GD (full batch)")
    ax.plot(k2, np.abs(ex2["sgd"]), "o-", ms=3, label="RR-SGD (diverges: stops at |w|>1e6)")
    ax.plot(k2, np.abs(ex2["adam"]), "--", label="RR-Adam")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("epoch k")
    ax.set_ylabel("|w_{k,0}|")
    ax.set_title(
        f"Ex. 2: f0 = e^w + {ex2['a']:g}w, f1 = e^-w − {ex2['a']:g}w, w0 = {ex2['w0']:g}\n"
        f"η_k = (1/L)/√k, 1/L = {ex2['eta1']:.3f}: GD converges, RR-SGD diverges",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    _save_fig(fig, out_dir / "divergence.png")
    rows = []
    for j, s in enumerate(ex1["starts"]):
        for t in range(ex1["gd"].shape[1]):
            rows.append(
                {
                    "example": 1,
                    "w0": s,
                    "t": t,
                    "gd": ex1["gd"][j, t],
                    "sgd": np.nan,
                    "adam": ex1["adam"][j, t],
                }
            )
    for t in range(len(ex2["sgd"])):
        rows.append(
            {
                "example": 2,
                "w0": ex2["w0"],
                "t": t,
                "gd": ex2["gd"][t],
                "sgd": ex2["sgd"][t],
                "adam": ex2["adam"][t],
            }
        )
    _save_frame(out_dir / "divergence.csv", pd.DataFrame(rows))

    # 3. Local smoothness along trajectories of Example 1 and the (L0, L1) fit.
    say("[l0l1] local smoothness along trajectories and (L0, L1) fit")
    grad = lambda w: 2.0 * np.sinh(w)  # noqa: E731
    pts = []
    for j, s in enumerate(ex1["starts"]):
        for name, traj in (("Adam", ex1["adam"][j]), ("GD", ex1["gd"][j])):
            head = traj[:201]  # the first 200 steps carry the whole range of gradient norms
            # Consecutive prefix where cosh stays representable (GD leaves it in a few steps).
            bad = ~(np.abs(head) < 300.0)
            finite = head[: int(np.argmax(bad)) if bad.any() else len(head)]
            gn, sm = trajectory_smoothness(grad, finite[:, None])
            pts += [
                {"optimizer": name, "w0": s, "grad_norm": a, "local_smoothness": b}
                for a, b in zip(gn, sm)
            ]
    pts_df = pd.DataFrame(pts)
    pts_df = pts_df[pts_df.grad_norm > 0]
    _save_frame(out_dir / "l0l1_points.csv", pts_df)
    adam_pts = pts_df[pts_df.optimizer == "Adam"]
    fit = fit_l0l1(adam_pts.grad_norm, adam_pts.local_smoothness)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    plot_l0l1(
        adam_pts.grad_norm,
        adam_pts.local_smoothness,
        fit=fit,
        ax=ax,
        title="f=2cosh(w), Adam trajectories: local smoothness (α=0.1)",
    )
    _save_fig(fig, out_dir / "l0l1_fit.png")

    summary = {
        "shi": {
            "epochs": epochs,
            "n_seeds": n_seeds,
            "beta1": 0.9,
            "eta": "1/sqrt(k)",
            "x0": 1.0,
            "nu0": "warm",
            "tail_fraction": 0.1,
            "tail_mean_distance": {str(r["beta2"]): r["tail_mean_distance"] for r in tail_rows},
        },
        "example1": {
            "eta1": ex1["eta1"],
            "R": ex1["R"],
            "starts": ex1["starts"],
            "gd_diverged": ex1["gd_diverged"],
            "adam_final_abs": ex1["adam_final_abs"],
        },
        "example2": {
            "a": ex2["a"],
            "w0": ex2["w0"],
            "eta1": ex2["eta1"],
            "gd_final_abs": float(abs(ex2["gd"][-1])),
            "sgd_diverged": ex2["sgd_diverged"],
            "adam_final_abs": float(abs(ex2["adam"][-1])),
        },
        "fit_adam_cosh": fit.to_dict(),
        "quick": quick,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
    }
    _save_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _save_text(out_dir / "README.md", _readme(summary, tail_df))
    say(f"[l0l1] wrote {out_dir} in {summary['seconds']:.1f}s")


def _readme(summary: dict, tail_df) -> str:
    shi, e1, e2, fit = (
        summary["shi"],
        summary["example1"],
        summary["example2"],
        summary["fit_adam_cosh"],
    )
    lines = [
        "# (L0, L1)-smoothness experiments (paper 003)",
        "",
        "Generated by `hessnorm reproduce l0l1`"
        + (" --quick" if summary["quick"] else "")
        + f" (seed {summary['seed']}, {summary['seconds']:.0f} s). Code: `hessnorm/experiments/paper003.py` (fit: `hessnorm/l0l1.py`).",
        "",
        "## 1. Adam on the Shi et al. problem (Section 4.1, Fig. 2) — `shi_adam.png`",
        "",
        "f(x) = Σ_{i=0}^{9} f_i(x) = x²/10 (the paper's sum convention), f_0 = (x−3)² + 1/10,",
        "f_i = −(x − 10/3)²/10 + 1/10. Random-reshuffling Adam, Eq. (2) without bias correction,",
        f"β1 = 0.9, η_k = 1/√k, x0 = 1, m0 = 0, warm ν0; {shi['epochs']} epochs, {shi['n_seeds']} seeds",
        "(same permutations for every β2). Distance |x_k,0| averaged over the last 10% of epochs:",
        "",
        "| β2 | tail mean distance | std over seeds | min seed | max seed | tail mean x |",
        "|---|---|---|---|---|---|",
    ]
    for r in tail_df.itertuples():
        lines.append(
            f"| {r.beta2} | {r.tail_mean_distance:.4g} | {r.tail_std_over_seeds:.2g} | {r.tail_min_seed:.4g} | {r.tail_max_seed:.4g} | {r.tail_mean_x:.4g} |"
        )
    lines += [
        "",
        "Adam does not converge to the minimizer 0, and the neighbourhood it settles in shrinks as",
        "β2 → 1, as in the paper's Fig. 2. For β2 = 0.9 the distance keeps growing slowly (it is",
        "not a fixed neighbourhood within this horizon). Dips of the curves are crossings of 0",
        "(x changes sign on its way to the point it hovers around). Shaded: min..max over seeds.",
        "Caveat: the largest β2 is still drifting at the end of the run (its curve has not",
        "flattened; a dip near the end is a zero crossing), so its tail value measures the",
        "distance at this horizon, not the final neighbourhood; the ordering across β2 is the",
        "robust finding.",
        "",
        "## 2. Divergence of (S)GD under (L0, L1)-smoothness (Section 4.3) — `divergence.png`",
        "",
        "The paper's appendix constructions are not in our copy, so these are our own examples;",
        "the proofs are in the docstrings of `gd_divergence_example` / `sgd_divergence_example`.",
        "",
        f"* Example 1: f(w) = e^w + e^−w (exponential loss of a linear classifier), η_t = {e1['eta1']:g}/√t.",
        f"  Proven: GD diverges from every |w0| ≥ R = {e1['R']:.3f}. Starts {e1['starts']}:",
        f"  GD diverged = {e1['gd_diverged']}; Adam |w_final| = "
        + ", ".join(f"{v:.2g}" for v in e1["adam_final_abs"])
        + ".",
        f"* Example 2: f_0 = e^w + {e2['a']:g}w, f_1 = e^−w − {e2['a']:g}w, w0 = {e2['w0']:g}, η1 = 1/L = {e2['eta1']:.4f}",
        f"  (L = max f'' on the sub-level set). GD |w_final| = {e2['gd_final_abs']:.2g};"
        f" RR-SGD diverged = {e2['sgd_diverged']}; RR-Adam |w_final| = {e2['adam_final_abs']:.2g}.",
        "",
        "## 3. Local smoothness vs gradient norm — `l0l1_fit.png`",
        "",
        "Local smoothness (paper 003 App. E, α = 0.1) along the Adam trajectories of Example 1,",
        "(first 200 steps each) with `fit_l0l1` (line above all points minimizing the mean gap):",
        f"L0 = {fit['L0']:.4g}, L1 = {fit['L1']:.4g} over {fit['n_points']} points; the log-log bound of",
        f"Fig. 1b is log s ≤ log ‖∇f‖ + {fit['loglog_c']:.3g}. For 2cosh, f'' ≤ 2 + |f'| pointwise (L0 = 2, L1 = 1),",
        "and the fit lands close to it (finite Adam steps move toward the minimizer, so the",
        "secant slope can fall a little below f''(w), hence L1 slightly below 1). The L0 = 0 view",
        "of Fig. 1b is useless here: near the minimizer the gradient vanishes while the curvature",
        "stays 2, so no slope-1 line bounds the points tightly — the L0 term is what is needed.",
        "",
        "Data: `shi_adam.csv` (log-spaced epochs), `shi_adam_tail.csv`, `divergence.csv`,",
        "`l0l1_points.csv`, `summary.json`.",
        "",
    ]
    return "\n".join(lines)

"""Spectral norm and extreme eigenpairs of the Hessian by Lanczos (paper 000, App. D.3).

Lanczos builds an orthonormal basis q_1, ..., q_m of the Krylov space
span{q_1, Hq_1, ..., H^{m-1}q_1} with one HVP per step, and the tridiagonal
T_m = Q_mᵀ H Q_m. The eigenvalues θ of T_m (Ritz values) approximate the extreme
eigenvalues of H fast (error shrinking geometrically with the spectral gap). Here
the basis is fully re-orthogonalised (classical Gram–Schmidt, repeated once when the
first pass cancels more than 1 − 1/√2 of the vector: the DGKS criterion), so
the computed Ritz residuals can be trusted, and every small-matrix computation
(T, its eigen-decomposition, residuals) is done in float64 even when the operator
works in float32.

Error bars of :func:`spectral_norm` (details in :mod:`hessnorm.estimators._krylov`):

* Lower end (deterministic): ρ_m = σ_max([T_m; β_m e_mᵀ]) = max over the Krylov
  space of ‖Hy‖/‖y‖ ≤ ‖H‖₂ (and ρ_m ≥ max|θ|).
* Upper end (probabilistic, confidence 1 − δ): with the uniformly random start v and
  an eigenvector u of the extreme eigenvalue, |⟨v, u⟩| ≥ t = δ/√(2d/π) with
  probability ≥ 1 − δ. On that event every polynomial p of degree < m satisfies
  t·|p(λ*)| ≤ ‖p(T_m)e₁‖, which bounds |λ*| = ‖H‖₂ (the random-start argument of
  Kuczyński & Woźniakowski 1992). The best p for each candidate x is used: the
  bound excludes every x with t²·K_m(x) > 1, K_m the Christoffel function of T_m,
  computed by the Lanczos three-term recurrence in O(m) — at least as tight as the
  gap-free Chebyshev rate and as Chebyshev polynomials deflated at the outlying Ritz
  values (geometric convergence in the gap). Ritz residuals are not used for the
  upper end: they only say that *some* eigenvalue lies within r of θ.
* Rounding: both ends are widened by η = eps·max(10, √d) relative (the assumed
  relative error of one HVP in the operator's dtype; 1e-12 in float64 at d = 10⁸,
  1.3e-3 in float32 at d = 1.2·10⁸; override with ``hvp_rel_error``).

Memory: the basis is stored in chunks; once it would exceed ``basis_budget_bytes``
on the compute device, further vectors go to a temporary file on disk (or to
``basis_device``) and re-orthogonalisation streams over the chunks, so peak memory
is the budget plus a few vectors (:class:`LanczosBasis`; the IO is one or two reads
of the spilled rows per iteration). Where a chunk lives changes only the grouping of the
sums, so the results agree to rounding.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hessnorm.errors import ConfigError, NonFiniteError
from hessnorm.estimate import Estimate
from hessnorm.estimators import _fd_widen, _space
from hessnorm.estimators._common import random_unit
from hessnorm.estimators._disk import DiskRows
from hessnorm.estimators._krylov import (
    KrylovBound,
    norm_lower,
    ritz,
    rounding_slack,
    start_radius,
    tridiag_eig,
)
from hessnorm.estimators._progress import progress_bar
from hessnorm.operator import as_operator, available_memory
from hessnorm.registry import register_estimator

__all__ = [
    "spectral_norm",
    "top_eigenpairs",
    "Eigenpairs",
    "lanczos",
    "LanczosState",
    "LanczosBasis",
]

_DEFAULT_BASIS_BUDGET = 2 << 30  # bytes of basis kept in memory on the CPU
_CHUNK_BYTES = 256 << 20
_DGKS = 1.0 / math.sqrt(2.0)  # second Gram–Schmidt pass when ‖w‖ fell below this share
_CHECK_EVERY_FROM = 32  # stopping rules run every iteration up to here, then every ⌈m/32⌉


def _check_due(m: int) -> bool:
    """Whether the stopping rule runs after iteration m (1-based).

    Every iteration up to m = 32, then every ⌈m/32⌉-th: the rules' cost grows like m²
    (ρ_m's banded eigenproblem; the Ritz decomposition of :func:`top_eigenpairs`), so
    this keeps it a bounded share of the HVPs on small models, for at most ⌈m/32⌉ − 1
    extra iterations (≈3%). It depends on m
    only, so the same seed still gives the same number.

    Example:
        >>> [m for m in range(28, 45) if _check_due(m)]
        [28, 29, 30, 31, 32, 34, 36, 38, 40, 42, 44]
    """
    if m <= _CHECK_EVERY_FROM:
        return True
    return m % -(-m // _CHECK_EVERY_FROM) == 0


class LanczosState(NamedTuple):
    """The result of a Lanczos run.

    Attributes:
        alpha, beta: diagonal (m,) and off-diagonal (m,) of T_m in float64;
            ``beta[-1]`` is the residual coupling β_m to the next (unused) vector.
            After a restart (``restarts > 0``) the coupling at the junction is 0.
        basis: the m orthonormal Lanczos vectors as a :class:`LanczosBasis` (read it
            with ``combine``/``dense``; ``close()`` deletes its disk spill), or None.
        n_hvp: HVPs spent (= m).
        breakdown: True when β_m ≈ 0, i.e. the last Krylov space is invariant and the
            Ritz values are exact eigenvalues of H.
        restarts: new random start vectors drawn after breakdowns (``restart=True``).

    Example:
        >>> st = lanczos(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> st.n_hvp, st.breakdown, st.restarts, round(float(st.alpha.sum()), 12)  # tr T = tr H
        (3, True, 0, 6.0)
    """

    alpha: Tensor
    beta: Tensor
    basis: LanczosBasis | None
    n_hvp: int
    breakdown: bool
    restarts: int = 0


class LanczosBasis:
    """The orthonormal Lanczos vectors, stored in tiers and read by streaming.

    Tier 1: chunks on the compute device, up to ``budget`` bytes. Tier 2 (the spill):
    by default a temporary file on disk (:class:`DiskRows`); with an explicit torch
    ``spill`` device (e.g. ``"cpu"`` next to a GPU), chunks there. Every operation
    visits the rows in order, chunk by chunk, and handles a chunk where it lives.

    Re-orthogonalisation (:meth:`project_out`) is block Gram–Schmidt: for each chunk C
    in turn, w ← w − Cᵀ(C w) (classical within a chunk, modified across chunks, which
    is at least as stable as classical over the whole basis). Each pass reads every
    stored row once; Lanczos makes one pass per iteration and a second one only when
    the first cancelled most of the vector (DGKS), so a spilled basis of s rows costs
    s·d·itemsize to 2·s·d·itemsize bytes of reads per iteration (plus one row
    written); n iterations with s(j) spilled rows read at most
    Σ_j 2·s(j)·d·itemsize ≈ (n − r)²·d·itemsize in total with r rows in memory.

    Example:
        >>> basis = LanczosBasis(4, torch.float64, "cpu", budget=64, spill="disk")  # 2 rows in memory
        >>> for i in range(3):
        ...     basis.append(torch.eye(4, dtype=torch.float64)[i])
        >>> len(basis), basis.spilled, basis.project_out(torch.ones(4, dtype=torch.float64)).tolist()
        (3, 1, [0.0, 0.0, 0.0, 1.0])
        >>> basis.dense().shape, basis.io_bytes  # the 32-byte spilled row: read twice, written once
        (torch.Size([3, 4]), (64, 32))
        >>> basis.close()
    """

    def __init__(self, d, dtype, device, budget, spill):
        self.d, self.dtype, self.device = d, dtype, torch.device(device)
        item = torch.empty((), dtype=dtype).element_size()
        self.rows = max(1, min(64, _CHUNK_BYTES // max(1, d * item)))
        self.on_device_max = max(0, int(budget) // max(1, d * item))
        if spill is None or (isinstance(spill, str) and spill == "disk"):
            self.spill, self.spill_dir = None, None
        elif isinstance(spill, os.PathLike):
            self.spill, self.spill_dir = None, spill
        else:
            self.spill, self.spill_dir = torch.device(spill), None
        self.chunks: list[Tensor] = []
        self.fill: list[int] = []
        self.disk: DiskRows | None = None
        self.n = 0
        self.reduce = None  # all-reduce of the coefficients when rows are local shards

    def __len__(self) -> int:
        return self.n

    @property
    def spilled(self) -> int:
        """Rows stored outside the compute device's budget."""
        return max(0, self.n - self.on_device_max)

    @property
    def io_bytes(self) -> tuple[int, int]:
        """(bytes read, bytes written) of the disk spill so far."""
        return (self.disk.bytes_read, self.disk.bytes_written) if self.disk else (0, 0)

    def append(self, v: Tensor) -> None:
        if self.n >= self.on_device_max and self.spill is None:
            if self.disk is None:
                self.disk = DiskRows(
                    self.d,
                    self.dtype,
                    self.spill_dir,
                    prefix="hessnorm-lanczos-",
                    suffix=".basis",
                    advice="Free disk space, point TMPDIR (or basis_device=pathlib.Path(...)) at "
                    "a larger disk, lower max_iter, or raise basis_budget_bytes to keep more of "
                    "the basis in memory.",
                    buffer_bytes=_CHUNK_BYTES,
                )
            self.disk.append(v)
            self.n += 1
            return
        if not self.chunks or self.fill[-1] == self.chunks[-1].shape[0]:
            dev = self.device if self.n < self.on_device_max else self.spill
            rows = self.rows
            if dev == self.device:
                rows = max(1, min(rows, self.on_device_max - self.n))
            self.chunks.append(torch.empty(rows, self.d, dtype=self.dtype, device=dev))
            self.fill.append(0)
        c = self.chunks[-1]
        c[self.fill[-1]] = v.to(c.device)
        self.fill[-1] += 1
        self.n += 1

    def _iter(self):
        for c, f in zip(self.chunks, self.fill):
            yield c[:f]
        if self.disk is not None:
            yield from self.disk.chunks()

    def project_out(self, w: Tensor, *, coeffs: bool = False):
        """One block Gram–Schmidt pass: w ← w − Q Qᵀ w, chunk after chunk, in place.

        ``w`` is overwritten (the caller passes a vector it owns); no temporary of size
        d is made while the chunks live on w's device. With ``coeffs=True`` also
        returns the coefficients Qᵀw (one per stored row, in order, float64 on the
        CPU) that were subtracted.
        """
        home = w.device
        parts = []
        for C in self._iter():
            if w.device != C.device:
                w = w.to(C.device)
            h = C @ w
            if self.reduce is not None:
                h = self.reduce(h)
            w.addmv_(C.T, h, alpha=-1)
            if coeffs:
                parts.append(h.double().cpu())
        w = w.to(home)
        if coeffs:
            if len(parts) == 1:
                return w, parts[0]
            return w, torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
        return w

    def combine(self, coeffs: Tensor) -> Tensor:
        """coeffs (k, n) float64 times the basis: (k, d) in float64 on the device."""
        out = torch.zeros(coeffs.shape[0], self.d, dtype=torch.float64, device=self.device)
        start = 0
        for C in self._iter():
            r = C.shape[0]
            part = coeffs[:, start : start + r].to(C.device) @ C.double()
            out += part.to(self.device)
            start += r
        return out

    def dense(self) -> Tensor:
        """The (n, d) basis as one tensor on the compute device (O(n·d) memory)."""
        out = torch.empty(self.n, self.d, dtype=self.dtype, device=self.device)
        start = 0
        for C in self._iter():
            out[start : start + C.shape[0]] = C.to(self.device)
            start += C.shape[0]
        return out

    def close(self) -> None:
        """Delete the disk spill (also done when the object is garbage collected)."""
        if self.disk is not None:
            self.disk.close()
            self.disk = None


def _default_basis_budget(device) -> int:
    """A third of the memory available now on the CPU (a quarter of the free memory on
    a GPU), at least 2 GiB on the CPU: at d = 1.24·10⁸ in float32 with 20 GiB free that
    keeps 13 vectors in memory before the disk spill starts."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free) // 4
    return max(_DEFAULT_BASIS_BUDGET, available_memory(device) // 3)


def lanczos(
    op,
    *,
    max_iter: int = 200,
    seed: int = 0,
    stop=None,
    keep_basis: bool = False,
    progress=None,
    stop_tridiag=None,
    restart: bool = False,
    basis_budget_bytes: int | None = None,
    basis_device=None,
):
    """Run Lanczos with full re-orthogonalisation on a Hessian-like operator.

    Cost: one HVP per iteration, at most ``min(max_iter, d)`` HVPs; O(m·d) work per
    iteration for the re-orthogonalisation. Memory: the basis (iterations × d entries)
    is kept on the operator's device up to ``basis_budget_bytes``; further vectors go
    to a temporary file (deleted afterwards) or to ``basis_device``, so peak memory
    stays the budget plus a few vectors. IO of a disk spill of s rows: one row
    (d·itemsize bytes) written and s·d·itemsize bytes read per iteration, 2·s·d·itemsize
    when a second re-orthogonalisation pass is needed (see :class:`LanczosBasis`); at
    d = 1.24·10⁸ in float32 that is 0.5 GB written and 0.5·s to s GB read per
    iteration. Stopping rules (``stop``, ``stop_tridiag``) run after every iteration up
    to 32, then every ⌈m/32⌉-th (:func:`_check_due`).

    Args:
        op: anything with ``d``, ``dtype``, ``device`` and ``hvp`` (or a dense tensor).
        max_iter: maximal number of iterations (HVPs).
        seed: seeds the Gaussian start vector(s) (CPU generator, float64).
        stop: optional callable ``stop(theta, resid) -> bool`` evaluated after every
            iteration on the current Ritz values and residuals (float64 tensors).
        keep_basis: return the basis (needed for Ritz vectors).
        progress: optional tqdm bar updated once per iteration.
        stop_tridiag: optional cheaper hook ``stop_tridiag(alpha, beta, breakdown) ->
            bool`` on numpy float64 arrays (no Ritz decomposition is computed for it).
        restart: after a breakdown (invariant Krylov space) continue from a new random
            vector orthogonal to the basis instead of stopping, until ``max_iter`` or d
            vectors; T then is block diagonal.
        basis_budget_bytes: bytes of basis kept on the operator's device (default: the
            operator's ``memory_budget``; else a third of the available memory, at
            least 2 GiB, on the CPU and a quarter of the free memory on a GPU).
        basis_device: where vectors beyond that budget live: ``None``/``"disk"``
            (default) a temporary file in ``tempfile.gettempdir()`` (``TMPDIR``), a
            ``pathlib.Path`` a temporary file in that folder, or a torch device such as
            ``"cpu"`` (host memory next to a GPU; no saving on a CPU-only machine).

    Returns:
        LanczosState.

    Example:
        >>> st = lanczos(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> st.n_hvp, st.breakdown, round(float(ritz(st.alpha, st.beta)[0][-1]), 12)
        (3, True, 3.0)
    """
    op = as_operator(op)
    d = op.d
    m_max = int(min(max_iter, d))
    if m_max < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    if basis_budget_bytes is None:
        basis_budget_bytes = getattr(op, "memory_budget", None) or _default_basis_budget(op.device)
    Q = LanczosBasis(_space.local_d(op), op.dtype, op.device, basis_budget_bytes, basis_device)
    Q.reduce = _space.reducer(op)
    try:
        return _lanczos_loop(op, Q, m_max, seed, stop, keep_basis, progress, stop_tridiag, restart)
    finally:
        if not keep_basis:
            Q.close()


def _start_unit(d: int, g: torch.Generator, op, draw: int) -> Tensor:
    """A random unit start; on a sharded operator this rank's slice of the one drawn by
    global coordinate (``draw``-th of the seed), so it does not depend on the ranks."""
    if _space.is_sharded(op):
        return _space.gaussian_unit(op, g.initial_seed(), draw)
    return random_unit(d, g)


def _lanczos_loop(op, Q, m_max, seed, stop, keep_basis, progress, stop_tridiag, restart):
    d = op.d
    g = torch.Generator().manual_seed(int(seed))
    q = _start_unit(d, g, op, 0).to(device=op.device, dtype=op.dtype)
    Q.append(q)
    alphas: list[float] = []
    betas: list[float] = []
    breakdown = False
    restarts = 0
    scale = 0.0
    eps = torch.finfo(op.dtype).eps
    q_prev: Tensor | None = None
    for j in range(m_max):
        w = op.hvp(q)
        # The three-term recurrence first (α = qᵀHq; β_{j−1} couples the previous vector,
        # 0 after a restart), then full re-orthogonalisation: one classical Gram–Schmidt
        # pass against every stored vector, repeated when it cancelled more than
        # 1 − 1/√2 of what the recurrence left (the DGKS criterion; "twice is enough").
        # The pass's coefficient on q corrects α.
        a = _space.dot(op, q, w)
        w = torch.add(w, q, alpha=-a)
        if q_prev is not None and betas[-1] != 0.0:
            w.add_(q_prev, alpha=-betas[-1])
        w, h = Q.project_out(w, coeffs=True)
        a += float(h[-1])
        b = _space.norm(op, w)
        # ‖w‖ before the pass, by Pythagoras (w = w_after + Q h with Q orthonormal):
        # no second read of w for the DGKS test.
        w_norm = math.sqrt(b * b + float(h @ h))
        if not (math.isfinite(a) and math.isfinite(w_norm) and math.isfinite(b)):
            raise NonFiniteError(
                "a Hessian-vector product in Lanczos is not finite; try float64 or check the model"
            )
        if b < _DGKS * w_norm:
            w = Q.project_out(w)
            b = _space.norm(op, w)
        alphas.append(a)
        betas.append(b)
        scale = max(scale, abs(a), b)
        if progress is not None:
            progress.update(1)
        breakdown = b <= 10 * eps * scale or b == 0.0
        if breakdown:
            betas[-1] = 0.0
        done = breakdown and not restart
        check = breakdown or j + 1 == m_max or _check_due(j + 1)
        if not done and check and stop_tridiag is not None:
            done = stop_tridiag(np.array(alphas), np.array(betas), breakdown)
        if not done and check and stop is not None:
            theta, _, resid = ritz(torch.tensor(alphas), torch.tensor(betas))
            done = bool(stop(theta, resid))
        if done or j + 1 == m_max:
            break
        if breakdown:
            # A new random direction orthogonal to the invariant space found so far.
            nrm = 0.0
            for _ in range(3):
                w = _start_unit(d, g, op, 1 + restarts).to(device=op.device, dtype=op.dtype)
                for _ in range(2):
                    w = Q.project_out(w)
                nrm = _space.norm(op, w.double())
                if nrm > 0.5:
                    break
            if nrm <= 0.5:  # numerically, the basis spans everything
                break
            restarts += 1
            q = w / nrm
        else:
            q_prev, q = q, w.div_(b)  # w is this loop's own vector
        Q.append(q)
    n = len(alphas)
    beta_t = torch.tensor(betas, dtype=torch.float64)
    basis = Q if keep_basis else None
    return LanczosState(
        torch.tensor(alphas, dtype=torch.float64), beta_t, basis, n, bool(breakdown), restarts
    )


def _bar(progress: bool, total: int, desc: str):
    return progress_bar(
        total,
        desc,
        enabled=progress,
        upper=True,
        advice="a smaller max_iter or a looser tol (the interval is then wider)",
    )


def _confidence_arg(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    return 1.0 - confidence


def spectral_norm(
    op,
    *,
    tol: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = True,
    confidence: float = 0.99,
    hvp_rel_error: float | None = None,
    basis_budget_bytes: int | None = None,
    basis_device=None,
) -> Estimate:
    """‖H‖₂ = max(|λ_max|, |λ_min|) by Lanczos with full re-orthogonalisation.

    The interval [low, high] (module docstring) holds with probability at least
    ``confidence`` over the random start vector: low is deterministic, high is the
    random-start Krylov bound, both widened for rounding by η. Stops as soon as
    (high − low) / low ≤ ``tol`` (checked every iteration on the m×m tridiagonal
    only, no Ritz vectors), or after ``max_iter`` iterations. Each iteration costs
    one HVP; on the test models 20–40 HVPs reach tol = 1e-4 at 99% confidence. When
    the rounding slack alone is wider than tol/4 the run stops at the Krylov part
    ≤ tol/4 (``details["rounding_limited"]``). Paper 000, App. D.3 measures
    ‖∇²L‖₂ this way (Table 2, "AdaSGD" row, d·‖H‖₂).

    Args:
        op: a HessianOperator, any Hessian-like (``d``, ``dtype``, ``device``,
            ``hvp``), or a dense symmetric tensor.
        tol: relative width of the reported interval at which to stop.
        max_iter: cap on iterations (= HVPs); the result then carries a wider interval.
        seed: seeds the random start vector; same seed, same number.
        progress: show a tqdm bar (HVPs done / cap).
        confidence: 1 − δ, the probability that ``high`` bounds ‖H‖₂.
        hvp_rel_error: η, the relative error of one HVP (default eps·max(10, √d)).
        basis_budget_bytes, basis_device: see :func:`lanczos`.

    Returns:
        Estimate ``spectral_norm`` with value ρ_m (the deterministic lower bound before
        rounding), low/high as above, ``confidence``, and details ``lambda_max``,
        ``lambda_min``, ``residual_max``, ``residual_min``, ``iterations``,
        ``converged``, ``breakdown``, ``rounding``, ``rounding_limited``, ``history``
        ((iteration, low, high) at a few checkpoints).

    Example:
        >>> H = torch.diag(torch.tensor([3.0, -5.0, 1.0, 0.5], dtype=torch.float64))
        >>> est = spectral_norm(H, progress=False)
        >>> round(est.value, 10), est.details["lambda_min"], est.covers(5.0)
        (5.0, -5.0, True)
    """
    if not tol > 0:
        raise ConfigError(f"tol must be positive, got {tol}")
    delta = _confidence_arg(confidence)
    op = as_operator(op)
    t0 = time.perf_counter()
    eps = torch.finfo(op.dtype).eps
    eta = rounding_slack(op.d, eps) if hvp_rel_error is None else float(hvp_rel_error)
    if not 0.0 <= eta < 0.5:
        raise ConfigError(f"hvp_rel_error must lie in [0, 0.5), got {hvp_rel_error}")
    t = start_radius(op.d, delta)
    fd_start = _fd_widen.begin(op)
    # Krylov-part target: total width (1+tol) needs high_K/low_K ≤ (1+tol)(1−η)/(1+η).
    target = (1.0 + tol) * (1.0 - eta) / (1.0 + eta)
    rounding_limited = target < 1.0 + tol / 4
    if rounding_limited:
        target = 1.0 + tol / 4
    history: list[tuple[int, float, float]] = []

    def stop_tridiag(alpha, beta, breakdown):
        m = len(alpha)
        low = norm_lower(alpha, beta)
        if low == 0.0:
            return breakdown
        bound = KrylovBound(alpha, beta, t, breakdown, floor=low)
        ok = bound.exceeds(low * target)
        if ok or m & (m - 1) == 0:  # record at powers of two and at the end
            history.append((m, low, bound.high(rel=1e-3)))
        return ok

    with _bar(progress, min(max_iter, op.d), "spectral_norm (Lanczos)") as bar:
        st = lanczos(
            op,
            max_iter=max_iter,
            seed=seed,
            stop_tridiag=stop_tridiag,
            progress=bar,
            basis_budget_bytes=basis_budget_bytes,
            basis_device=basis_device,
        )
    a, b = st.alpha.numpy(), st.beta.numpy()
    theta, S = tridiag_eig(a, b)
    resid = np.abs(b[-1]) * np.abs(S[-1])
    rho = norm_lower(a, b)
    high_k = KrylovBound(a, b, t, st.breakdown, floor=rho).high() if rho > 0 else 0.0
    if not history or history[-1][0] != st.n_hvp:
        history.append((st.n_hvp, rho, high_k))
    low, high = rho / (1.0 + eta), high_k / (1.0 - eta)
    converged = rho == 0.0 or high_k <= rho * target * (1 + 1e-12)
    est = Estimate(
        name="spectral_norm",
        value=rho,
        low=low,
        high=high,
        confidence=confidence,
        n_hvp=st.n_hvp,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details={
            "lambda_max": float(theta[-1]),
            "lambda_min": float(theta[0]),
            "residual_max": float(resid[-1]),
            "residual_min": float(resid[0]),
            "iterations": st.n_hvp,
            "converged": bool(converged),
            "breakdown": bool(st.breakdown),
            "tol": tol,
            "rounding": eta,
            "rounding_limited": bool(rounding_limited),
            "bound": "random-start Krylov (Kuczyński–Woźniakowski; optimal polynomial via the Christoffel function of T_m)",
            "history": history,
        },
    )
    return _fd_widen.widen(est, op, fd_start)


class Eigenpairs(NamedTuple):
    """Ritz approximations of k eigenpairs.

    Attributes:
        values: (k,) float64 Ritz values, ordered as requested by ``which``.
        vectors: (k, d) unit Ritz vectors (operator dtype), row i for values[i].
        residuals: (k,) float64 ‖Hy − θy‖₂; an eigenvalue of H lies within
            ``residuals[i]`` of ``values[i]``.
        n_hvp: HVPs spent.
        converged: whether every residual reached ``tol · max|θ|``.
        restarts: random restarts after exhausted Krylov spaces (0 normally).

    Example:
        >>> pairs = top_eigenpairs(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
        ...                        1, progress=False)
        >>> round(pairs.values.item(), 12), pairs.vectors.shape, pairs.converged
        (3.0, torch.Size([1, 3]), True)
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    n_hvp: int
    converged: bool
    restarts: int = 0


_WHICH = ("LM", "LA", "SA")


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    if which == "LA":
        return torch.arange(len(theta) - 1, len(theta) - 1 - k, -1).clamp(min=0)[
            : min(k, len(theta))
        ]
    if which == "SA":
        return torch.arange(min(k, len(theta)))
    return torch.argsort(theta.abs(), descending=True, stable=True)[:k]


def top_eigenpairs(
    op,
    k: int,
    *,
    which: str = "LM",
    tol: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = True,
    basis_budget_bytes: int | None = None,
    basis_device=None,
) -> Eigenpairs:
    """The k extreme eigenpairs of H by Lanczos with full re-orthogonalisation.

    Stops when every wanted Ritz pair has residual ‖Hy − θy‖ ≤ tol · max|θ|.
    Always returns exactly k pairs: when the Krylov space becomes invariant before
    k Ritz values exist (rank-1 H, identity, zero), Lanczos restarts from a new
    random vector orthogonal to the space found, so the remaining pairs are proven
    eigenpairs of the complement (e.g. zeros of a low-rank H). Cost: one HVP per
    iteration (≤ ``max(max_iter, k)``); memory as in :func:`lanczos`, and the Ritz
    vectors read the (possibly spilled) basis once more.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        k: number of eigenpairs (1 ≤ k ≤ d).
        which: ``"LM"`` largest magnitude, ``"LA"`` largest, ``"SA"`` smallest (algebraic).
        tol, max_iter, seed, progress: as in :func:`spectral_norm`.
        basis_budget_bytes, basis_device: see :func:`lanczos`.

    Example:
        >>> H = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> pairs = top_eigenpairs(H, 2, progress=False)
        >>> [round(v, 8) for v in pairs.values.tolist()]
        [10.0, 9.0]
        >>> top_eigenpairs(torch.zeros(5, 5, dtype=torch.float64), 3, progress=False).values.tolist()
        [0.0, 0.0, 0.0]
    """
    op = as_operator(op)
    if which not in _WHICH:
        raise ConfigError(f"which must be one of {_WHICH}, got {which!r}")
    if not 1 <= int(k) <= op.d:
        raise ConfigError(f"k must be between 1 and d = {op.d}, got {k}")
    k = int(k)

    def stop(theta, resid):
        if len(theta) < k:
            return False
        idx = _select(theta, k, which)
        return bool((resid[idx] <= tol * theta.abs().max()).all())

    with _bar(progress, min(max(max_iter, k), op.d), f"top_eigenpairs (k={k})") as bar:
        st = lanczos(
            op,
            max_iter=max(max_iter, k),
            seed=seed,
            stop=stop,
            keep_basis=True,
            progress=bar,
            restart=True,
            basis_budget_bytes=basis_budget_bytes,
            basis_device=basis_device,
        )
    theta, S, resid = ritz(st.alpha, st.beta)
    if len(theta) < k:  # cannot happen: each HVP adds a Ritz value and max_iter ≥ k
        raise RuntimeError(f"Lanczos produced {len(theta)} < k = {k} Ritz values")
    idx = _select(theta, k, which)
    try:
        vectors = st.basis.combine(S[:, idx].T).to(op.dtype)  # streams over the basis once
    finally:
        st.basis.close()
    converged = bool((resid[idx] <= tol * theta.abs().max()).all())
    return Eigenpairs(theta[idx], vectors, resid[idx], st.n_hvp, converged, st.restarts)


@register_estimator(
    "spectral",
    metric="H(L, Φ_AdaSGD)",
    bound="d‖H‖₂",
    metric_rotated="H(L∘R, Φ_AdaSGD)",
    bound_rotated="d‖RᵀHR‖₂",
    per_dim="value",
    hvp_cost=lambda o, d: min(o["max_iter"], d),
)
def spectral_entry(
    op, *, seed: int = 0, progress: bool = False, tol: float = 1e-4, max_iter: int = 300
) -> Estimate:
    """‖H‖₂ by Lanczos with a 99% random-start upper bound (:func:`spectral_norm`).

    The row reports ‖H‖₂ as the value and d‖H‖₂ (the AdaSGD smoothness, paper 000
    Table 2) as the bound. Lanczos stops once the largest |eigenvalue| converged, so
    the smallest Ritz value is labelled ``lambda_min_unconverged`` in the details.

    Args:
        tol: relative interval width at which Lanczos stops.
        max_iter: cap on Lanczos steps (= HVPs); the interval is wider when reached.

    Example:
        >>> est = spectral_entry(torch.diag(torch.tensor([3.0, -5.0], dtype=torch.float64)))
        >>> round(est.value, 10), round(est.details["lambda_min_unconverged"], 10)
        (5.0, -5.0)
    """
    est = spectral_norm(op, tol=tol, max_iter=max_iter, seed=seed, progress=progress)
    details = dict(est.details)
    details["lambda_min_unconverged"] = details.pop("lambda_min")
    return dataclasses.replace(est, details=details)

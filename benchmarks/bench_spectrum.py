"""Trace and spectral density: hessnorm against PyHessian and curvlinops, same models.

For each reference problem (the test suite's MLP, conv net with BatchNorm in eval
mode, tiny transformer; float64, CPU) the exact Hessian gives tr(H) and the
eigenvalues. Then, at the same HVP budget:

* trace, 60 HVPs, 5 seeds: hessnorm ``trace`` (Hutch++ and Hutchinson, batched),
  PyHessian ``hessian.trace(maxIter=60, tol=0)`` (Hutchinson, one HVP at a time),
  curvlinops ``hutchpp_trace`` and ``hutchinson_trace`` on ``HessianLinearOperator``.
  Columns: HVPs, mean seconds per run, relative RMSE over the seeds, and for
  hessnorm how many of its 95% intervals covered the truth.
* density, 8 probes x 40 Lanczos steps: hessnorm ``spectral_density`` (lockstep,
  fully re-orthogonalised), PyHessian ``hessian.density(iter=40, n_v=8)``,
  curvlinops ``lanczos_approximate_spectrum(ncv=40, num_repeats=8)`` (Papyan 2020;
  no re-orthogonalisation; returns a density on a grid, not nodes, plus the HVPs
  of its boundary estimate). Columns: HVPs, seconds, 1-Wasserstein distance of the
  measure to the exact eigenvalue distribution (curvlinops: its grid density taken
  as a measure on the grid), and |largest node − λ_max| (nodes only).

Every method runs once untimed first. Nothing is asserted. Run:
    python benchmarks/bench_spectrum.py [--threads 2] [--seeds 5] [--problems mlp,conv_bn]
Peers are optional (``pip install -e .[bench]``); missing ones are reported.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from _peers import MeanLoss

import hessnorm as hn
from hessnorm.estimators import exact
from hessnorm.estimators.density import spectral_density
from hessnorm.estimators.trace import trace
from hessnorm.operator import math_attention
from hessnorm.testing import problem_parts

N_TRACE = 60
PROBES, STEPS = 8, 40


def problems(names=("mlp", "conv_bn", "transformer")):
    for name in names:
        model, loss_fn, batches = problem_parts(name)
        model = model.double().eval()  # BatchNorm on running statistics for every library
        x, y = batches[0]
        batch = (x.double() if x.is_floating_point() else x, y)
        yield name, model, loss_fn, batch


def w1(nodes, weights, eigenvalues):
    x = torch.cat([nodes, eigenvalues])
    mass = torch.cat([weights / weights.sum(), torch.full_like(eigenvalues, -1 / len(eigenvalues))])
    order = torch.argsort(x)
    return float((torch.cumsum(mass[order], 0)[:-1].abs() * torch.diff(x[order])).sum())


def timed(fn, *a, **k):
    fn(*a, **k)  # warm-up
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


# ----------------------------------------------------------------------------- peers
def _pyhessian(model, loss_fn, batch):
    import pyhessian  # noqa: F401

    ph = sys.modules["pyhessian.hessian"]
    return ph, ph.hessian(model, loss_fn, data=batch, cuda=False)


class _Count:
    n = 0


def _pyhessian_counted(fn):
    ph = sys.modules["pyhessian.hessian"]
    original, count = ph.hessian_vector_product, _Count()

    def counted(*a, **k):
        count.n += 1
        return original(*a, **k)

    ph.hessian_vector_product = counted
    try:
        out = fn()
    finally:
        ph.hessian_vector_product = original
    return out, count.n


def _curvlinops_op(model, loss_fn, batch):
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    A = HessianLinearOperator(model, MeanLoss(loss_fn), params, [batch], check_deterministic=False)
    count = _Count()
    inner = A._matmat

    def counted(M):
        count.n += M[0].shape[-1]
        return inner(M)

    A._matmat = counted
    return A, count


def trace_rows(model, loss_fn, batch, op, truth, seeds):
    rows = []

    def ours(method):
        ests, secs = [], []
        for s in seeds:
            est, sec = timed(trace, op, n=N_TRACE, method=method, seed=s, progress=False)
            ests.append(est)
            secs.append(sec)
        errs = [(e.value - truth) / abs(truth) for e in ests]
        cov = f"{sum(e.covers(truth) for e in ests)}/{len(ests)}"
        return N_TRACE, sum(secs) / len(secs), math.sqrt(sum(x * x for x in errs) / len(errs)), cov

    rows.append(("hessnorm trace (Hutch++)", ours("hutch++")))
    rows.append(("hessnorm trace (Hutchinson)", ours("hutchinson")))
    try:
        with math_attention():
            _, h = _pyhessian(model, loss_fn, batch)
            errs, secs, n = [], [], 0
            for s in seeds:
                torch.manual_seed(s)  # PyHessian draws probes from the global RNG
                (samples, n), sec = timed(
                    lambda: _pyhessian_counted(lambda: h.trace(maxIter=N_TRACE, tol=0.0))
                )
                errs.append((sum(samples) / len(samples) - truth) / abs(truth))
                secs.append(sec)
            n = n  # HVPs of one (timed) run
        rows.append(("PyHessian trace (Hutchinson)", (n, sum(secs) / len(secs), _rms(errs), "-")))
    except Exception as exc:
        rows.append(("PyHessian trace (Hutchinson)", f"{type(exc).__name__}: {str(exc)[:60]}"))
    for label, fname in (
        ("curvlinops hutchpp_trace", "hutchpp_trace"),
        ("curvlinops hutchinson_trace", "hutchinson_trace"),
    ):
        try:
            import curvlinops

            fn = getattr(curvlinops, fname)
            with math_attention():
                A, count = _curvlinops_op(model, loss_fn, batch)
                errs, secs = [], []
                for s in seeds:
                    torch.manual_seed(s)
                    val, sec = timed(fn, A, num_matvecs=N_TRACE)
                    errs.append((float(val) - truth) / abs(truth))
                    secs.append(sec)
                n = count.n // (2 * len(seeds))
            rows.append((label, (n, sum(secs) / len(secs), _rms(errs), "-")))
        except Exception as exc:
            rows.append((label, f"{type(exc).__name__}: {str(exc)[:60]}"))
    return rows


def _rms(errs):
    return math.sqrt(sum(x * x for x in errs) / len(errs))


def density_rows(model, loss_fn, batch, op, lam):
    rows = []
    lmax = float(lam[-1])
    sd, sec = timed(spectral_density, op, n_probes=PROBES, steps=STEPS, seed=0, progress=False)
    rows.append(
        (
            "hessnorm spectral_density (SLQ)",
            (sd.n_hvp, sec, sd.wasserstein(lam), abs(sd.lambda_max - lmax)),
        )
    )
    try:
        with math_attention():
            _, h = _pyhessian(model, loss_fn, batch)

            def run():
                torch.manual_seed(0)
                return _pyhessian_counted(lambda: h.density(iter=STEPS, n_v=PROBES))

            ((eigs, weights), n), sec = timed(run)
        nodes = torch.tensor(eigs, dtype=torch.float64).reshape(-1)
        wts = torch.tensor(weights, dtype=torch.float64).reshape(-1)
        rows.append(
            (
                "PyHessian density (SLQ)",
                (n, sec, w1(nodes, wts, lam), abs(float(nodes.max()) - lmax)),
            )
        )
    except Exception as exc:
        rows.append(("PyHessian density (SLQ)", f"{type(exc).__name__}: {str(exc)[:60]}"))
    try:
        from curvlinops import lanczos_approximate_spectrum

        with math_attention():
            A, count = _curvlinops_op(model, loss_fn, batch)

            def run():
                torch.manual_seed(0)
                return lanczos_approximate_spectrum(A, ncv=STEPS, num_repeats=PROBES)

            (grid, dens), sec = timed(run)
        n = count.n // 2
        rows.append(
            (
                "curvlinops lanczos_approximate_spectrum",
                (n, sec, w1(grid.double(), dens.double(), lam), None),
            )
        )
    except Exception as exc:
        rows.append(
            ("curvlinops lanczos_approximate_spectrum", f"{type(exc).__name__}: {str(exc)[:60]}")
        )
    return rows


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--problems", default="mlp,conv_bn,transformer", help="comma-separated subset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    print(f"torch {torch.__version__}, CPU, {args.threads} threads, float64\n")
    print(
        f"{'problem':<18}{'quantity':<9}{'library':<42}{'HVPs':>6}{'seconds':>9}{'error':>10}{'extra':>12}"
    )
    for name, model, loss_fn, batch in problems(args.problems.split(",")):
        op = hn.HessianOperator.from_module(
            model, loss_fn, batch, dtype=torch.float64, batchnorm="frozen"
        )
        H = exact.hessian(op)
        truth = float(H.trace())
        lam = torch.linalg.eigvalsh(H)
        label = f"{name} d={op.d}"
        for lib, r in trace_rows(model, loss_fn, batch, op, truth, seeds):
            if isinstance(r, str):
                print(f"{label:<18}{'trace':<9}{lib:<42}  failed: {r}")
                continue
            n, sec, err, cov = r
            print(
                f"{label:<18}{'trace':<9}{lib:<42}{n:>6}{sec:>9.3f}{err:>10.2e}{('covered ' + cov) if cov != '-' else '':>12}"
            )
        for lib, r in density_rows(model, loss_fn, batch, op, lam):
            if isinstance(r, str):
                print(f"{label:<18}{'density':<9}{lib:<42}  failed: {r}")
                continue
            n, sec, err, dl = r
            extra = "-" if dl is None else f"{dl:.1e}"
            print(f"{label:<18}{'density':<9}{lib:<42}{n:>6}{sec:>9.3f}{err:>10.2e}{extra:>12}")
    print(
        "\nerror: trace = relative RMSE over seeds; density = W1 to the exact eigenvalue "
        "distribution. extra: trace = hessnorm 95% intervals covering tr(H); density = "
        "|largest node - lambda_max|."
    )


if __name__ == "__main__":
    main()

"""Peak memory and time of Lanczos with the basis in memory or spilled to disk.

Runs ``lanczos`` for a fixed number of iterations on a cheap diagonal operator (the
HVP is O(d), so the basis handling dominates), once per process so that peak RSS
(``ru_maxrss``) is that of one mode:

    PYTHONPATH=. python benchmarks/bench_lanczos_spill.py 2e7 30 disk
    PYTHONPATH=. python benchmarks/bench_lanczos_spill.py 2e7 30 mem

Measured (2 shared CPU cores, load ≈ 12, d = 2·10⁷ float32, 30 iterations):
disk 12.0 s/iteration, peak RSS 1.27 GiB, 69.3 GiB read / 2.24 GiB written;
in memory 9.7 s/iteration, peak RSS 3.28 GiB (basis 2.24 GiB); identical α.
"""

import resource
import sys
import time

import torch

from hessnorm.estimators.lanczos import lanczos


class Diag:
    def __init__(self, D):
        self.D, self.d, self.dtype, self.device = D, D.numel(), D.dtype, D.device
        self.matvec_count = 0

    def hvp(self, v):
        self.matvec_count += 1
        return v * self.D


def main() -> None:
    d, m, mode = int(float(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
    D = torch.rand(d, generator=torch.Generator().manual_seed(0))
    D[:3] = torch.tensor([5.0, 4.0, -3.0])
    op = Diag(D)
    budget = 0 if mode == "disk" else 1 << 40
    t = time.perf_counter()
    st = lanczos(op, max_iter=m, keep_basis=True, basis_budget_bytes=budget)
    el = time.perf_counter() - t
    read, written = st.basis.io_bytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{mode}: d={d:.1e} {op.dtype} m={st.n_hvp}: {el:.1f} s ({el / st.n_hvp:.2f} s/iter), "
        f"peak RSS {peak:.2f} GiB (basis {st.n_hvp * d * 4 / 2**30:.2f} GiB), "
        f"disk read {read / 2**30:.1f} GiB, written {written / 2**30:.2f} GiB"
    )
    st.basis.close()


if __name__ == "__main__":
    main()

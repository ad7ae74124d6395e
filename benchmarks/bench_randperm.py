"""Build time, index memory and apply time of RandPerm² at large d.

    PYTHONPATH=. python benchmarks/bench_randperm.py 1e7

Measured (2 shared CPU cores, load ≈ 12, float32, d = 10⁷): build 10.1 s, indices
0.075 GiB (int32), apply 3.7 s, apply_T 3.9 s, round-trip error 3.6e-6.
"""

import resource
import sys
import time

import torch

from hessnorm.rotation import RandPerm


def main() -> None:
    d = int(float(sys.argv[1]))
    x = torch.randn(d)
    t = time.perf_counter()
    R = RandPerm(d)
    build = time.perf_counter() - t
    idx = sum(p.numel() * p.element_size() for p in R._perms) / 2**30
    ta, tt = [], []
    for _ in range(3):
        t = time.perf_counter()
        y = R.apply(x)
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        z = R.apply_T(y)
        tt.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"d={d:.2e} parts={R.parts}: build {build:.1f} s, indices {idx:.3f} GiB, apply "
        f"{min(ta):.2f} s, apply_T {min(tt):.2f} s, error {float((z - x).abs().max()):.1e}, "
        f"peak RSS {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main()

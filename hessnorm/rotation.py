"""Orthogonal transforms R of the flat parameter vector, for rotated losses L(R x~).

Paper 000 (Xie, Mohamadi, Li) compares Adam on a loss L with Adam on L∘R: the
rotated loss has Hessian RᵀHR, the same spectrum (so AdaSGD and ‖H‖₂ do not see
R) but a different (1,1)-norm. Three transforms are provided:

* :class:`Identity` — R = I.
* :class:`RandPerm` — the cheap rotation of App. D.2 used for GPT-2: permute the
  entries, view them as a 3-D tensor and multiply each axis by a small random
  orthogonal matrix; chained ``depth`` times. Memory: one permutation index per
  layer plus a handful of small matrices, so it scales to d ≈ 10⁸.
* :class:`ExpSkew` — the dense R = exp(tA), A = M − Mᵀ of App. D.1 (Table 1),
  for small d.

All three are exactly orthogonal on R^d and are built from ``seed`` alone with a
CPU ``torch.Generator`` in float64, so one seed gives one rotation on every device.
``R.apply(x)`` computes Rx and ``R.apply_T(x)`` computes Rᵀx for x of shape (d,)
or (k, d); the transform follows the dtype and device of x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, ShapeError

__all__ = [
    "Identity",
    "RandPerm",
    "ExpSkew",
    "haar_orthogonal",
    "from_spec",
    "parse",
    "spec_string",
]

# Parts of at most this size get one dense Haar matrix instead of a 3-D factorisation.
_DENSE_PART = 512
# Indices converted to int64 at a time when RandPerm scatters back (32 MiB).
_SCATTER_SLICE = 1 << 22


def haar_orthogonal(n: int, generator: torch.Generator) -> Tensor:
    """A Haar-distributed random orthogonal (n, n) matrix in float64 on the CPU.

    QR of a standard Gaussian matrix with the signs of R's diagonal moved into Q
    (Mezzadri 2007), which makes the distribution exactly Haar.

    Example:
        >>> Q = haar_orthogonal(4, torch.Generator().manual_seed(0))
        >>> Q.dtype, torch.allclose(Q.T @ Q, torch.eye(4, dtype=torch.float64))
        (torch.float64, True)
    """
    G = torch.randn(n, n, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return Q * signs


def _split_dims(d: int) -> list[tuple[int, ...]]:
    """Cut d into parts: large ones as (s1, s2, s3) with near-equal factors, a small dense rest.

    Greedy: take the largest a·b·c ≤ m with a, b near m^(1/3), then recurse on the
    remainder m − abc < ab ≈ m^(2/3); the last part (≤ 512) is one dense block.
    For d = 1.2·10⁸ this gives parts 493³-ish, 62³-ish, 15³-ish and a tiny rest.
    """
    parts: list[tuple[int, ...]] = []
    m = d
    while m > _DENSE_PART:
        root = round(m ** (1.0 / 3.0))
        best = (0, (1, 1, 1))
        for a in range(max(2, root - 2), root + 2):
            for b in range(a, a + 3):
                c = m // (a * b)
                if c >= 2 and a * b * c > best[0]:
                    best = (a * b * c, (a, b, c))
        parts.append(best[1])
        m -= best[0]
    if m > 0:
        parts.append((m,))
    return parts


class _Rotation:
    """Shared input handling: (d,) or (k, d) floating tensors, any dtype and device."""

    d: int

    def _check(self, x: Tensor) -> tuple[Tensor, bool]:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ShapeError(
                f"rotations act on floating tensors, got {type(x).__name__} {getattr(x, 'dtype', '')}"
            )
        if x.dim() not in (1, 2) or x.shape[-1] != self.d:
            raise ShapeError(
                f"x has shape {tuple(x.shape)}; this rotation acts on ({self.d},) or (k, {self.d})"
            )
        return (x.unsqueeze(0), True) if x.dim() == 1 else (x, False)

    def apply(self, x: Tensor) -> Tensor:
        """R x for x of shape (d,) or (k, d)."""
        X, single = self._check(x)
        out = self._forward(X)
        return out[0] if single else out

    def apply_T(self, x: Tensor) -> Tensor:
        """Rᵀ x for x of shape (d,) or (k, d)."""
        X, single = self._check(x)
        out = self._backward(X)
        return out[0] if single else out

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense (d, d) matrix R (small d only: R = apply applied to the identity)."""
        return self.apply(torch.eye(self.d, dtype=dtype)).T

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x)


class Identity(_Rotation):
    """R = I on R^d.

    Example:
        >>> R = Identity(3)
        >>> R.apply(torch.tensor([1.0, 2.0, 3.0])).tolist(), R.spec
        ([1.0, 2.0, 3.0], {'kind': 'Identity', 'd': 3})
    """

    def __init__(self, d: int) -> None:
        self.d = _check_d(d)

    def _forward(self, X: Tensor) -> Tensor:
        return X.clone()

    _backward = _forward

    @property
    def spec(self) -> dict:
        return {"kind": "Identity", "d": self.d}

    def __repr__(self) -> str:
        return f"Identity(d={self.d})"


class RandPerm(_Rotation):
    """RandPerm^depth of paper 000, App. D.2, exactly orthogonal for every d.

    One layer maps x to B(Px): P permutes the entries with a random permutation,
    then B cuts the permuted vector into consecutive parts, views each part of size
    s1·s2·s3 as a 3-D tensor and multiplies each axis by its own Haar-random
    orthogonal matrix (B = Q1 ⊗ Q2 ⊗ Q3 on that part). ``depth`` layers are chained
    with independent permutations and matrices.

    Why parts: a d that does not factor into three near-equal numbers (a prime, say)
    cannot be reshaped to a cube, and zero-padding into a larger space is not
    orthogonal on R^d. Instead d is written as a sum of parts: the largest
    a·b·c ≤ d with a, b, c ≈ d^(1/3), then the same for the remainder (< d^(2/3)),
    down to a rest of at most 512 entries that gets one dense orthogonal matrix.
    Each part's map is orthogonal, so B is block-diagonal orthogonal and R is
    exactly orthogonal. Parts do not mix within a layer, but the random
    permutation of the next layer scatters every part across all parts; for
    d ≥ 10⁴ about 98% or more of the entries lie in the first part anyway (the
    smallest share we measured over d = 10⁴ … 2·10⁵ is 98.2%, at d = 17,215).

    Memory: ``depth`` permutation indices, int32 while d < 2³¹ (4d bytes each: 0.5 GB
    per layer at d = 1.24·10⁸; the same permutation ``torch.randperm`` gives in
    int64), plus O(d^(2/3)) matrix entries; the work per application is O(d^(4/3))
    flops (2·d·(s1 + s2 + s3) per layer) plus one gather per layer. On first use on a
    device the indices, and on a device / dtype the matrices, are copied there and
    cached. One application to a float32 vector takes about 2.5 s at d = 10⁷ on two
    shared CPU cores (the 3-D products dominate; ≈ 1 min extrapolated to 1.24·10⁸).

    Args:
        d: dimension.
        depth: number of chained layers (the paper uses RandPerm², depth=2).
        seed: the rotation is a deterministic function of (d, depth, seed).

    Example:
        >>> R = RandPerm(7, seed=1)
        >>> x = torch.arange(7.0, dtype=torch.float64)
        >>> bool(torch.allclose(R.apply_T(R.apply(x)), x))
        True
    """

    def __init__(self, d: int, depth: int = 2, seed: int = 0) -> None:
        self.d = _check_d(d)
        if int(depth) < 1:
            raise ConfigError(f"depth must be a positive integer, got {depth}")
        self.depth = int(depth)
        self.seed = int(seed)
        self.parts = _split_dims(self.d)
        g = torch.Generator().manual_seed(self.seed)
        self._perms: list[Tensor] = []
        self._mats: list[list[list[Tensor]]] = []  # layer -> part -> matrices (float64, CPU)
        for _ in range(self.depth):
            self._perms.append(torch.randperm(self.d, generator=g, dtype=self._index_dtype))
            self._mats.append([[haar_orthogonal(s, g) for s in shape] for shape in self.parts])
        self._cache: dict = {}

    @property
    def spec(self) -> dict:
        return {"kind": "RandPerm", "d": self.d, "depth": self.depth, "seed": self.seed}

    def __repr__(self) -> str:
        return f"RandPerm(d={self.d}, depth={self.depth}, seed={self.seed}, parts={self.parts})"

    @property
    def _index_dtype(self) -> torch.dtype:
        return torch.int32 if self.d < 2**31 else torch.int64

    def _on(self, device: torch.device, dtype: torch.dtype):
        key = (str(device), dtype)
        if key not in self._cache:
            pkey = ("perms", str(device))
            if pkey not in self._cache:  # one copy of the indices per device, any dtype
                self._cache[pkey] = [p.to(device) for p in self._perms]
            perms = self._cache[pkey]
            mats = [
                [[q.to(device=device, dtype=dtype) for q in part] for part in layer]
                for layer in self._mats
            ]
            self._cache[key] = (perms, mats)
        return self._cache[key]

    def _mix(self, X: Tensor, mats: list[list[Tensor]], transpose: bool) -> Tensor:
        k = X.shape[0]
        out, start = [], 0
        for shape, qs in zip(self.parts, mats):
            size = math.prod(shape)
            part = X[:, start : start + size]
            start += size
            if len(shape) == 1:
                q = qs[0]
                out.append(part @ (q if transpose else q.T))
                continue
            s1, s2, s3 = shape
            q1, q2, q3 = (q.T for q in qs) if transpose else qs
            y = part.reshape(k, s1, s2, s3) @ q3.T  # axis 3
            y = torch.matmul(q2, y)  # axis 2: (s2, s2) @ (k, s1, s2, s3)
            y = torch.matmul(q1, y.reshape(k, s1, s2 * s3))  # axis 1
            out.append(y.reshape(k, size))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def _forward(self, X: Tensor) -> Tensor:
        perms, mats = self._on(X.device, X.dtype)
        for perm, layer in zip(perms, mats):
            X = self._mix(torch.index_select(X, 1, perm), layer, transpose=False)
        return X

    def _backward(self, X: Tensor) -> Tensor:
        perms, mats = self._on(X.device, X.dtype)
        for perm, layer in zip(reversed(perms), reversed(mats)):
            Y = self._mix(X, layer, transpose=True)
            # Pᵀ: scatter back instead of storing the inverse permutation; index_copy_
            # wants int64 indices, converted in slices so the copy stays small
            X = torch.empty_like(Y)
            for s in range(0, self.d, _SCATTER_SLICE):
                e = min(self.d, s + _SCATTER_SLICE)
                X.index_copy_(1, perm[s:e].long(), Y[:, s:e])
        return X


class ExpSkew(_Rotation):
    """R = exp(tA) with A = M − Mᵀ, M a standard Gaussian (d, d) matrix (paper 000, App. D.1).

    A is skew-symmetric, so exp(tA) is orthogonal for every t; t = 0 gives I and
    large t approaches a Haar-random rotation. Dense: O(d²) memory and O(d³) to
    build (``torch.linalg.matrix_exp`` in float64), meant for the small quadratics
    of Section 4.1 (Table 1 uses d = 1000, t ∈ {0.002, 0.008, 0.015, 0.1}).

    Example:
        >>> R = ExpSkew(5, t=0.3, seed=0).matrix()
        >>> bool(torch.allclose(R.T @ R, torch.eye(5, dtype=torch.float64)))
        True
    """

    def __init__(self, d: int, t: float, seed: int = 0) -> None:
        self.d = _check_d(d)
        self.t = float(t)
        if not math.isfinite(self.t):
            raise ConfigError(f"t must be finite, got {t}")
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        M = torch.randn(self.d, self.d, generator=g, dtype=torch.float64)
        self.R = torch.linalg.matrix_exp(self.t * (M - M.T))
        self._cache: dict = {}

    @property
    def spec(self) -> dict:
        return {"kind": "ExpSkew", "d": self.d, "t": self.t, "seed": self.seed}

    def __repr__(self) -> str:
        return f"ExpSkew(d={self.d}, t={self.t}, seed={self.seed})"

    def _on(self, X: Tensor) -> Tensor:
        key = (str(X.device), X.dtype)
        if key not in self._cache:
            self._cache[key] = self.R.to(device=X.device, dtype=X.dtype)
        return self._cache[key]

    def _forward(self, X: Tensor) -> Tensor:
        return X @ self._on(X).T

    def _backward(self, X: Tensor) -> Tensor:
        return X @ self._on(X)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        return self.R.to(dtype)


def from_spec(spec: Mapping) -> _Rotation:
    """Rebuild a rotation from its ``spec`` (same d, parameters and seed: same matrix).

    Example:
        >>> R = RandPerm(6, depth=2, seed=1)
        >>> R.spec, torch.equal(from_spec(R.spec).matrix(), R.matrix())
        ({'kind': 'RandPerm', 'd': 6, 'depth': 2, 'seed': 1}, True)
    """
    kind = spec.get("kind")
    if kind == "Identity":
        return Identity(spec["d"])
    if kind == "RandPerm":
        return RandPerm(spec["d"], depth=spec.get("depth", 2), seed=spec.get("seed", 0))
    if kind == "ExpSkew":
        return ExpSkew(spec["d"], spec["t"], seed=spec.get("seed", 0))
    raise ConfigError(f"unknown rotation kind {kind!r}; expected Identity, RandPerm or ExpSkew")


def parse(spec, d: int):
    """A rotation of R^d from a spec: a rotation object, a ``spec`` dict, or a string.

    Strings name the kind and its options: ``"randperm:depth=2,seed=0"``,
    ``"expskew:t=0.1,seed=0"``, ``"identity"`` (the spelling ``hessnorm train
    --rotation`` and ``hessnorm analyze --rotation`` accept); dicts are the
    ``.spec`` of a rotation; an object with ``apply`` and ``apply_T`` is returned
    unchanged.

    Raises:
        ConfigError: an unknown kind, a malformed option or a bad value.

    Example:
        >>> parse("randperm:depth=2,seed=0", 10).spec
        {'kind': 'RandPerm', 'd': 10, 'depth': 2, 'seed': 0}
        >>> parse("identity", 4).spec
        {'kind': 'Identity', 'd': 4}
    """
    if isinstance(spec, _Rotation):
        return spec
    if isinstance(spec, Mapping):
        return from_spec(spec)
    if not isinstance(spec, str) or not spec:
        if callable(getattr(spec, "apply", None)) and callable(getattr(spec, "apply_T", None)):
            return spec
        raise ConfigError(
            f"rotation must be a string like 'randperm:depth=2,seed=0', got {spec!r}."
        )
    kind, _, opts = spec.partition(":")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"rotation option {item!r} in {spec!r} must be key=value.")
        try:
            kwargs[key.strip()] = float(value) if key.strip() == "t" else int(value)
        except ValueError as exc:
            raise ConfigError(f"rotation option {item!r} in {spec!r}: {exc}") from exc
    kinds = {"randperm": RandPerm, "expskew": ExpSkew, "identity": Identity}
    if kind.lower() not in kinds:
        raise ConfigError(
            f"unknown rotation {kind!r}; choose one of {sorted(kinds)} "
            f"(e.g. 'randperm:depth=2,seed=0')."
        )
    try:
        return kinds[kind.lower()](d, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for rotation {kind!r}: {exc}") from exc


def spec_string(rotation) -> str:
    """The one-line name of a rotation used in result tables (``"none"`` for None).

    A string is returned as given; a rotation object or spec dict becomes
    ``"Kind:opt=value,..."`` (without ``d``).

    Example:
        >>> spec_string(RandPerm(10, depth=2, seed=0))
        'RandPerm:depth=2,seed=0'
        >>> spec_string(None), spec_string("expskew:t=0.1")
        ('none', 'expskew:t=0.1')
    """
    if rotation is None:
        return "none"
    if isinstance(rotation, str):
        return rotation
    spec = getattr(rotation, "spec", rotation)
    if isinstance(spec, Mapping):
        kind = spec.get("kind", "rotation")
        opts = ",".join(f"{k}={v}" for k, v in spec.items() if k not in ("kind", "d"))
        return f"{kind}:{opts}" if opts else kind
    return str(spec)


def _check_d(d: int) -> int:
    if isinstance(d, bool) or int(d) != d or int(d) < 1:
        raise ConfigError(f"the dimension d must be a positive integer, got {d!r}")
    return int(d)

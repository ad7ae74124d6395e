"""Adam's diagonal preconditioner P = diag(√v̂ + ε), read from optimizer state.

Adam updates θ ← θ − η·m̂/P with v̂ = v/(1 − β₂ᵗ) the bias-corrected second moment and
P = √v̂ + ε (torch adds ε after the square root). Its stability is governed by the
eigenvalues of P⁻¹H (:func:`hessnorm.estimators.preconditioned.preconditioned_sharpness`),
so this module recovers P, aligned with a Hessian operator's flat parameter order,
from the checkpoints that hold it:

==================  =====================================================================
kind                how optimizer ids map to parameters
==================  =====================================================================
hessnorm-run        the trainer builds one group over ``named_parameters()`` (trainable
                    ones) in order; ``adam`` (torch Adam/AdamW), ``blockwise-adam`` (one
                    v per block of the run's partition: P block-constant), ``adasgd`` (one
                    v: P scalar), ``rotated-adam`` (Adam on the rotated flat vector: P
                    lives in rotated coordinates, see :attr:`Preconditioner.rotation`).
nanogpt             ``ckpt.pt['optimizer']`` of nanoGPT's ``configure_optimizers``: group 0
                    the parameters with dim ≥ 2, group 1 the rest, each in
                    ``named_parameters()`` order (``lm_head.weight`` is tied to
                    ``transformer.wte.weight`` and not a separate parameter).
hf                  ``checkpoint-N/optimizer.pt`` of ``transformers.Trainer``: group 0 the
                    names of ``Trainer.get_decay_parameter_names`` (not biases, not
                    LayerNorm), group 1 the rest, each in ``named_parameters()`` order.
==================  =====================================================================

Every id is checked against its parameter's shape; a mismatch, a missing state or a
state that is not Adam's raises :class:`~hessnorm.errors.CheckpointError` naming the
tensor. Factored second moments (Adafactor) are out of scope and refused.
No HVP is spent anywhere here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hessnorm._io import read_state
from hessnorm.errors import CheckpointError, ConfigError

__all__ = ["Preconditioner", "adam_denominator", "nanogpt_param_order", "hf_param_order"]

_FACTORED = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq_R", "exp_avg_sq_C")
_NANOGPT_BUFFER = re.compile(r"(^|\.)attn\.bias$")
_COMPILE_PREFIX = "_orig_mod."


def adam_denominator(
    exp_avg_sq: Tensor,
    step: float,
    beta2: float,
    eps: float,
    *,
    bias_correction: bool = True,
    eps_inside: bool = False,
) -> Tensor:
    """P = √(v/(1 − β₂ᵗ)) + ε (torch Adam; ``eps_inside``: √(v/(1 − β₂ᵗ) + ε), paper 000 Alg. 1).

    Computed in float64 as torch does it (√v / √(1 − β₂ᵗ) + ε).

    Example:
        >>> v = torch.tensor([4e-4], dtype=torch.float64)  # v̂ = 0.04 after one step
        >>> round(adam_denominator(v, 1, 0.99, 1e-8).item(), 12)
        0.20000001
    """
    v = exp_avg_sq.detach().to(torch.float64)
    bc2 = (1.0 - beta2**step) if bias_correction else 1.0
    if bc2 <= 0:
        raise ConfigError(f"the step count must be >= 1 for bias correction, got {step}")
    if eps_inside:
        return (v / bc2 + eps).sqrt()
    return v.sqrt() / math.sqrt(bc2) + eps


@dataclasses.dataclass(frozen=True)
class Preconditioner:
    """The diagonal of Adam's P in a Hessian operator's flat order, with its hyper-parameters.

    Attributes:
        diag: (d,) float64, positive: P_ii = √v̂_i + ε.
        lr: the learning rate the last step used (the group's ``lr``), or None.
        betas: (β₁, β₂) or None.
        eps: ε or None.
        step: the optimizer's step count t (bias correction uses it).
        source: what it was read from (checkpoint kind and path, or "state_dict").
        kind: ``"adam"`` (per coordinate), ``"blockwise-adam"`` (block-constant) or
            ``"adasgd"`` (one scalar).
        rotation: for ``rotated-adam`` runs, the rotation spec; P then acts on the
            rotated coordinates x̃ = Rᵀx and goes with the rotated operator RᵀHR.
        names: parameter names covered, in flat order (None for a bare vector).

    Example:
        >>> p = Preconditioner(torch.tensor([1.0, 2.0], dtype=torch.float64), lr=1e-3,
        ...                    betas=(0.9, 0.999))
        >>> round(p.threshold, 6), p.d
        (38000.0, 2)
    """

    diag: Tensor
    lr: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    step: int | None = None
    source: str = "vector"
    kind: str = "adam"
    rotation: str | None = None
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        diag = torch.as_tensor(self.diag, dtype=torch.float64)
        if diag.dim() != 1 or diag.numel() == 0:
            raise ConfigError(f"diag must be a non-empty vector, got shape {tuple(diag.shape)}")
        bad = ~(torch.isfinite(diag) & (diag > 0))
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ConfigError(
                f"the preconditioner must be positive and finite, but entry {i} is "
                f"{float(diag[i])}{self._where(i)}; with eps = 0 a coordinate that never had "
                "a gradient has P = 0 (pass eps > 0 or select the parameters that train)"
            )
        object.__setattr__(self, "diag", diag)

    def _where(self, i: int) -> str:
        return "" if self.names is None else f" (flat index {i})"

    @property
    def d(self) -> int:
        return int(self.diag.numel())

    @property
    def threshold(self) -> float | None:
        """(2 + 2β₁)/((1 − β₁)η), Adam's stability threshold for λ_max(P⁻¹H), or None."""
        if self.lr is None or self.betas is None:
            return None
        from hessnorm.estimators.preconditioned import stability_threshold

        return stability_threshold(self.lr, self.betas[0])

    def summary(self) -> dict[str, Any]:
        """Plain-value description (what estimator details carry).

        Example:
            >>> Preconditioner(torch.ones(3), lr=0.1, betas=(0.9, 0.99), step=4).summary()["step"]
            4
        """
        return {
            "lr": self.lr,
            "beta1": None if self.betas is None else float(self.betas[0]),
            "beta2": None if self.betas is None else float(self.betas[1]),
            "eps": self.eps,
            "step": self.step,
            "source": self.source,
            "preconditioner": self.kind,
            "rotation": self.rotation,
            "p_min": float(self.diag.min()),
            "p_max": float(self.diag.max()),
        }

    # ------------------------------------------------------------- readers
    @classmethod
    def from_adam(
        cls,
        state: Mapping,
        params: Any,
        *,
        target: Any = None,
        source: str = "state_dict",
    ) -> Preconditioner:
        """P of a ``torch.optim.Adam``/``AdamW`` ``state_dict()``.

        Args:
            state: the optimizer's ``state_dict()`` (``state`` and ``param_groups``).
            params: the parameters the optimizer's ids refer to, in id order (the
                concatenation of its param groups): an ``nn.Module`` (one group over
                its trainable ``named_parameters()``), or a list of ``(name, tensor)``
                or ``(name, shape)`` pairs.
            target: the flat order of the result: a HessianOperator (its
                ``param_names``), a list of names, or None (the order of ``params``).
            source: a description kept in :attr:`source`.

        Raises:
            CheckpointError: the state does not match the parameters (naming the tensor),
                is not Adam's, is factored (Adafactor), or mixes hyper-parameters.

        Example:
            >>> net = nn.Linear(2, 1)
            >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
            >>> net(torch.ones(1, 2)).sum().backward(); opt.step()
            >>> P = Preconditioner.from_adam(opt.state_dict(), net)
            >>> P.d, P.step, [round(x, 6) for x in P.diag.tolist()]  # |g| + ε after one step
            (3, 1, [1.0, 1.0, 1.0])
        """
        id_names, shapes = _id_order(params)
        return _from_torch_adam(state, id_names, shapes, _target_names(target, id_names), source)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, target: Any, *, model: nn.Module | None = None
    ) -> Preconditioner:
        """P from a checkpoint (kind detected by :func:`hessnorm.checkpoint.detect`).

        Args:
            path: a hessnorm run checkpoint ``ckpt_XXXXXX.pt``, a nanoGPT ``ckpt.pt``,
                or a ``transformers.Trainer`` ``checkpoint-N`` folder (with
                ``optimizer.pt``).
            target: the parameters the result is aligned with: a HessianOperator (its
                ``param_names`` in flat order; a subset of the model's parameters is
                fine) or a list of names.
            model: Trainer checkpoints only: the model, whose module types decide the
                decay groups (default: built from ``config.json`` on the meta device).

        Raises:
            CheckpointError: no optimizer state, a mismatch (naming the tensor), or a
                kind without one (a plain state_dict, a ``save_pretrained`` folder).
            ConfigError: the run's optimizer has no diagonal preconditioner (SGD, SignGD).
        """
        from hessnorm.checkpoint import detect

        path = Path(path)
        kind = detect(path)
        if kind == "hessnorm-run":
            return _from_hessnorm_run(read_state(path), target, f"hessnorm-run {path}")
        if kind == "nanogpt":
            return _from_nanogpt(read_state(path), target, f"nanogpt {path}")
        if kind == "hf":
            return _from_trainer(path, target, model)
        raise CheckpointError(
            f"{path} is a {kind} checkpoint, which holds no optimizer state; Adam's "
            "preconditioner is read from a hessnorm run checkpoint, a nanoGPT ckpt.pt or a "
            "transformers Trainer checkpoint-N folder (or pass Preconditioner.from_adam a state_dict)"
        )


# ---------------------------------------------------------------- helpers


def _id_order(params: Any) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    if isinstance(params, nn.Module):
        pairs = [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    else:
        pairs = list(params)
    names, shapes = [], {}
    for item in pairs:
        if not (isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(
                "params must be an nn.Module or (name, tensor) / (name, shape) pairs in the "
                f"optimizer's id order; got an item {item!r:.80}"
            )
        n, p = item
        names.append(n)
        shapes[n] = tuple(p.shape) if isinstance(p, Tensor) else tuple(int(s) for s in p)
    return names, shapes


def _target_names(target: Any, default: list[str]) -> list[str]:
    if target is None:
        return list(default)
    names = getattr(target, "param_names", target)
    if not isinstance(names, Sequence) or isinstance(names, str):
        raise ConfigError(
            "target must be a HessianOperator (with param_names) or a list of parameter names; "
            f"got {type(target).__name__}"
        )
    return list(names)


def _group_hyper(groups: Sequence[Mapping], what: str) -> tuple[float, tuple[float, float], float]:
    """The (lr, betas, eps) shared by every group; an error if the groups differ."""
    for g in groups:
        missing = [k for k in ("lr", "betas", "eps") if k not in g]
        if missing:
            raise CheckpointError(
                f"the optimizer's param groups have no {', '.join(missing)} (keys "
                f"{sorted(k for k in g if k != 'params')}): it is not Adam-type (SGD, SignGD "
                "and momentum methods have no diagonal preconditioner)"
            )
    keys = {(float(g["lr"]), tuple(float(b) for b in g["betas"]), float(g["eps"])) for g in groups}
    if len(keys) != 1:
        raise CheckpointError(
            f"the {what} optimizer's param groups use different (lr, betas, eps): "
            f"{sorted(keys)}; one stability threshold needs one lr and β₁ (analyse the groups "
            "separately with Preconditioner.from_adam on a selection)"
        )
    return keys.pop()


def _state_of(state: Mapping, i: int, name: str, what: str) -> Mapping:
    st = state.get("state", {})
    entry = st.get(i, st.get(str(i)))
    if entry is None:
        raise CheckpointError(
            f"the {what} optimizer holds no state for parameter {name!r} (id {i}): it was "
            "never stepped (no gradient) or the state was not saved; analyse only the "
            "parameters that train (params=... when building the operator)"
        )
    if any(k in entry for k in _FACTORED):
        raise CheckpointError(
            f"the state of {name!r} is factored (Adafactor-style row/column second moments): "
            "its preconditioner is not a stored diagonal, which is out of scope here; "
            "only Adam/AdamW-type states (exp_avg_sq) are supported"
        )
    if "exp_avg_sq" not in entry:
        raise CheckpointError(
            f"the state of {name!r} has no exp_avg_sq (keys {sorted(entry)}): the {what} "
            "optimizer is not Adam-type (SGD, SignGD and momentum methods have no "
            "diagonal preconditioner)"
        )
    return entry


def _from_torch_adam(
    state: Mapping,
    id_names: list[str],
    shapes: Mapping[str, tuple[int, ...]],
    target: list[str],
    source: str,
    what: str = "",
) -> Preconditioner:
    what = what or "Adam"
    if not isinstance(state, Mapping) or "param_groups" not in state:
        raise CheckpointError(
            f"not an optimizer state_dict (expected keys 'state' and 'param_groups'), got "
            f"{type(state).__name__} with keys {list(state)[:6] if isinstance(state, Mapping) else '-'}"
        )
    groups = state["param_groups"]
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(id_names):
        raise CheckpointError(
            f"the {what} optimizer state has {len(ids)} parameters in {len(groups)} groups but "
            f"{len(id_names)} parameters were given ({', '.join(id_names[:4])}, ...); the "
            "parameters must be those the optimizer was built with, in its order"
        )
    lr, betas, eps = _group_hyper(groups, what)
    amsgrad = any(g.get("amsgrad", False) for g in groups)
    by_name: dict[str, Tensor] = {}
    steps = set()
    for i, name in zip(ids, id_names):
        entry = _state_of(state, i, name, what)
        v = entry["max_exp_avg_sq"] if amsgrad else entry["exp_avg_sq"]
        if tuple(v.shape) != tuple(shapes[name]):
            raise CheckpointError(
                f"optimizer id {i} should be parameter {name!r} of shape {tuple(shapes[name])}, "
                f"but its exp_avg_sq has shape {tuple(v.shape)}: the state and the parameters "
                "are misaligned (different model, or param groups built in another order)"
            )
        step = float(entry.get("step", 0))
        steps.add(step)
        by_name[name] = adam_denominator(v, step, betas[1], eps).reshape(-1)
    if len(steps) != 1:
        raise CheckpointError(
            f"the {what} state's parameters were stepped different numbers of times "
            f"({sorted(steps)[:4]}); bias correction needs one step count"
        )
    return _assemble(by_name, target, lr, betas, eps, int(steps.pop()), source, "adam")


def _assemble(by_name, target, lr, betas, eps, step, source, kind, rotation=None):
    missing = [n for n in target if n not in by_name]
    if missing:
        raise CheckpointError(
            f"the optimizer state has no entry for parameter(s) {missing[:5]}; it holds "
            f"{list(by_name)[:5]}...: the operator's parameters must be among the optimizer's"
        )
    diag = torch.cat([by_name[n] for n in target])
    return Preconditioner(
        diag,
        lr=lr,
        betas=betas,
        eps=eps,
        step=step,
        source=source,
        kind=kind,
        rotation=rotation,
        names=tuple(target),
    )


# ------------------------------------------------------------- hessnorm runs


def _from_hessnorm_run(ckpt: Mapping, target: Any, source: str) -> Preconditioner:
    cfg = ckpt.get("config", {})
    opt_name = cfg.get("optimizer", "?")
    names = list(ckpt["param_names"])
    model_state = ckpt["model"]
    shapes = {n: tuple(model_state[n].shape) for n in names}
    tnames = _target_names(target, names)
    _check_target_shapes(target, shapes)
    state = ckpt.get("optimizer")
    if state is None:
        raise CheckpointError(
            f"{source} holds no optimizer state; it was written by an older trainer — "
            "re-run training to save it"
        )
    if opt_name in ("sgd", "signgd", "rmsprop"):
        raise ConfigError(
            f"{source} was trained with {opt_name}, which has no Adam preconditioner "
            "(sgd/signgd: none; rmsprop: no β₁ stability threshold of this form); use an "
            "Adam-type run (adam, adasgd, blockwise-adam, rotated-adam)"
        )
    if opt_name == "rotated-adam":
        base = state.get("base")
        if base is None:
            raise CheckpointError(f"{source}: a rotated-adam state without its 'base' optimizer")
        d = sum(math.prod(s) for s in shapes.values())
        if list(tnames) != names:
            raise ConfigError(
                "a rotated-adam run's state lives in rotated coordinates of all parameters "
                "together; analyse the operator over all of them (no parameter selection)"
            )
        P = _from_state(base, ["<rotated>"], {"<rotated>": (d,)}, ["<rotated>"], source, cfg)
        return dataclasses.replace(P, rotation=cfg.get("rotation"), names=tuple(names))
    return _from_state(state, names, shapes, tnames, source, cfg)


def _check_target_shapes(target: Any, shapes: Mapping[str, tuple[int, ...]]) -> None:
    tshapes = getattr(target, "param_shapes", None)
    if not tshapes:
        return
    for n, s in tshapes.items():
        if n in shapes and tuple(s) != tuple(shapes[n]):
            raise CheckpointError(
                f"parameter {n!r} has shape {tuple(s)} in the operator but {tuple(shapes[n])} "
                "in the checkpoint: the operator was built from another model"
            )


def _from_state(state, names, shapes, tnames, source, cfg) -> Preconditioner:
    """Torch Adam or hessnorm's BlockwiseAdam/AdaSGD state over one group in ``names`` order."""
    groups = state["param_groups"]
    if "bias_correction" not in groups[0]:
        return _from_torch_adam(state, names, shapes, tnames, source)
    # BlockwiseAdam (and AdaSGD, its one-block case): one v per block in the first
    # parameter's state; the labels are the run's partition of the flat vector.
    if len(groups) != 1:
        raise CheckpointError(f"{source}: a BlockwiseAdam state with {len(groups)} groups")
    g = groups[0]
    ids = list(g["params"])
    if len(ids) != len(names):
        raise CheckpointError(
            f"{source}: the BlockwiseAdam state has {len(ids)} parameters but the run "
            f"{len(names)}; the checkpoint is inconsistent"
        )
    first = _first_state(state, ids[0], names[0])
    v = first["block_exp_avg_sq"]
    opt_name = cfg.get("optimizer", "blockwise-adam")
    d = sum(math.prod(shapes[n]) for n in names)
    if opt_name == "adasgd":
        labels, kind = torch.zeros(d, dtype=torch.long), "adasgd"
    elif opt_name in ("adam", "rotated-adam"):  # the paper switches: singleton blocks
        labels, kind = torch.arange(d), "adam"
    else:
        from hessnorm.partition import Partition

        part = Partition.named(cfg.get("partition", "by_tensor"), {n: shapes[n] for n in names})
        labels, kind = part.labels, "blockwise-adam"
    n_blocks = int(labels.max()) + 1
    if v.numel() != n_blocks:
        raise CheckpointError(
            f"{source}: block_exp_avg_sq has {v.numel()} entries but the run's partition "
            f"{cfg.get('partition')!r} has {n_blocks} blocks; the state does not fit the run"
        )
    betas = tuple(float(b) for b in g["betas"])
    denom = adam_denominator(
        v,
        float(first["step"]),
        betas[1],
        float(g["eps"]),
        bias_correction=bool(g["bias_correction"]),
        eps_inside=bool(g["eps_inside"]),
    )[labels]
    by_name, start = {}, 0
    for n in names:
        size = math.prod(shapes[n])
        by_name[n] = denom[start : start + size]
        start += size
    return _assemble(
        by_name, tnames, float(g["lr"]), betas, float(g["eps"]), int(first["step"]), source, kind
    )


def _first_state(state, i, name):
    st = state.get("state", {})
    entry = st.get(i, st.get(str(i)))
    if entry is None or "block_exp_avg_sq" not in entry:
        raise CheckpointError(
            f"the BlockwiseAdam state has no block second moment for {name!r}: the optimizer "
            "was never stepped before this checkpoint"
        )
    return entry


# ------------------------------------------------------------------ nanoGPT


def nanogpt_param_order(model_state: Mapping[str, Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in nanoGPT's optimizer id order, from its ``ckpt['model']`` state_dict.

    nanoGPT's ``GPT.configure_optimizers`` builds AdamW with two groups over
    ``named_parameters()``: first every tensor with dim ≥ 2 (decayed), then the rest,
    each in order. The state_dict lists parameters in the same registration order, plus
    the ``attn.bias`` causal-mask buffers (non-flash attention) and ``lm_head.weight``,
    which nanoGPT ties to ``transformer.wte.weight``; both are dropped here.

    Example:
        >>> sd = {"transformer.wte.weight": torch.zeros(5, 2), "transformer.ln_f.weight":
        ...       torch.zeros(2), "transformer.h.0.attn.bias": torch.zeros(1, 1, 3, 3),
        ...       "lm_head.weight": torch.zeros(5, 2), "transformer.wpe.weight": torch.zeros(3, 2)}
        >>> [n for n, _ in nanogpt_param_order(sd)]
        ['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.ln_f.weight']
    """
    params = []
    for k, v in model_state.items():
        name = k[len(_COMPILE_PREFIX) :] if k.startswith(_COMPILE_PREFIX) else k
        if _NANOGPT_BUFFER.search(name) or name == "lm_head.weight":
            continue
        params.append((name, tuple(v.shape)))
    return [p for p in params if len(p[1]) >= 2] + [p for p in params if len(p[1]) < 2]


def _from_nanogpt(ckpt: Mapping, target: Any, source: str) -> Preconditioner:
    state = ckpt.get("optimizer")
    if not state or not state.get("state"):
        raise CheckpointError(
            f"{source} holds no optimizer state (nanoGPT saves it in ckpt['optimizer'] after "
            "the first step); train at least one iteration before saving"
        )
    order = nanogpt_param_order(ckpt["model"])
    shapes = dict(order)
    _check_target_shapes(target, shapes)
    names = [n for n, _ in order]
    default = _named_order(ckpt["model"])
    return _from_torch_adam(
        state, names, shapes, _target_names(target, default), source, what="nanoGPT AdamW"
    )


def _named_order(model_state):
    out = []
    for k in model_state:
        name = k[len(_COMPILE_PREFIX) :] if k.startswith(_COMPILE_PREFIX) else k
        if not (_NANOGPT_BUFFER.search(name) or name == "lm_head.weight"):
            out.append(name)
    return out


# ------------------------------------------------------------ HF Trainer


def _hf_decay_names(model: nn.Module) -> list[str]:
    """The Trainer's decay rule: ``Trainer.get_decay_parameter_names`` where importable.

    Without transformers, the same rule written out (transformers 4.x–5.x): every
    parameter outside ``nn.LayerNorm`` modules whose name matches none of ``bias``,
    ``layernorm``, ``rmsnorm``, ``(^|.)norm($|.)``, ``_norm($|.)``.
    """
    try:
        from transformers import Trainer

        return list(Trainer.get_decay_parameter_names(None, model))
    except ImportError:
        pass
    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    out = []
    for mname, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            continue
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if not any(re.search(p, full.lower()) for p in patterns):
                out.append(full)
    return out


def hf_param_order(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in a Trainer's optimizer id order: decayed names first, then the rest.

    ``Trainer.create_optimizer`` builds group 0 from the trainable ``named_parameters()``
    in :func:`Trainer.get_decay_parameter_names` and group 1 from the others.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> [n for n, _ in hf_param_order(net)]
        ['0.weight', '0.bias', '1.weight', '1.bias']
    """
    decay = set(_hf_decay_names(model))
    named = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
    return [x for x in named if x[0] in decay] + [x for x in named if x[0] not in decay]


def _from_trainer(folder: Path, target: Any, model: nn.Module | None) -> Preconditioner:
    opt_file = folder / "optimizer.pt"
    if not opt_file.is_file():
        raise CheckpointError(
            f"{folder} has no optimizer.pt: a save_pretrained folder holds only weights; pass "
            "a transformers Trainer checkpoint-N folder (saved during training)"
        )
    if model is None:
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError as exc:
            from hessnorm.errors import MissingDependencyError

            raise MissingDependencyError(
                "reading a Trainer checkpoint needs transformers (pip install 'hessnorm[hf]') "
                "or the model passed as model=..."
            ) from exc
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    order = hf_param_order(model)
    shapes = dict(order)
    _check_target_shapes(target, shapes)
    default = [n for n, p in model.named_parameters() if p.requires_grad]
    state = read_state(opt_file)
    step = _trainer_step(folder)
    P = _from_torch_adam(
        state,
        [n for n, _ in order],
        shapes,
        _target_names(target, default),
        f"hf-trainer {folder}",
        what="Trainer",
    )
    if step is not None and P.step != step:
        raise CheckpointError(
            f"{folder}: optimizer.pt has step {P.step} but trainer_state.json global_step "
            f"{step}; the files come from different checkpoints"
        )
    return P


def _trainer_step(folder: Path) -> int | None:
    """global_step (optimizer updates) of ``trainer_state.json``, None when absent."""
    f = folder / "trainer_state.json"
    if not f.is_file():
        return None
    step = json.loads(f.read_text()).get("global_step")
    return None if step is None else int(step)

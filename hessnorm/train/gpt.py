"""A GPT with nanoGPT's parameter names and shapes, returning full logits.

The modules mirror nanoGPT's ``model.py`` (Karpathy) name for name, so the
``model`` state_dict of a nanoGPT ``ckpt.pt`` loads with ``load_state_dict``
unchanged (strip the ``_orig_mod.`` prefix of compiled runs first):
``transformer.wte / wpe / h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
mlp.c_proj} / ln_f`` and ``lm_head`` tied to ``wte``. Unlike nanoGPT,
``forward(idx)`` returns the logits (B, T, V) at every position and no loss, so the
Hessian operator can evaluate ``loss_fn(model(x), y)``. Attention uses
``F.scaled_dot_product_attention(is_causal=True)``.

Architecture as in paper 000 Section 4.2 (GPT-2), at any size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPTConfig", "GPT", "TINY_GPT"]


@dataclass
class GPTConfig:
    """nanoGPT's GPTConfig (same fields and defaults: GPT-2 124M with padded vocab).

    Example:
        >>> GPTConfig().n_embd, GPTConfig().vocab_size, TINY_GPT.to_dict()["n_layer"]
        (768, 50304, 2)
    """

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


# Trains on 2 CPU cores in minutes on the byte-level stdlib corpus (~0.1M parameters).
TINY_GPT = GPTConfig(block_size=64, vocab_size=256, n_layer=2, n_head=4, n_embd=64, bias=True)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's, since torch's could not drop it).

    Example:
        >>> ln = LayerNorm(4, bias=False)
        >>> y = ln(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).detach()
        >>> ln.bias, round(float(y.mean()), 6), round(float(y.var(unbiased=False)), 4)
        (None, 0.0, 1.0)
    """

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (SDPA, ``is_causal=True``), as in nanoGPT.

    Example:
        Position t sees positions ≤ t only, so changing the last token changes no
        earlier output:

        >>> attn = CausalSelfAttention(GPTConfig(block_size=8, n_head=2, n_embd=8))
        >>> x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
        >>> x2 = x.clone()
        >>> x2[:, -1] += 1.0
        >>> attn(x).shape, torch.allclose(attn(x)[:, :-1], attn(x2)[:, :-1])
        (torch.Size([2, 5, 8]), True)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}.")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The transformer block's feed-forward part: width 4·n_embd, GELU, dropout.

    Example:
        >>> MLP(GPTConfig(n_embd=8))(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then + mlp(ln(x)).

    Example:
        >>> Block(GPTConfig(block_size=8, n_head=2, n_embd=8))(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(idx) -> logits`` of shape (B, T, vocab_size).

    Initialization follows nanoGPT (GPT-2): N(0, 0.02) weights, zero biases, and
    N(0, 0.02/sqrt(2 n_layer)) for the residual projections ``c_proj``. It draws
    from torch's global generator: call it under ``torch.random.fork_rng`` with a
    seed (as the trainer does) for reproducible weights.

    Example:
        >>> config = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8)
        >>> with torch.random.fork_rng(devices=[]):
        ...     _ = torch.manual_seed(0)
        ...     model = GPT(config)
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 16])
        >>> model.lm_head.weight is model.transformer.wte.weight  # tied: counted once
        True
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying (Press & Wolf): one matrix embeds tokens and scores them
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        _, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.config.block_size}; "
                "crop the input or build the model with a larger block_size."
            )
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def lm_loss(logits, targets):
    """Mean next-token cross-entropy over every position of the batch.

    Half-precision logits (bf16 autocast) are upcast to float32; float64 stays float64.

    Example:
        Uniform logits over 16 tokens give log 16 per position:

        >>> loss = lm_loss(torch.zeros(2, 3, 16), torch.zeros(2, 3, dtype=torch.long))
        >>> round(float(loss), 6) == round(math.log(16), 6)
        True
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

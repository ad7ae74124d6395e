"""Reference problems for tests and benchmarks: small real models with fixed data.

Each problem is small enough for the exact dense Hessian (d of a few hundred to a
few thousand) yet uses the layers that matter in practice: cross-entropy on an
MLP, convolutions with BatchNorm, and a causal transformer with embeddings,
LayerNorm, attention and tied input/output weights.

``make_problem(name)`` returns a ready :class:`~hessnorm.operator.HessianOperator`;
``problem_parts(name)`` returns ``(model, loss_fn, batches)`` for callers that
build their own. :func:`tiny_hf_folder` writes a tiny Hugging Face causal LM folder
for the examples of :mod:`hessnorm.hf` (built locally, nothing downloaded).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hessnorm.errors import ConfigError
from hessnorm.train.gpt import lm_loss

__all__ = [
    "MLP",
    "ConvBN",
    "TinyTransformer",
    "PROBLEMS",
    "problem_parts",
    "make_problem",
    "digits",
    "char_tokens",
    "init_params",
    "lm_loss",
    "tiny_hf_folder",
]


class MLP(nn.Module):
    """A tanh multilayer perceptron (smooth, so finite differences behave).

    Example:
        >>> model = MLP((64, 12, 10))  # inputs are flattened: 8×8 images work too
        >>> model(torch.zeros(3, 8, 8)).shape, sum(p.numel() for p in model.parameters())
        (torch.Size([3, 10]), 910)
    """

    def __init__(self, sizes=(64, 16, 10), activation=nn.Tanh):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


class ConvBN(nn.Module):
    """conv -> BatchNorm -> ReLU -> conv -> BatchNorm -> ReLU -> pool -> linear.

    Example:
        >>> ConvBN(channels=3)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels=4, classes=10, track_running_stats=True):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, track_running_stats=track_running_stats)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, track_running_stats=track_running_stats)
        self.fc = nn.Linear(channels * 4 * 4, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.avg_pool2d(x, 2)
        return self.fc(x.flatten(1))


class _Block(nn.Module):
    def __init__(self, dim, heads, attention):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attention = attention
        self.heads = heads
        if attention == "mha":
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        T = x.shape[1]
        h = self.ln1(x)
        if self.attention == "mha":
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
            a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        else:
            B, _, C = h.shape
            q, k, v = self.qkv(h).split(C, dim=2)
            q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            a = self.proj(a.transpose(1, 2).reshape(B, T, C))
        x = x + a
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """A causal language model with tied embedding / output weights.

    ``attention="sdpa"`` uses ``F.scaled_dot_product_attention`` (as nanoGPT does);
    ``attention="mha"`` uses ``nn.MultiheadAttention``. Returns logits (B, T, V).

    Example:
        >>> model = TinyTransformer(vocab=16, block=8)
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape, model.head.weight is model.wte.weight
        (torch.Size([2, 8, 16]), True)
    """

    def __init__(self, vocab=16, dim=16, heads=2, layers=1, block=8, attention="sdpa"):
        super().__init__()
        if attention not in ("sdpa", "mha"):
            raise ConfigError(f"attention must be 'sdpa' or 'mha', got {attention!r}")
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(block, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, attention) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight  # weight tying

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def digits(n: int = 128, seed: int = 0, image: bool = False):
    """``n`` examples of scikit-learn's bundled 8x8 digits, scaled to [0, 1].

    A fixed random subset (by ``seed``); no download is involved.

    Example:
        >>> x, y = digits(5, seed=0)
        >>> x.shape, y.tolist(), 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
        (torch.Size([5, 64]), [6, 5, 5, 7, 9], True)
        >>> digits(2, image=True)[0].shape
        torch.Size([2, 1, 8, 8])
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:n]
    x = torch.as_tensor(X, dtype=torch.float32)[idx] / 16.0
    t = torch.as_tensor(y, dtype=torch.long)[idx]
    return (x.view(-1, 1, 8, 8) if image else x), t


# The text of char_tokens: this module's docstring and those of MLP, ConvBN and
# TinyTransformer as they read when the reference problems were fixed. Frozen here so
# that editing a docstring never changes the test problems (and their numbers).
_CHAR_TEXT = (
    "Reference problems for tests and benchmarks: small real models with fixed data.\n\n"
    "Each problem is small enough for the exact dense Hessian (d of a few hundred to a\n"
    "few thousand) yet uses the layers that matter in practice: cross-entropy on an\n"
    "MLP, convolutions with BatchNorm, and a causal transformer with embeddings,\n"
    "LayerNorm, attention and tied input/output weights.\n\n"
    "``make_problem(name)`` returns a ready :class:`~hessnorm.operator.HessianOperator`;\n"
    "``problem_parts(name)`` returns ``(model, loss_fn, batches)`` for callers that\n"
    "build their own.\n"
    "A tanh multilayer perceptron (smooth, so finite differences behave)."
    "conv -> BatchNorm -> ReLU -> conv -> BatchNorm -> ReLU -> pool -> linear."
    "A causal language model with tied embedding / output weights.\n\n"
    '    ``attention="sdpa"`` uses ``F.scaled_dot_product_attention`` (as nanoGPT does);\n'
    '    ``attention="mha"`` uses ``nn.MultiheadAttention``. Returns logits (B, T, V).\n'
    "    "
)


def char_tokens(n_seq: int = 32, block: int = 8, vocab: int = 16, seed: int = 0):
    """Token sequences from real text: characters of this module's own docstrings (as
    they read when the problems were fixed), mapped to ``vocab`` ids by byte value
    modulo ``vocab``; targets are the next token.

    Example:
        >>> x, y = char_tokens(4, block=6, vocab=16)
        >>> x.shape, torch.equal(x[:, 1:], y[:, :-1]), int(x.max()) < 16
        (torch.Size([4, 6]), True, True)
    """
    text = _CHAR_TEXT.encode()
    data = torch.tensor(list(text), dtype=torch.long) % vocab
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - block - 1, (n_seq,), generator=g)
    x = torch.stack([data[s : s + block] for s in starts])
    y = torch.stack([data[s + 1 : s + 1 + block] for s in starts])
    return x, y


def _split(x, y, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


def problem_parts(name: str, *, seed: int = 0, n: int | None = None, split=None):
    """``(model, loss_fn, batches)`` of a named test problem.

    Names: ``mlp``, ``conv_bn`` (BatchNorm with running stats, filled by a few
    training-mode passes so ``batchnorm="frozen"`` has real statistics),
    ``transformer`` (SDPA attention), ``transformer_mha`` (``nn.MultiheadAttention``).
    ``split`` optionally lists batch sizes that partition the examples.

    Example:
        >>> model, loss_fn, batches = problem_parts("mlp", split=[40, 24])
        >>> [len(y) for _, y in batches], loss_fn.__name__, type(model).__name__
        ([40, 24], 'cross_entropy', 'MLP')
    """
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        x, y = digits(n or 64, seed)
        model = init_params(MLP((64, 12, 10)), g)
        loss = F.cross_entropy
    elif name == "conv_bn":
        x, y = digits(n or 32, seed, image=True)
        model = init_params(ConvBN(channels=3), g)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(x)
        model.eval()
        loss = F.cross_entropy
    elif name in ("transformer", "transformer_mha"):
        x, y = char_tokens(n or 16, seed=seed)
        attention = "mha" if name.endswith("mha") else "sdpa"
        model = init_params(TinyTransformer(attention=attention), g)
        loss = lm_loss
    else:
        raise ConfigError(f"unknown problem {name!r}; choose from {PROBLEMS}")
    batches = _split(x, y, split) if split else [(x, y)]
    return model, loss, batches


def init_params(model: nn.Module, g: torch.Generator) -> nn.Module:
    """Re-initialise every parameter from ``g`` (deterministic, independent of the global RNG).

    Example:
        >>> a = init_params(MLP((3, 2)), torch.Generator().manual_seed(0))
        >>> b = init_params(MLP((3, 2)), torch.Generator().manual_seed(0))
        >>> torch.equal(a.net[0].weight, b.net[0].weight)
        True
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                bound = 1.0 / math.sqrt(p.shape[1] * (p[0][0].numel() if p.dim() > 2 else 1))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound * math.sqrt(3))
            elif name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)
            else:  # norm weights: near 1, not exactly, so the Hessian has no symmetry
                p.copy_(1 + (torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)
    return model


PROBLEMS = ("mlp", "conv_bn", "transformer", "transformer_mha")


def make_problem(name: str, *, dtype=torch.float64, seed: int = 0, batchnorm: str = "batch", **kw):
    """A :class:`~hessnorm.operator.HessianOperator` for a named test problem.

    Example:
        >>> op = make_problem("mlp")  # MLP 64-12-10 on 64 digits
        >>> op.d, op.dtype
        (910, torch.float64)
    """
    from hessnorm.operator import HessianOperator

    model, loss, batches = problem_parts(name, seed=seed, **kw)
    return HessianOperator.from_module(model, loss, batches, dtype=dtype, batchnorm=batchnorm)


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-printable-character table: entry b is the symbol of byte b."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    extra = iter(range(256, 512))
    return [chr(b if b in printable else next(extra)) for b in range(256)]


def tiny_hf_folder(folder, *, n_embd: int = 8, n_layer: int = 1, n_head: int = 2, seed: int = 0):
    """Save a tiny random GPT-2 and a byte-level tokenizer in ``folder`` (``save_pretrained``).

    The tokenizer has no merges: token id = UTF-8 byte value (vocabulary 256), so
    token counts are byte counts. The model has context 16 and weights drawn from
    ``seed`` without touching the global RNG. Built locally (needs ``transformers``,
    the ``hf`` extra); nothing is downloaded. For examples and tests of
    :mod:`hessnorm.hf`.

    Returns:
        ``folder`` as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors"))[:3]
        ['config.json', 'generation_config.json', 'model.safetensors']
        >>> from hessnorm.hf import load_tokenizer
        >>> load_tokenizer(folder)("hi!", add_special_tokens=False)["input_ids"] == list(b"hi!")
        True
    """
    from pathlib import Path

    from hessnorm.hf import transformers_module

    tf = transformers_module()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
    vocab = {sym: b for b, sym in enumerate(_byte_symbols())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    config = tf.GPT2Config(
        vocab_size=256,
        n_positions=16,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tf.PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    return folder

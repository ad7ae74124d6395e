"""Hugging Face causal LMs (hessnorm.hf): tiny GPT-2 and Llama models and a byte-level
BPE tokenizer are built here and saved with save_pretrained; nothing is downloaded.

References are independent of hessnorm: the loss from the model's own forward with the
cross-entropy written out, and the spectral norm from ARPACK Lanczos (scipy eigsh) on
double-backward HVPs taken directly on the model's parameters.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from hessnorm import spectral_norm
from hessnorm.errors import CheckpointError, ConfigError, MissingDependencyError
from hessnorm.hf import (
    LogitsOnly,
    causal_lm_loss,
    hf_operator,
    load_causal_lm,
    load_tokenizer,
    text_windows,
)
from hessnorm.train.tasks import lm_windows

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB, N_WIN, T = 300, 6, 12
F64 = torch.float64


def _corpus() -> str:
    rng = np.random.default_rng(0)
    words = (
        "the quick brown fox jumps over lazy dog pack my box with five dozen liquor jugs "
        "sphinx of black quartz judge vow how vexingly daft zebras jump bright"
    ).split()
    sentences = [" ".join(rng.choice(words, size=rng.integers(5, 12))) + "." for _ in range(120)]
    return " ".join(sentences)


def _tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tok.train_from_iterator([text], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(1)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    text = _corpus()
    (root / "val.txt").write_text(text, encoding="utf-8")
    (root / "short.txt").write_text("the quick brown fox", encoding="utf-8")
    tok = _tokenizer(text)
    for name, build in (("gpt2", _gpt2), ("llama", _llama)):
        build().save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def _reference_windows(folder, text_path, n, T):
    """The window rule written out: starts floor(i (N-T-1)/(n-1)), via the tokenizer."""
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ids = tok(text_path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    N = len(ids)
    starts = [i * (N - T - 1) // (n - 1) for i in range(n)]
    w = torch.tensor([ids[s : s + T + 1] for s in starts])
    return w, w[:, :-1], w[:, 1:]


def _reference_model(folder, attn="sdpa"):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=F64, attn_implementation=attn
    )
    return model.eval()


def _math():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _direct_loss(model, x, y):
    logits = model(x).logits
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, y.unsqueeze(-1)).mean()


class _DoubleBackward:
    """H v by double backward on the model's own (deduplicated) parameters."""

    def __init__(self, model, x, y):
        self.params = list(model.parameters())
        with _math():
            loss = _direct_loss(model, x, y)
            self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.d = sum(p.numel() for p in self.params)

    def __call__(self, v):
        parts = torch.split(
            torch.as_tensor(np.asarray(v).reshape(-1)), [p.numel() for p in self.params]
        )
        parts = [q.view_as(p) for q, p in zip(parts, self.params)]
        hv = torch.autograd.grad(self.grads, self.params, parts, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    def top_abs_eigenvalue(self):
        from scipy.sparse.linalg import LinearOperator, eigsh

        op = LinearOperator((self.d, self.d), matvec=self, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(self.d)
        # tol 1e-6 on the eigenvalue, far inside the 1e-4 the tests ask (about 40 HVPs)
        vals = eigsh(op, k=1, which="LM", tol=1e-6, ncv=20, v0=v0, return_eigenvectors=False)
        return float(abs(vals[0]))


def _check_model(files, name):
    folder, text = files / name, files / "val.txt"
    op, info = hf_operator(folder, text, n=N_WIN, block_size=T, dtype=F64, batch_size=4)
    w, x, y = _reference_windows(folder, text, N_WIN, T)
    ref = _reference_model(folder)
    with torch.no_grad(), _math():
        direct = float(_direct_loss(ref, x, y))
        # transformers' own labels path (shifts labels inside; casts logits to float32)
        hf_labels = float(ref(w, labels=w).loss)
    assert abs(op.loss() - direct) <= 1e-9, (op.loss(), direct)
    assert abs(hf_labels - direct) <= 1e-5 * direct
    assert info["n_windows"] == N_WIN and info["block_size"] == T
    assert f"{N_WIN} windows x {T} tokens" in info["data"] and str(text) in info["data"]
    assert info["attn_implementation"] == "sdpa" and "floor(i * (N" in info["window_rule"]
    assert op.param_names == [n for n, _ in ref.named_parameters()]

    exact = _DoubleBackward(ref, x, y)
    assert op.d == exact.d
    v = torch.randn(op.d, generator=torch.Generator().manual_seed(2), dtype=F64)
    hv, hv_ref = op.hvp(v), torch.from_numpy(exact(v.numpy()))
    return op, info, exact, (hv - hv_ref).norm() / hv_ref.norm()


def test_gpt2_loss_hvp_spectral_norm_match_transformers(files):
    op, info, exact, hvp_err = _check_model(files, "gpt2")
    # GPT-2 is float64 throughout, so the HVPs agree to rounding
    assert hvp_err <= 1e-10, hvp_err
    # tied weights: lm_head.weight *is* transformer.wte.weight, one tensor in the vector
    assert "lm_head.weight" not in op.param_names and "transformer.wte.weight" in op.param_names
    sd = _reference_model(files / "gpt2").state_dict()
    assert op.d == sum(t.numel() for t in sd.values()) - sd["lm_head.weight"].numel()
    assert info["n_params"] == op.d
    assert any("dropout" in s and "eval mode" in s for s in info["notes"])
    est = spectral_norm(op, tol=1e-5, progress=False)
    ref = exact.top_abs_eigenvalue()
    assert abs(est.value - ref) <= 1e-4 * ref, (est.value, ref)


def test_llama_loss_hvp_spectral_norm_match_transformers(files):
    op, info, exact, hvp_err = _check_model(files, "llama")
    # transformers' LlamaRMSNorm computes in float32 even in a float64 model, so two
    # algebraically equal HVP evaluations (per batch vs all windows at once) differ at
    # float32 rounding, ~1e-7; anything structural would be O(1)
    assert hvp_err <= 1e-5, hvp_err
    assert "lm_head.weight" in op.param_names  # Llama unties by default
    assert any("float32" in s for s in info["notes"])
    est = spectral_norm(op, tol=1e-5, progress=False)
    ref = exact.top_abs_eigenvalue()
    assert abs(est.value - ref) <= 1e-4 * ref, (est.value, ref)


def test_sdpa_and_eager_give_the_same_hvp(files):
    text = files / "val.txt"
    ops = {}
    for attn in ("sdpa", "eager"):
        op, info = hf_operator(
            files / "gpt2", text, n=4, block_size=T, dtype=F64, attn_implementation=attn
        )
        assert info["attn_implementation"] == attn and f"({attn} attention)" in repr(op)
        ops[attn] = op
    V = torch.randn(2, ops["sdpa"].d, generator=torch.Generator().manual_seed(3), dtype=F64)
    a, b = ops["sdpa"].hvp(V), ops["eager"].hvp(V)  # blocks: forward-over-reverse
    assert ((a - b).abs().max() / a.abs().max()) <= 1e-10
    a1, b1 = ops["sdpa"].hvp(V[0]), ops["eager"].hvp(V[0])  # single: the cached graph
    assert ((a1 - b1).abs().max() / a1.abs().max()) <= 1e-10
    assert ((a1 - a[0]).abs().max() / a1.abs().max()) <= 1e-10


def test_logits_only_keeps_names_and_matches(files):
    model, _ = load_causal_lm(files / "gpt2", dtype=F64)
    wrapped = LogitsOnly(model)
    assert [n for n, _ in wrapped.named_parameters()] == [n for n, _ in model.named_parameters()]
    wrapped.eval()
    assert not model.training and not wrapped.training
    x, y, _ = text_windows(files / "gpt2", files / "val.txt", n=4, block_size=T)

    def ce(logits, targets):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    from hessnorm import HessianOperator

    op_a = HessianOperator.from_module(wrapped, ce, (x, y))
    op_b = HessianOperator.from_module(model, causal_lm_loss, (x, y))
    assert op_a.param_names == op_b.param_names
    v = torch.randn(op_a.d, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert abs(op_a.loss() - op_b.loss()) <= 1e-12
    assert torch.allclose(op_a.hvp(v), op_b.hvp(v), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="tensors on its root module"):
        LogitsOnly(torch.nn.Linear(2, 2))


def test_weight_formats_and_bf16(files, tmp_path):
    ref, _ = load_causal_lm(files / "gpt2", dtype=F64)
    want = {n: p.detach() for n, p in ref.named_parameters()}
    # sharded safetensors with an index
    sharded = tmp_path / "sharded"
    _gpt2().save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    model, info = load_causal_lm(sharded, dtype=F64)
    assert info["weights"] == ["model.safetensors.index.json"]
    assert all(torch.equal(p, want[n]) for n, p in model.named_parameters())
    # pytorch_model.bin, read with weights_only=True
    binary = tmp_path / "bin"
    binary.mkdir()
    shutil.copy(files / "gpt2" / "config.json", binary)
    torch.save(_gpt2().state_dict(), binary / "pytorch_model.bin")
    model, info = load_causal_lm(binary, dtype=F64)
    assert info["weights"] == ["pytorch_model.bin"]
    assert all(torch.equal(p, want[n]) for n, p in model.named_parameters())
    # a .bin holding an arbitrary pickled object is refused, never executed
    torch.save({"transformer.wte.weight": _Pickled()}, binary / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not load"):
        load_causal_lm(binary)
    # bf16 checkpoint: float32 by default, with a note
    bf = tmp_path / "bf16"
    _gpt2().to(torch.bfloat16).save_pretrained(bf)
    model, info = load_causal_lm(bf)
    assert next(model.parameters()).dtype == torch.float32
    assert info["stored_dtype"] == "bfloat16" and info["dtype"] == "float32"
    assert "weights stored in bfloat16 are evaluated in torch.float32" in info["notes"]


class _Pickled:
    pass


def test_lm_windows_rule():
    tokens = np.arange(100)
    x, y = lm_windows(tokens, 5, 9)
    assert x.shape == y.shape == (5, 9) and x.dtype == torch.int64
    assert x[:, 0].tolist() == [0, 22, 45, 67, 90]  # floor(i * 90 / 4)
    assert int(y[-1, -1]) == 99 and torch.equal(y[:, :-1], x[:, 1:])
    assert x[:, 0].tolist() == [i * 90 // 4 for i in range(5)]
    # the exact floor, where np.linspace(...).astype(int) would give 4 instead of 5
    assert lm_windows(np.arange(47), 23, 16)[0][:, 0].tolist() == [i * 30 // 22 for i in range(23)]
    assert lm_windows(tokens, 1, 9)[0][0].tolist() == list(range(9))
    with pytest.raises(ConfigError, match="100 tokens, fewer than block_size"):
        lm_windows(tokens, 2, 100)
    with pytest.raises(
        ConfigError, match=r"number of evaluation windows must be a positive integer \(>= 1\)"
    ):
        lm_windows(tokens, 0, 9)
    with pytest.raises(ConfigError, match=r"block_size must be a positive integer \(>= 1\)"):
        lm_windows(tokens, 2, 2.5)


def test_causal_lm_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, dtype=F64)
    targets = torch.tensor([[1, 4, -100], [0, 2, 3]])
    keep = targets != -100
    want = -torch.log_softmax(logits, -1)[keep].gather(-1, targets[keep].unsqueeze(-1)).mean()
    out = transformers.modeling_outputs.CausalLMOutput(logits=logits)
    assert torch.allclose(causal_lm_loss(out, targets), want, rtol=1e-14, atol=0)
    assert torch.allclose(causal_lm_loss(logits, targets), want, rtol=1e-14, atol=0)
    with pytest.raises(ConfigError, match="needs logits"):
        causal_lm_loss({"loss": 1.0}, targets)
    with pytest.raises(ConfigError, match=r"do not match targets of shape \(2, 2\)"):
        causal_lm_loss(logits, targets[:, :2])


# ---------------------------------------------------------------------- error cases
def _copy(files, tmp_path, name="gpt2", tokenizer=True):
    out = tmp_path / f"copy-{name}-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(files / name, out)
    if not tokenizer:
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (out / f).unlink(missing_ok=True)
    return out


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_tokenizer(files, tmp_path):
    folder = _copy(files, tmp_path, tokenizer=False)
    with pytest.raises(CheckpointError, match=r"holds no tokenizer .* downloads nothing"):
        load_tokenizer(folder)
    with pytest.raises(CheckpointError, match="tokenizer.save_pretrained"):
        hf_operator(folder, files / "val.txt", n=2, block_size=T)
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_tokenizer(tmp_path / "nowhere")


def test_unknown_architecture_and_non_causal_heads(files, tmp_path):
    unknown = _copy(files, tmp_path)
    _edit_config(unknown, model_type="zorblax", architectures=["ZorblaxForCausalLM"])
    with pytest.raises(
        CheckpointError, match=r"'zorblax' is not an architecture .* causal language models"
    ):
        load_causal_lm(unknown)
    bert = tmp_path / "bert"
    transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(bert)
    with pytest.raises(
        CheckpointError,
        match=r"holds a BertForSequenceClassification .* not a causal language model: .*BertLMHeadModel.* not supported yet",
    ):
        load_causal_lm(bert)
    clip = _copy(files, tmp_path, "llama")
    _edit_config(clip, model_type="clip_vision_model", architectures=["CLIPVisionModel"])
    with pytest.raises(CheckpointError, match="'clip_vision_model' has no causal-LM class"):
        load_causal_lm(clip)
    untyped = tmp_path / "untyped"
    shutil.copytree(files / "gpt2", untyped)
    cfg = json.loads((untyped / "config.json").read_text())
    del cfg["model_type"]
    (untyped / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="has no model_type"):
        load_causal_lm(untyped)
    # no architectures entry: the causal-LM class of the model_type is used
    plain = _copy(files, tmp_path)
    _edit_config(plain, architectures=None)
    assert type(load_causal_lm(plain)[0]).__name__ == "GPT2LMHeadModel"


def test_bad_folders(files, tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_causal_lm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_causal_lm(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="does not hold a JSON object"):
        load_causal_lm(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_causal_lm(tmp_path / "empty")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(files / "gpt2" / "config.json", noweights)
    with pytest.raises(CheckpointError, match="no weights: expected one of"):
        load_causal_lm(noweights)
    # a weight file lacking tensors: refused, not randomly initialised
    torch.save({"transformer.wte.weight": torch.zeros(VOCAB, 32)}, noweights / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"do not hold every tensor of GPT2LMHeadModel \(missing"
    ):
        load_causal_lm(noweights)
    # config and weights of different shapes
    grown = _copy(files, tmp_path)
    _edit_config(grown, n_positions=80)
    with pytest.raises(CheckpointError, match="could not load .* as GPT2LMHeadModel: .*mismatch"):
        load_causal_lm(grown)
    with pytest.raises(ConfigError, match="floating torch.dtype"):
        load_causal_lm(files / "gpt2", dtype=torch.int64)


def test_flash_attention_refused(files, tmp_path):
    with pytest.raises(
        ConfigError, match=r"'flash_attention_2' \(requested\).*attn_implementation=\"sdpa\""
    ):
        load_causal_lm(files / "gpt2", attn_implementation="flash_attention_2")
    folder = _copy(files, tmp_path)
    _edit_config(folder, attn_implementation="flash_attention_2")
    with pytest.raises(
        ConfigError, match=r"set in config.json.*double backward.*attn_implementation=\"eager\""
    ):
        load_causal_lm(folder)
    # the fix named in the message works
    _, info = load_causal_lm(folder, attn_implementation="eager")
    assert info["attn_implementation"] == "eager"
    with pytest.raises(ConfigError, match="plain differentiable ops"):
        load_causal_lm(files / "gpt2", attn_implementation="flex_attention")


def test_text_too_short_and_other_data_errors(files, tmp_path):
    with pytest.raises(
        ConfigError,
        match=rf"short.txt has \d+ tokens, too few for 2 windows of block_size\+1 = {T + 1} "
        r"tokens \(\d+ needed\)\. Use a block size of at most \d+ \(--block-size\), or a longer text",
    ):
        hf_operator(files / "gpt2", files / "short.txt", n=2, block_size=T)
    x, y, n_tok = text_windows(files / "gpt2", files / "val.txt", n=N_WIN, block_size=T)
    with pytest.raises(
        ConfigError, match=rf"{n_tok} tokens, too few .* Use at most {n_tok // 33} windows"
    ):
        text_windows(files / "gpt2", files / "val.txt", n=n_tok, block_size=32)
    with pytest.raises(ConfigError, match="cannot read the text file"):
        text_windows(files / "gpt2", tmp_path / "missing.txt", n=2, block_size=T)
    with pytest.raises(ConfigError, match="exceeds the model's context length 64"):
        hf_operator(files / "gpt2", files / "val.txt", n=2, block_size=65)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        hf_operator(files / "gpt2", files / "val.txt", n=2, block_size=T, batch_size=0)
    small = _copy(files, tmp_path)
    _edit_config(small, vocab_size=200)
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=200, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    ).save_pretrained(small)
    with pytest.raises(CheckpointError, match="outside the model's vocabulary of 200"):
        hf_operator(small, files / "val.txt", n=2, block_size=T)


def test_default_block_size_and_float32(files):
    op, info = hf_operator(files / "gpt2", files / "val.txt", n=2)
    assert info["block_size"] == 64 and op.dtype == torch.float32 and info["dtype"] == "float32"
    op64, _ = hf_operator(files / "gpt2", files / "val.txt", n=2, dtype=F64)
    v = torch.randn(op.d, generator=torch.Generator().manual_seed(5), dtype=F64)
    hv32, hv64 = op.hvp(v.float()).double(), op64.hvp(v)
    assert (hv32 - hv64).norm() <= 1e-4 * hv64.norm()


def test_transformers_missing(monkeypatch, files):
    monkeypatch.setitem(sys.modules, "transformers", None)
    for call in (
        lambda: load_causal_lm(files / "gpt2"),
        lambda: load_tokenizer(files / "gpt2"),
        lambda: hf_operator(files / "gpt2", files / "val.txt", n=2, block_size=T),
    ):
        with pytest.raises(MissingDependencyError, match=r'pip install "hessnorm\[hf\]"'):
            call()

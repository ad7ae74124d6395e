"""Damaged checkpoint files (issue 26): every message names the file, what is wrong and
the likely cause. Each damaged file is made for real from a file torch or safetensors
wrote."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from hessnorm import errors
from hessnorm._files import diagnose_file
from hessnorm.checkpoint import detect, load


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}, "model_args": {"n_layer": 1}}, path)
    return path


def _raises(path, *fragments):
    with pytest.raises(errors.CheckpointError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_intact_files_get_no_diagnosis(good, tmp_path):
    st = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(3)}, str(st))
    assert diagnose_file(good) is None and diagnose_file(st) is None


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.05])
def test_a_truncated_torch_save_file_is_called_incomplete(good, tmp_path, keep):
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    msg = _raises(cut, "incomplete torch.save file", "interrupted", "still writing")
    assert "Errno" not in msg.split("torch.load said")[0]


def test_a_truncated_legacy_pickle_is_named(tmp_path):
    legacy = tmp_path / "old.pt"
    torch.save({"w": torch.randn(300)}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    legacy.write_bytes(data[: len(data) // 2])
    _raises(legacy, "legacy (pre-zip) torch.save pickle", "truncated")


def test_a_zero_length_file_says_empty_and_why(tmp_path):
    empty = tmp_path / "ckpt.pt"
    empty.write_bytes(b"")
    _raises(empty, "an empty file (0 bytes)", "still writing")
    empty_st = tmp_path / "w.safetensors"
    empty_st.write_bytes(b"")
    _raises(empty_st, "an empty file (0 bytes)")
    with pytest.raises(errors.CheckpointError, match="0 bytes"):
        detect(empty)


def test_files_that_are_not_checkpoints(tmp_path):
    rand = tmp_path / "random.pt"
    rand.write_bytes(os.urandom(4096))
    # torch reports random bytes as an unpickling failure: not a refusal to unpickle
    msg = _raises(rand, "is not a checkpoint", "binary data", "neither a torch.save file")
    assert "arbitrary unpickling" not in msg
    text = tmp_path / "notes.pt"
    text.write_text("step 100 loss 2.3\n" * 20)
    _raises(text, "is not a checkpoint", "of text")
    lfs = tmp_path / "lfs.pt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 123\n")
    _raises(lfs, "Git LFS pointer", "git lfs pull")
    html = tmp_path / "page.pt"
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    _raises(html, "HTML page", "download")
    zipped = tmp_path / "other.pt"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("readme.txt", "hi")
    _raises(zipped, "not a torch.save checkpoint", "readme.txt")


def _safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(50, 50), "b": torch.randn(10)}, str(path))
    return path


def test_a_damaged_safetensors_header_length(tmp_path):
    path = _safetensors(tmp_path)
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)  # an impossible header length
    path.write_bytes(bytes(data))
    _raises(path, "damaged safetensors header", "length field says", "limit")
    # a length pointing past the end of a small file: the header itself was cut
    (n,) = struct.unpack("<Q", _safetensors(tmp_path).read_bytes()[:8])
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 5 * len(data))
    path.write_bytes(bytes(data))
    _raises(path, "incomplete safetensors file", "its header alone needs")
    # a length that lands inside the header: the table is not JSON any more
    data = bytearray(_safetensors(tmp_path).read_bytes())
    data[:8] = struct.pack("<Q", n // 2)
    path.write_bytes(bytes(data))
    _raises(path, "damaged safetensors header", "not the JSON table")


def test_a_truncated_safetensors_file(tmp_path):
    path = _safetensors(tmp_path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    need = 8 + n + max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert need == len(data)
    path.write_bytes(data[: need - 100])
    _raises(path, "incomplete safetensors file", f"need {need:,} bytes", "interrupted")
    path.write_bytes(data[:5])
    _raises(path, "fewer than the 8 bytes")


def test_refusing_to_unpickle_is_still_a_refusal(tmp_path):
    import argparse

    evil = tmp_path / "ns.pt"
    torch.save({"a": argparse.Namespace(a=1)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(errors.CheckpointError, match="arbitrary unpickling"):
        load(evil)


def test_a_damaged_hf_weight_file_is_named(tmp_path):
    pytest.importorskip("transformers")
    from hessnorm.hf import load_causal_lm
    from hessnorm.testing import tiny_hf_folder

    folder = tiny_hf_folder(tmp_path / "gpt2")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 64])
    with pytest.raises(errors.CheckpointError) as info:
        load_causal_lm(folder)
    msg = str(info.value)
    assert str(weights) in msg and "incomplete safetensors file" in msg

"""GGUF specs: parsing, typed errors, the content-hash cache, atomic writes, provenance, and the
dequantised weights against a hand-written Q4_1 / Q8_0 decoder reading the file's raw bytes."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from inspector import bundled, gguf, models
from inspector.errors import CorruptCheckpointError, ModelNotFoundError, PathNotAllowedError


@pytest.fixture(scope="module")
def smol_file():
    path = bundled.smollm2_gguf()
    assert path is not None, bundled.SMOLLM2_INSTALL
    return path


def test_specs_name_a_file_or_folder_and_file(smol_file, tmp_path):
    assert gguf.is_gguf_spec("x/model.Q4_1.GGUF") and not gguf.is_gguf_spec("bundled:gpt2-mini")
    assert gguf.resolve_file(str(smol_file)) == smol_file
    assert gguf.resolve_file(f"{smol_file.parent}:{smol_file.name}") == smol_file
    assert models.parse_spec(f"{smol_file.parent}:{smol_file.name}").source == "gguf"
    assert models.parse_spec(str(smol_file)).source == "gguf"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        gguf.resolve_file(f"{tmp_path}:absent.gguf")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.load(str(tmp_path / "absent.gguf"))


def test_streamed_sha256_is_the_sha256_of_the_bytes(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3_000_001, dtype=np.uint8).tobytes()
    f = tmp_path / "blob.gguf"
    f.write_bytes(data)
    assert gguf.file_sha256(f, chunk=4096) == hashlib.sha256(data).hexdigest()


def test_non_gguf_and_truncated_files_are_refused_clearly(smol_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(CorruptCheckpointError, match="not a GGUF file"):
        models.load(str(text))
    cut = tmp_path / "cut.gguf"
    with open(smol_file, "rb") as src:
        cut.write_bytes(src.read(200_000))  # header + part of the vocabulary only
    with pytest.raises(CorruptCheckpointError, match="damaged or truncated"):
        models.load(str(cut))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_header_says_q4_1_llama(smol_file):
    info = gguf.read_info(smol_file)
    assert (info.architecture, info.quantisation, info.license) == ("llama", "Q4_1", "apache-2.0")
    assert sum(n for _, n in info.tensor_types) == 272  # 30 layers × 9 + embedding + final norm
    assert info.tensor_types[0] == ("Q4_1", 210)


def test_failed_conversion_leaves_no_cache_entry(smol_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path))

    def half_written(path, out, check_config=None):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(gguf, "_convert_into", half_written)
    with pytest.raises(RuntimeError, match="killed"):
        gguf.ensure_converted(smol_file)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor the temporary folder


def test_cache_entry_is_keyed_by_content_and_reused(smollm2_folder, smol_file, monkeypatch):
    sha = hashlib.sha256(smol_file.read_bytes()).hexdigest()
    assert smollm2_folder == gguf.cache_dir() / sha[:32]
    meta = json.loads((smollm2_folder / gguf.INFO_FILE).read_text())
    assert meta["source"]["sha256"] == sha and meta["source"]["quantisation"] == "Q4_1"
    assert not [p for p in gguf.cache_dir().iterdir() if p.name.startswith(".")]  # no temp left

    def no_second_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_convert_into", no_second_conversion)
    assert gguf.ensure_converted(smol_file)[0] == smollm2_folder
    # a copy of the same bytes elsewhere hits the same entry
    copy = gguf.cache_dir().parent / "copy" / "renamed.gguf"
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(smol_file, copy)
    assert gguf.ensure_converted(copy)[0] == smollm2_folder


def test_gguf_spec_provenance_records_the_quantisation(smollm2_folder, smol_file):
    lm = models.load(f"{smol_file.parent}:{smol_file.name}")
    p = lm.provenance
    assert (p.source, p.quantisation) == ("gguf", "Q4_1")
    assert "dequantised" in p.dequantised_from and "Q4_1" in p.dequantised_from
    assert p.commit_hash == "sha256:" + gguf.file_sha256(smol_file)[:16]
    assert lm.describe()["provenance"]["quantisation"] == "Q4_1"
    bundled_lm = models.load("bundled:smollm2")
    assert bundled_lm.provenance.quantisation == "Q4_1" and bundled_lm.provenance.source == "bundled"


def test_web_app_refuses_gguf_files_outside_the_model_roots(smol_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_MODEL_ROOTS", str(tmp_path))
    with pytest.raises(PathNotAllowedError):
        models.load(str(smol_file), restrict_to_roots=True)


# ---------------------------------------------------------------- the weights, decoded by hand


def _raw_tensor(path, name):
    import gguf as gguf_py

    reader = gguf_py.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == name)
    return t.tensor_type.name, np.asarray(t.data).view(np.uint8).reshape(-1), [int(s) for s in t.shape[::-1]]


def _decode_q4_1(raw: np.ndarray, shape) -> np.ndarray:
    """Q4_1 block (20 bytes, 32 values): f16 scale d, f16 min m, 16 bytes of nibbles; x = d·q + m,
    low nibbles are values 0..15, high nibbles 16..31."""
    blocks = raw.reshape(-1, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 4:]
    values = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32)
    return (d * values + m).reshape(shape)


def _decode_q8_0(raw: np.ndarray, shape) -> np.ndarray:
    """Q8_0 block (34 bytes, 32 values): f16 scale d, 32 int8; x = d·q."""
    blocks = raw.reshape(-1, 34)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(shape)


def test_dequantised_weights_match_a_hand_decoder(smollm2_folder, smol_file):
    from safetensors.torch import load_file

    weights = load_file(str(smollm2_folder / "model.safetensors"))
    kind, raw, shape = _raw_tensor(smol_file, "blk.0.ffn_down.weight")
    assert kind == "Q4_1"
    np.testing.assert_array_equal(weights["model.layers.0.mlp.down_proj.weight"].numpy(), _decode_q4_1(raw, shape))
    kind, raw, shape = _raw_tensor(smol_file, "token_embd.weight")
    assert kind == "Q8_0"
    np.testing.assert_array_equal(weights["model.embed_tokens.weight"].numpy(), _decode_q8_0(raw, shape))
    kind, raw, shape = _raw_tensor(smol_file, "output_norm.weight")
    assert kind == "F32"
    np.testing.assert_array_equal(weights["model.norm.weight"].numpy(), raw.view(np.float32).reshape(shape))
    assert weights["model.norm.weight"].dtype == torch.float32
    assert os.path.getsize(smollm2_folder / "model.safetensors") > 500e6  # fp32, not re-quantised

"""Loading: every spec form goes through the same code, and every failure is a typed, readable error."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector import capture, models
from inspector.errors import (CorruptCheckpointError, HubUnreachableError, InputError, ModelNotFoundError,
                              RemoteCodeError, UnsafeWeightsError, UnsupportedArchitectureError)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    model, tok = tiny_gpt2_model()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


def test_parse_spec_forms():
    assert models.parse_spec("gpt2") == models.ParsedSpec("hub", "gpt2", None)
    assert models.parse_spec("EleutherAI/pythia-70m@step1000") == models.ParsedSpec(
        "hub", "EleutherAI/pythia-70m", "step1000")
    assert models.parse_spec("bundled:gpt2-mini@step-0") == models.ParsedSpec("bundled", "gpt2-mini@step-0", None)
    assert models.parse_spec("./some/folder").source == "local"
    with pytest.raises(InputError):
        models.parse_spec("   ")


def test_local_folder_loads_with_capture_attention_and_same_outputs(gpt2_folder):
    folder, original = gpt2_folder
    lm = models.load(str(folder))
    assert lm.kind is models.ModelKind.CAUSAL_LM and lm.family == "gpt2"
    assert (lm.n_layers, lm.n_heads, lm.d_head, lm.max_positions) == (2, 4, 8, 64)
    assert lm.model.config._attn_implementation == capture.ATTENTION_NAME
    assert lm.provenance.source == "local" and lm.provenance.commit_hash.startswith("sha256:")
    ids = torch.tensor([[1, 5, 9, 20, 3]])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, original(ids).logits)


def test_bert_kinds(tmp_path):
    for cls, kind in [("BertForPreTraining", models.ModelKind.PRETRAINING),
                      ("BertForMaskedLM", models.ModelKind.MASKED_LM), ("BertModel", models.ModelKind.ENCODER)]:
        model, tok = tiny_bert_model(cls_name=cls)
        folder = tmp_path / cls
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        lm = models.load(str(folder))
        assert lm.kind is kind, cls
        assert lm.has_nsp_head == (kind is models.ModelKind.PRETRAINING)


def test_folder_without_weights(tmp_path, gpt2_folder):
    folder, _ = gpt2_folder
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CorruptCheckpointError, match="no weights"):
        models.load(str(tmp_path))


def test_truncated_safetensors(tmp_path, gpt2_folder):
    folder, _ = gpt2_folder
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        models.load(str(tmp_path))


def test_pickle_only_refused_unless_allowed(tmp_path, gpt2_folder):
    folder, original = gpt2_folder
    model, tok = tiny_gpt2_model()
    model.save_pretrained(tmp_path, safe_serialization=False) if "safe_serialization" in \
        model.save_pretrained.__code__.co_varnames else None
    if not list(tmp_path.glob("*.bin")):  # transformers 5 writes safetensors only: write the pickle by hand
        for f in folder.iterdir():
            if f.suffix != ".safetensors":
                (tmp_path / f.name).write_bytes(f.read_bytes())
        torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        models.load(str(tmp_path))
    lm = models.load(str(tmp_path), allow_pickle=True)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, original(ids).logits)


def test_remote_code_refused(tmp_path, gpt2_folder):
    folder, _ = gpt2_folder
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        models.load(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    from transformers import T5Config

    T5Config(d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=16, vocab_size=50).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises((UnsupportedArchitectureError, CorruptCheckpointError)):
        models.load(str(tmp_path))


def test_unknown_hub_id_fails_fast_offline(monkeypatch):
    """Offline, the loader gives up at once: no connection is even attempted (no minute of retries)."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(HubUnreachableError) as err:
        models.load("no-such-org/no-such-model-xyz")
    assert attempts == []
    assert "local" in err.value.user_message().lower()


def test_unknown_hub_id_probes_the_hub_once_when_it_is_unreachable(monkeypatch):
    import socket

    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(HubUnreachableError):
        models.load("no-such-org/no-such-model-xyz")
    assert len(attempts) == 1


def test_missing_local_folder():
    with pytest.raises(ModelNotFoundError):
        models.load("/nonexistent/model/folder")


def test_bundled_minilm_offline():
    lm = models.load("bundled:minilm")
    assert lm.kind is models.ModelKind.ENCODER and lm.family == "bert"
    assert lm.n_layers == 6 and lm.n_heads == 12 and lm.d_head == 32

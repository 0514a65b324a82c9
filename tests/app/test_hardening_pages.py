"""AppTest scenarios of the hardening issue: a blank text on Attribution, a BERT sentence pair on Token loss."""
from __future__ import annotations

import pytest
from test_pages import bundled_available, navigation_mode, new_app, snapshot  # noqa: F401 (autouse fixture)

LONG_A = "The cat sat on the mat and watched the birds in the garden all afternoon. " * 8
LONG_B = "It was happy on the mat, warm in the sun, and did not move until evening. " * 8


@pytest.mark.parametrize("text", ["", "   \n\t  "], ids=["empty", "whitespace"])
def test_attribution_with_a_blank_text_says_so_like_the_other_pages(text):
    at = new_app(text=text)
    at.run(timeout=180)
    at.switch_page("pages/attribution.py").run(timeout=180)
    snap = snapshot(at)
    assert not snap["exceptions"]
    assert snap["errors"] and all("empty" in e for e in snap["errors"]), snap["errors"]
    assert not any("unexpected" in e or "NameError" in e for e in snap["errors"]), snap["errors"]


@pytest.mark.skipif(not bundled_available("bert-mini"), reason="needs bundled:bert-mini")
@pytest.mark.parametrize("a,b", [("The cat sat on the mat.", "It was happy on the mat."), (LONG_A, LONG_B)],
                         ids=["short pair", "pair longer than the context"])
def test_token_loss_on_a_bert_sentence_pair_works_with_its_defaults(a, b):
    """Default gradient position is a word piece (the middle one offered), never [SEP]; a pair longer than the
    context is cut with a message, like every other page."""
    at = new_app(model_choice="bundled:bert-mini", text=a, text_pair=b)
    at.run(timeout=180)
    at.switch_page("pages/token_loss.py").run(timeout=300)
    snap = snapshot(at)
    assert not snap["exceptions"] and not snap["errors"], (snap["exceptions"], snap["errors"])
    target = snap["metrics"]["Target token"]
    assert "SEP" not in target and "CLS" not in target, target
    assert "NSP loss if B follows A (nats)" in snap["metrics"]
    if len(a) > 200:
        assert any("longer than the model's context" in w for w in snap["warnings"]), snap["warnings"]
        assert any("cut to the model's context" in w for w in snap["warnings"]), snap["warnings"]
    assert not any("sliding-window scorer" in t for t in snap["warnings"] + snap["infos"])

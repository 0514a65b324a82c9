"""Two texts side by side: alignment and differences against hand-worked examples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from inspector import analysis as contract
from inspector import text_comparison as tc


def test_alignment_matches_the_shared_tokens_and_names_the_edit():
    a = ["The", " keys", " to", " the", " cabinet", " are"]
    b = ["The", " key", " to", " the", " cabinet", " is", " here"]
    al = tc.align_tokens(a, b)
    assert al.matched == ((0, 0), (2, 2), (3, 3), (4, 4))
    assert al.changes == (("replace", 1, 2, 1, 2), ("replace", 5, 6, 5, 7))
    assert al.describe_changes() == ["replace ' keys' → ' key'", "replace ' are' → ' is here'"]
    assert al.a_of_b() == {0: 0, 2: 2, 3: 3, 4: 4}


def test_alignment_on_ids_handles_insertions_and_repeated_tokens():
    # an insertion shifts every later token by one; repeated tokens stay in order
    al = tc.align_tokens(["a", "b", "a", "b"], ["a", "X", "b", "a", "b"], ids_a=[1, 2, 1, 2], ids_b=[1, 9, 2, 1, 2])
    assert al.matched == ((0, 0), (1, 2), (2, 3), (3, 4))
    assert al.changes == (("insert", 1, 1, 1, 2),)
    with pytest.raises(ValueError):
        tc.align_tokens(["a"], ["a"], ids_a=[1, 2], ids_b=[1])


def test_per_token_difference_subtracts_on_shared_scored_tokens_only():
    a, va = ["<s>", " x", " y", " z"], [None, 2.0, 3.0, 1.0]
    b, vb = ["<s>", " x", " w", " y", " z"], [None, 2.5, 7.0, 1.0, 4.0]
    d = tc.per_token_difference(a, va, b, vb, measure="CE")
    # B's tokens: <s> unscored, " x" 2.5−2.0, " w" not in A, " y" 1.0−3.0, " z" 4.0−1.0
    assert d.delta_b == (None, 0.5, None, -2.0, 3.0)
    assert (d.total_a, d.total_b, d.n_scored_a, d.n_scored_b) == (6.0, 14.5, 3, 4)
    assert d.mean_a == pytest.approx(2.0) and d.mean_b == pytest.approx(14.5 / 4)
    assert d.largest_changes(2) == [(3, 4, " z", 1.0, 4.0, 3.0), (2, 3, " y", 3.0, 1.0, -2.0)]
    with pytest.raises(ValueError):
        tc.per_token_difference(a, va[:2], b, vb)


def test_per_token_values_places_scored_values():
    assert tc.per_token_values(4, np.array([1, 3]), np.array([0.5, 2.0])) == [None, 0.5, None, 2.0]


def test_grid_difference_and_its_largest_cells():
    a = np.array([[1.0, 2.0], [3.0, np.nan]])
    b = np.array([[1.5, 0.0], [3.0, 1.0]])
    g = tc.grid_difference(a, b, "σ")
    np.testing.assert_array_equal(g.delta[:, 0], [0.5, 0.0])
    assert g.delta[0, 1] == -2.0 and math.isnan(g.delta[1, 1])
    assert g.largest_changes(2) == [(0, 1, 2.0, 0.0, -2.0), (0, 0, 1.0, 1.5, 0.5)]
    with pytest.raises(ValueError):
        tc.grid_difference(a, b[:1])


def test_difference_blocks_of_two_declared_views():
    def view(m, z, ys, toks, vals, n_points):
        return [contract.Metric("mean", m), contract.Metric("name", "gpt2"),
                contract.Chart("heatmap", "grid", z=z, row_labels=("L0", "L1"), col_labels=("h0",)),
                contract.Chart("line", "per layer", series=(("s", (0, 1), ys),)),
                contract.Chart("bar", "per token", series=(("", tuple(range(n_points)), (1.0,) * n_points),)),
                contract.ColouredTokens(toks, vals, "loss")]

    blocks = tc.difference_blocks(view(1.0, ((1.0,), (2.0,)), (0.0, 1.0), ("a", "b"), (None, 1.0), 2),
                                  view(4.0, ((0.5,), (5.0,)), (2.0, 2.0), ("a", "c", "b"), (None, 9.0, 0.25), 3))
    table = blocks[0]
    assert isinstance(table, contract.Table) and table.columns == ("figure", "A", "B", "B − A")
    assert table.rows == (("mean", 1.0, 4.0, 3.0), ("name", "gpt2", "gpt2", "—"))
    heat = next(b for b in blocks if isinstance(b, contract.Chart) and b.kind == "heatmap")
    assert heat.signed and heat.title == "B − A: grid" and heat.z == ((-0.5,), (3.0,))
    line = next(b for b in blocks if isinstance(b, contract.Chart) and b.kind == "line")
    assert line.series == (("B − A: s", (0, 1), (2.0, 1.0)),)
    strip = next(b for b in blocks if isinstance(b, contract.ColouredTokens))
    assert strip.tokens == ("a", "c", "b") and strip.values == (None, None, -0.75) and strip.signed
    # the per-token bar chart has a different x on the two texts: not subtracted, said so
    assert not any(isinstance(b, contract.Chart) and b.title == "B − A: per token" for b in blocks)
    assert any(isinstance(b, contract.Note) and "per token" in b.text for b in blocks)

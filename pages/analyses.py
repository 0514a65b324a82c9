"""Analyses written on the contract (inspector.analysis), drawn generically: the logit lens first."""
import streamlit as st

from inspector import analysis as contract
from pages import _common, _render, _second_text

ctx = _common.page_context()
lm = ctx.lm
registered = {n: a for n, a in contract.registry().items() if not a.own_page}  # the others have a page
_common.page_header("Layer by layer", "Analyses that follow the text through the model's layers.")

names = list(registered)
name = st.selectbox("Analysis", names, format_func=lambda n: registered[n].title, key="contract_analysis",
                    persist_state="session") if len(names) > 1 else names[0]
a = registered[name]
st.subheader(a.title)
st.caption(a.description)
ok, reason = a.available(lm)
if not ok:
    st.info(_render.md_literal(reason))
    st.stop()
with _common.guard(a.title):
    settings = _render.settings_widgets(a)
    result = _render.run_registered(name, lm, ctx.text, ctx.text_pair, settings)
    _common.truncation_note(_common.encoded(lm, ctx.text, ctx.text_pair))
    blocks = a.view(result)
    if not _second_text.contract_view(ctx, name, settings, blocks):
        _render.render_blocks(blocks, key_prefix=name)

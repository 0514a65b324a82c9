"""Overview: what the loaded model is, how big, where inspector's capture attaches, where it came from."""
import streamlit as st

from pages import _common

ctx = _common.page_context()
lm = ctx.lm
_common.page_header("Overview", "What is loaded, how large it is, how inspector sees inside it, and where it came from.")

with _common.guard("the model overview"):
    info = _common.run(_common.overview_facts, lm)
    d = info["describe"]

    c = st.columns(4)
    c[0].metric("Parameters", _common.format_count(d["n_parameters"]), help=f"{d['n_parameters']:,} in total")
    c[1].metric("Layers × heads", f"{d['n_layers']} × {d['n_heads']}" + (
        f" ({d['n_kv_heads']} KV heads)" if d.get("n_kv_heads", d["n_heads"]) != d["n_heads"] else ""))
    c[2].metric("d_model / d_head", f"{d['d_model']} / {d['d_head']}")
    c[3].metric("Vocabulary", f"{d['vocab_size']:,}", help=f"context: {d['max_positions']:,} positions")

    st.subheader("Architecture")
    st.dataframe(_common.key_value_rows({
        "architecture": d["architecture"], "family": d["family"], "kind": d["kind_label"],
        "layers": d["n_layers"], "attention heads": d["n_heads"], "d_model": d["d_model"], "d_head": d["d_head"],
        "vocabulary": d["vocab_size"], "max positions": d["max_positions"], "device": d["device"],
        "dtype": d["dtype"],
    }), hide_index=True, height="content")

    st.subheader("Parameter counts")
    st.dataframe(info["parameters"], hide_index=True,
                 column_config={"parameters": st.column_config.NumberColumn(format="%d"),
                                "share": st.column_config.ProgressColumn(format="%.1f%%", min_value=0,
                                                                         max_value=100)}, height="content")

    st.subheader("Where the capture attaches")
    cap = info["capture"]
    st.markdown(
        f"The model runs transformers' own SDPA attention through the attention function "
        f"**`{cap['attention_function']}`** (`config._attn_implementation = "
        f"'{cap['attn_implementation']}'`). It is installed once at load time; statistics of QKᵀ are "
        f"computed only inside an analysis' capture block, so no hook stays on the shared model. "
        f"It is called by **{len(cap['modules'])}** attention modules:")
    st.dataframe(cap["modules"], hide_index=True, height="content" if len(cap["modules"]) <= 24 else "auto")

    st.subheader("Provenance")
    st.dataframe(_common.key_value_rows(d["provenance"]), hide_index=True, height="content")

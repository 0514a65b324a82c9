"""inspector: look inside a transformer's numbers. Run with `streamlit run app.py`.

This file only sets up navigation and the sidebar shared by every page; each page lives in
pages/ and gets the model and text from `pages._common.page_context()`.
"""
import streamlit as st

from pages import _common

# An emoji page icon: Streamlit draws it as an inline SVG data: URL. A ":material/...:" page icon would make every
# browser fetch an SVG from fonts.gstatic.com (the app must make no request outside its own server).
st.set_page_config(page_title="inspector", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/info:", default=True),
    st.Page("pages/layernorm.py", title="LayerNorm", icon=":material/tune:"),
    st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("pages/heads.py", title="All heads", icon=":material/apps:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/token_loss.py", title="Token loss", icon=":material/functions:"),
    st.Page("pages/attribution.py", title="Attribution", icon=":material/highlight:"),
    st.Page("pages/analyses.py", title="Layer by layer", icon=":material/layers:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/foundations.py", title="Foundations", icon=":material/school:"),
    st.Page("pages/corpus.py", title="Corpus", icon=":material/dataset:"),
    st.Page("pages/report.py", title="Report", icon=":material/description:"),
]

page = st.navigation(PAGES)
with _common.serving(_common.sidebar()):
    page.run()

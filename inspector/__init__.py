"""inspector: look inside GPT-2 and BERT-family checkpoints (library; no Streamlit import)."""

__version__ = "0.1.0"

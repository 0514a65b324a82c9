"""inspector: look inside GPT-2, BERT-family and Llama-style decoder checkpoints (library; no Streamlit import)."""

__version__ = "0.1.0"

"""Errors on a page: `guard()` turns any exception into a readable `st.error`, never a traceback.

Kept apart from the model cache and the runner (pages/_common.py) because it depends on neither: the
sidebar, the drill-down and every page wrap their work in it. Re-exported as `_common.guard` and
`_common.error_message`.
"""
from __future__ import annotations

import contextlib
import logging

import streamlit as st

from inspector import models
from inspector.errors import InspectorError, NotAvailableError
from inspector.escaping import md_literal

log = logging.getLogger("inspector.app")

try:  # Streamlit's own control flow (st.stop, st.rerun, st.switch_page) must pass through guard().
    from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException as _Control
except ImportError:  # pragma: no cover - older/newer Streamlit layout
    from streamlit.runtime.scriptrunner import StopException as _Control  # type: ignore


def error_message(exc: BaseException, what: str = "this analysis") -> str:
    """A readable message for any exception: the library's own text, or a generic one with what to do."""
    if isinstance(exc, InspectorError):
        return exc.user_message()
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            models.release_memory()
            return ("The device ran out of memory while computing " + what + ". Memory has been released. "
                    "Try a shorter text, a smaller model, or dtype bfloat16/float16 on a GPU.")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return (f"Not enough memory for {what}. Try a shorter text or a smaller model; "
                "the app keeps working.")
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    detail = f" ({type(exc).__name__}: {detail})" if detail else f" ({type(exc).__name__})"
    return (f"Something unexpected went wrong while computing {what}{detail}. "
            "The app keeps working: try another text or model, or reload the page. "
            "If it happens again, report it together with the model name and the text.")


class guard(contextlib.ContextDecorator):
    """Turn any error inside the block into `st.error(...)` (a readable message, never a traceback).

    Use as `with guard("the attention statistics"): ...` or as a decorator. InspectorError shows
    its own message and hint; anything else a generic message (the traceback goes to the server
    log only). Streamlit's st.stop / st.rerun pass through. `guard.failed` tells whether it caught.
    """

    def __init__(self, what: str = "this analysis", container=None):
        self.what = what
        self.container = container
        self.failed = False
        self.error: BaseException | None = None

    def __enter__(self):
        self.failed = False
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, _Control) or not isinstance(exc, Exception):
            return False
        self.failed, self.error = True, exc
        if isinstance(exc, NotAvailableError):
            (self.container or st).info(md_literal(exc.user_message()))
            return True
        if not isinstance(exc, InspectorError):
            log.exception("unexpected error while computing %s", self.what)
        # messages quote what the user typed (a model name, a token, a path): shown literally, never as Markdown
        (self.container or st).error(md_literal(error_message(exc, self.what)))
        return True

"""Writing a report to a file: the format from the suffix, the path checked before any work, atomic and never
silently replacing a file (split from report.py, which re-exports `write_report`, `check_output_path`,
`format_for_path` and `render`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ReportPathError
from .report import FORMATS, Report, to_html, to_json, to_markdown

_WRITERS: dict[str, Callable[[Report], str]] = {"html": to_html, "json": lambda r: to_json(r, indent=1),
                                                 "md": to_markdown}


def format_for_path(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The output format: `fmt` if given ("html" | "json" | "md"), else from the file suffix."""
    if fmt is not None:
        fmt = {"markdown": "md", "htm": "html"}.get(fmt.lower().lstrip("."), fmt.lower().lstrip("."))
        if fmt not in _WRITERS:
            raise ReportPathError(f"Unknown report format '{fmt}'.", "Choose html, json or md.")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ReportPathError(f"Cannot tell the report format from '{Path(path).name}'.",
                              "Name the file .html, .json or .md, or give the format explicitly (--format).")
    return FORMATS[suffix]


def render(report: Report, fmt: str) -> str:
    return _WRITERS[format_for_path("", fmt)](report)


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a directory, an existing file (unless `overwrite`) or a folder that is missing or not writable.

    Called by `write_report`, and by the CLI before any work so a long run never ends in "exists".
    """
    p = Path(os.path.expanduser(str(path)))
    if str(path).strip() == "":
        raise ReportPathError("No output file given.", "Give a file name such as report.html.")
    if p.is_dir():
        raise ReportPathError(f"'{p}' is a directory.", "Give a file name inside it, such as report.html.")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise ReportPathError(f"'{p}' already exists.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise ReportPathError(f"The folder '{parent}' does not exist.", "Create it first, or choose another path.")
    if not parent.is_dir():
        raise ReportPathError(f"'{parent}' is not a folder.", "Choose another output path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportPathError(f"The folder '{parent}' is not writable.", "Choose a folder you can write to.")
    return p


def write_report(report: Report, path: str | os.PathLike, *, fmt: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write `report` to `path` atomically: a temporary file in the same folder, then a rename.

    Readers never see a half-written report, and an existing file is replaced only with
    `overwrite` (otherwise `ReportPathError`). Returns the path written.
    """
    p = check_output_path(path, overwrite=overwrite)
    fmt = format_for_path(path, fmt)
    content = _WRITERS[fmt](report).encode("utf-8")
    parent = p.parent if str(p.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(p))
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_new(tmp, p)  # fails if another writer created `p` meanwhile: never clobber it
        tmp = None
    except ReportPathError:
        raise
    except OSError as exc:
        raise ReportPathError(f"Cannot write '{p}': {exc.strerror or exc}.",
                              "Check that the folder is writable and the disk is not full.") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return p


def _link_new(tmp: str, dest: Path) -> None:
    """Move `tmp` to `dest` only if `dest` does not exist (hard link + unlink; rename where links fail)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise ReportPathError(f"'{dest}' already exists.") from None
    except OSError:  # file systems without hard links
        if dest.exists():
            raise ReportPathError(f"'{dest}' already exists.") from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def _file_mode(dest: Path) -> int:
    """Keep the mode of a file being replaced; new files get 0644 (mkstemp's 0600 is too private)."""
    try:
        return dest.stat().st_mode & 0o777
    except OSError:
        return 0o644

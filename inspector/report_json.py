"""Reports as JSON: every result dataclass written with its type name, and read back exactly (arrays included).

Split from report.py (which re-exports `to_json`, `report_from_json`, `reports_equal`): a report file names
only inspector's own dataclasses, and loading one never imports anything else.
"""
from __future__ import annotations

import dataclasses
import importlib
import json

from .analysis import Unavailable
from .errors import InputError
from .report import SCHEMA_VERSION, Report, Section, summary

def _type_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _resolve_type(name: str):
    """The dataclass named `name`, only from inspector's own modules (a report file never picks code)."""
    module, _, qual = name.rpartition(".")
    if not (module == "inspector" or module.startswith("inspector.")) or not qual.isidentifier():
        raise InputError(f"The report names a result type outside inspector: '{name}'.")
    try:
        cls = getattr(importlib.import_module(module), qual)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


def _encode_part(value) -> dict:
    from .analyses._common import to_dict

    if isinstance(value, Unavailable):
        return {"type": "unavailable", "reason": value.reason, "status": value.status}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": _type_name(value), "data": to_dict(value)}
    if isinstance(value, (list, tuple)) and value and all(
            dataclasses.is_dataclass(v) and type(v) is type(value[0]) for v in value):
        return {"type": "list", "item_type": _type_name(value[0]), "items": [to_dict(v) for v in value]}
    return {"type": "json", "data": to_dict(value)}


def _decode_part(d: dict):
    from .analyses._common import from_dict

    kind = d.get("type")
    if kind == "unavailable":
        return Unavailable(d.get("reason", ""), d.get("status", "unavailable"))
    if kind == "json":
        return d.get("data")
    if kind == "list":
        cls = _resolve_type(d["item_type"])
        return [from_dict(cls, x) if cls else x for x in d.get("items", [])]
    cls = _resolve_type(str(kind))
    return from_dict(cls, d["data"]) if cls else d.get("data")


def to_json(report: Report, *, indent: int | None = None) -> str:
    """The whole report as JSON (schema `schema_version`): every number the HTML shows, and more."""
    from .analyses._common import to_dict

    doc = {
        "schema_version": report.schema_version,
        "generator": "inspector",
        "kind": report.kind,
        "created_utc": report.created_utc,
        "seconds": report.seconds,
        "model": to_dict(report.model),
        "model_b": to_dict(report.model_b),
        "text": report.text,
        "text_pair": report.text_pair,
        "settings": to_dict(report.settings),
        "versions": to_dict(report.versions),
        "sections": {
            name: {"status": sec.status, "reason": sec.reason, "seconds": sec.seconds,
                   "results": {part: _encode_part(v) for part, v in sec.results.items()}}
            for name, sec in report.sections.items()
        },
    }
    doc["summary"] = to_dict(summary(report))  # derived figures the HTML shows; ignored when loading
    # allow_nan: ±inf (rare; NaN is already None) is written as Infinity, which json.loads reads.
    return json.dumps(doc, indent=indent, ensure_ascii=False, allow_nan=True)


def report_from_json(s: str | bytes) -> Report:
    """Load a JSON report back into result dataclasses (equal to the original: see `reports_equal`)."""
    try:
        doc = json.loads(s)
    except (TypeError, ValueError) as exc:
        raise InputError(f"This is not a JSON report: {exc}.") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or "sections" not in doc:
        raise InputError("This JSON file is not an inspector report (no schema_version/sections).")
    version = doc["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(f"This report has schema version {version}; this inspector reads up to {SCHEMA_VERSION}.",
                         "Open it with a newer inspector.")
    sections = {}
    for name, sec in doc["sections"].items():
        sections[name] = Section(
            name=name, status=sec.get("status", "ok"), reason=sec.get("reason", ""),
            results={part: _decode_part(v) for part, v in sec.get("results", {}).items()},
            seconds=float(sec.get("seconds", 0.0)))
    return Report(
        schema_version=version, kind=doc.get("kind", "model"), created_utc=doc.get("created_utc", ""),
        text=doc.get("text", ""), text_pair=doc.get("text_pair"), model=doc.get("model") or {},
        settings=doc.get("settings") or {}, versions=doc.get("versions") or {}, sections=sections,
        model_b=doc.get("model_b"), seconds=float(doc.get("seconds", 0.0)))


def reports_equal(a: Report, b: Report, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Deep equality of two reports, arrays compared with numpy (NaN equal to NaN)."""
    from .analyses._common import results_equal

    return results_equal(a, b, rtol=rtol, atol=atol)



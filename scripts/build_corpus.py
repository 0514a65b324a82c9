"""Assemble the bundled training corpus from English prose shipped with CPython.

Sources (all under the Python Software Foundation licence, present offline on any machine
with Python 3.11):
  * docstrings of the standard library's modules, classes and functions, read with `ast`
    from the `.py` sources (nothing is imported, so no module side effects run);
  * the language-reference topics that `pydoc` ships in `pydoc_data/topics.py`;
  * multi-line `#` comment blocks of the standard library sources;
  * where Debian's python3.11 package installed them, the CPython change logs
    /usr/share/doc/python3.11/NEWS.gz and HISTORY.gz (one entry per paragraph).
Only prose paragraphs are kept (code examples, doctests, tables and parameter lists are
dropped), paragraphs are deduplicated, and whole documents are split 95/5 into
train/valid with a seeded shuffle. Output format: one paragraph per line, documents
separated by one blank line.

    python scripts/build_corpus.py [--out data/corpus] [--seed 0]
"""
from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import random
import re
import sys
import sysconfig
import tokenize
from pathlib import Path

VALID_FRACTION = 0.05
_WORD = re.compile(r"^[(\"'`]*[A-Za-z][A-Za-z'-]*[)\"'`]*[.,;:!?)]*$")
_RULE = re.compile(r"^\s*([-=~^*+#_])\1{2,}\s*$")          # rst/numpydoc underline or banner
_FIELD = re.compile(r"^\s*(:param|:type|:return|:raises|@param|\w+\s*--\s|\w+\s*:\s*$)")
# Skip files whose text is generated data or not English prose.
_SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__", "encodings", "pydoc_data"}


_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")    # :func:`os.read` -> os.read
_ENTRY = re.compile(r"^- (?:(?:gh-issue|bpo|Issue|issue)[- ]#?\d+(?:, (?:gh-issue|bpo|Issue|issue)[- ]#?\d+)*: )?")
CHANGELOGS = (Path("/usr/share/doc/python3.11/NEWS.gz"), Path("/usr/share/doc/python3.11/HISTORY.gz"))


def _normalise(paragraph: str) -> str:
    paragraph = _ROLE.sub(r"\1", paragraph).replace("``", "")
    return " ".join(paragraph.split())


def is_prose(paragraph_lines: list[str]) -> bool:
    """A paragraph counts as prose when it reads like sentences, not code or tables."""
    if not paragraph_lines or paragraph_lines[0][:1].isspace():
        return False                               # indented block: code, literal, param list
    for line in paragraph_lines:
        s = line.strip()
        if s.startswith((">>>", "...", "$ ", "%", "|", "+-", "::")) or _RULE.match(line) or _FIELD.match(line):
            return False
    text = _normalise(" ".join(paragraph_lines))
    words = text.split()
    if len(words) < 6 or len(text) < 40 or len(text) > 4000:
        return False
    if not re.search(r"[a-z]", text) or not re.search(r"[.!?:]$|[.!?]\s", text):
        return False
    if sum(c.isalpha() or c.isspace() for c in text) / len(text) < 0.85:
        return False
    if sum(bool(_WORD.match(w)) for w in words) / len(words) < 0.7:
        return False
    if any(tok in text for tok in ("{", "}", "==", "://", "\\", "Copyright", "copyright", "License")):
        return False
    if sum(ord(c) > 127 for c in text) > 0.02 * len(text):
        return False
    return True


def prose_paragraphs(text: str) -> list[str]:
    """Split text on blank lines and keep the prose paragraphs, each unwrapped to one line."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            block.append(line.rstrip())
            continue
        if block and is_prose(block):
            out.append(_normalise(" ".join(block)))
        block = []
    return out


def stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if _SKIP_PARTS.intersection(parts) or parts[0].startswith(("config-", "lib-dynload")):
            continue
        files.append(path)
    return files


def docstring_documents(path: Path, source: str) -> list[list[str]]:
    """One document per docstring (module, class, function) of one source file."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docs.append(prose_paragraphs(doc))
    return docs


def comment_documents(source: str) -> list[list[str]]:
    """Runs of at least three consecutive full-line `#` comments, read as one paragraph each."""
    lines_by_row: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and tok.line.strip().startswith("#"):
                lines_by_row[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    docs, run, last = [], [], -2
    for row in sorted(lines_by_row) + [10**9]:
        text = lines_by_row.get(row, "")
        if row != last + 1 or not text:
            if len(run) >= 3:
                docs.append(prose_paragraphs("\n".join(run)))
            run = []
        if text and not text.startswith(("!", "-*-", "XXX", "TODO")):
            run.append(text)
        last = row
    return docs


def topic_documents() -> list[list[str]]:
    from pydoc_data.topics import topics
    return [prose_paragraphs(topics[key]) for key in sorted(topics)]


def changelog_documents(path: Path) -> list[list[str]]:
    """One document per section of a CPython NEWS/HISTORY file; the issue prefix is dropped."""
    lines = gzip.open(path, "rt", encoding="utf-8", errors="replace").read().splitlines()
    docs, entries, entry = [], [], []
    for i, line in enumerate(lines + ["", "==="]):
        heading = i + 1 < len(lines) and _RULE.match(lines[i + 1]) and line.strip()
        if line.startswith("- ") or not line.strip() or heading or _RULE.match(line):
            if entry:
                entries.extend(prose_paragraphs("\n".join(entry)))
            entry = []
        if heading or _RULE.match(line):
            if entries:
                docs.append(entries)
            entries = []
        elif line.startswith("- "):
            entry = [_ENTRY.sub("", line)]
        elif entry and line.strip():
            entry.append(line.strip())
    return docs


def collect(root: Path) -> list[list[str]]:
    """All documents in a fixed order, each a list of unique prose paragraphs."""
    raw: list[list[str]] = topic_documents()
    for changelog in CHANGELOGS:
        if changelog.exists():
            raw.extend(changelog_documents(changelog))
    for path in stdlib_files(root):
        source = path.read_text(encoding="utf-8", errors="replace")
        raw.extend(docstring_documents(path, source))
        raw.extend(comment_documents(source))
    seen: set[str] = set()
    documents = []
    for doc in raw:
        kept = []
        for paragraph in doc:
            key = hashlib.sha1(paragraph.lower().encode()).hexdigest()
            if key not in seen:
                seen.add(key)
                kept.append(paragraph)
        if kept:
            documents.append(kept)
    return documents


def split(documents: list[list[str]], seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """Shuffle whole documents with `seed` and hold out the first 5 % of characters."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    total = sum(len(p) + 1 for d in documents for p in d)
    valid, train, held = [], [], 0
    for i in order:
        size = sum(len(p) + 1 for p in documents[i])
        if held < VALID_FRACTION * total:
            valid.append(documents[i])
            held += size
        else:
            train.append(documents[i])
    return train, valid


def write(documents: list[list[str]], path: Path) -> None:
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "corpus")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = collect(root)
    train, valid = split(documents, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write(train, args.out / "train.txt")
    write(valid, args.out / "valid.txt")
    for name in ("train.txt", "valid.txt"):
        p = args.out / name
        print(f"{p}: {p.stat().st_size:,} bytes", file=sys.stderr)
    print(f"python {sys.version.split()[0]}, stdlib {root}, {len(documents)} documents", file=sys.stderr)


if __name__ == "__main__":
    main()

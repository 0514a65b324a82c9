"""`python -m inspector`: the same analyses and reports as the app, from the shell.

    python -m inspector report --text-file notes.txt --out report.html
    python -m inspector report --model ./my-checkpoint --text "Hello" --out r.json --out r.md
    python -m inspector compare bundled:gpt2-mini@step-0 bundled:gpt2-mini --text-file t.txt --out cmp.html
    python -m inspector perplexity --text-file corpus.txt --window 256 --stride 128
    python -m inspector models

Every failure prints `error: ...` (and a `hint: ...`) on stderr and exits with status 2; a
traceback is shown only with --debug. Output paths are checked before the model is loaded, so
a long run never ends in "file exists".

One concern that reads better whole (about 570 lines): the argument parsers and each command's thin body
(load, run the library, write); the analyses and reports live elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130
DEFAULT_MODEL = "bundled:gpt2-mini"  # same as inspector.bundled.DEFAULT_MODEL (checked by a test)
# One user at a terminal: the web app's 20 000-character limit does not apply; report and compare analyse
# the first context-length of tokens and say so on stderr, perplexity scores the whole text with a
# sliding window. Set before inspector.inputs is imported, which reads it once.
CLI_MAX_TEXT_CHARS = "2000000"


class CLIError(Exception):
    """A usage problem found by the CLI itself (not by the library)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream: TextIO | None = None, width: int = 28, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_len = 0
        global _current_bar
        _current_bar = self

    def __call__(self, label: str, fraction: float) -> None:
        if not self.enabled:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = time.perf_counter() - self.start
        if self.tty:
            filled = int(round(fraction * self.width))
            line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} {elapsed:5.1f}s {label}"
            pad = max(0, self._last_len - len(line))
            self.stream.write(line + " " * pad)
            self._last_len = len(line)
            if fraction >= 1.0:
                self.stream.write("\n")
                self._last_len = 0
        else:
            self.stream.write(f"[{fraction:4.0%}] {elapsed:5.1f}s {label}\n")
        self.stream.flush()

    def end_line(self) -> None:
        """Finish a half-drawn bar so that what follows starts on a line of its own."""
        if self.tty and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0

    def message(self, text: str) -> None:
        """A line of its own (the bar, if drawn, is finished first)."""
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()


_current_bar: ProgressBar | None = None


# --------------------------------------------------------------------------- argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse with our error format: `error: ...` + a hint, exit status 2, no usage dump."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {message}\nhint: see '{self.prog} --help'.\n")
        raise SystemExit(EXIT_ERROR)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--dtype", default="auto", help="auto (float32), float32, bfloat16, float16 (default auto)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle (.bin) weights when a checkpoint has no safetensors (trusted files only)")


def _add_text_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--text", help="the text to analyse")
    src.add_argument("--text-file", metavar="FILE", help="read the text from a UTF-8 file ('-' = standard input); one final newline is dropped")
    p.add_argument("--text-pair", metavar="TEXT", help="second sentence (BERT: segment B, next-sentence prediction)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", action="append", required=True, metavar="FILE",
                   help="output file; the format follows the suffix (.html, .json, .md). Repeat for several formats")
    p.add_argument("--format", choices=("html", "json", "md"), help="format when the suffix does not say it")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a report setting, e.g. --set attribution_steps=64 (value read as JSON, else as text)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: 1 for models under 50M parameters, whose small operations "
                        "lose more to thread synchronisation than they gain; torch's own choice for larger ones)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m inspector",
                     description="Inspect transformer checkpoints from the shell: write analysis reports "
                                 "(HTML, JSON, Markdown), compare two models, list the bundled models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    rp = sub.add_parser("report", help="analyse one model on a text and write a report",
                        description="Run the analyses of one model on a text and write HTML / JSON / Markdown.")
    rp.add_argument("--model", "-m", default=DEFAULT_MODEL,
                    help=f"hub id, id@revision, local folder or bundled:NAME (default {DEFAULT_MODEL})")
    _add_text_options(rp, required=False)  # --text / --text-file, unless --corpus
    rp.add_argument("--sections", metavar="A,B,C",
                    help="comma-separated sections (default: all): overview, layernorm, attention, loss, "
                         "embeddings, attribution, foundations")
    _add_model_options(rp)
    _add_output_options(rp)
    rp.add_argument("--corpus", metavar="DIR",
                    help="write the report of a corpus job folder (python -m inspector corpus --out DIR) instead")
    rp.set_defaults(func=cmd_report)

    cp = sub.add_parser("compare", help="compare two models on a text and write a report",
                        description="Compare two models (e.g. two checkpoints) on one text.")
    cp.add_argument("model_a", metavar="A", help="first model spec")
    cp.add_argument("model_b", metavar="B", help="second model spec")
    _add_text_options(cp)
    _add_model_options(cp)
    _add_output_options(cp)
    cp.set_defaults(func=cmd_compare)

    pp = sub.add_parser("perplexity", help="sliding-window perplexity of a long text (causal LMs)",
                        description="Perplexity of a whole text file with the sliding window of Hugging Face's "
                                    "'perplexity of fixed-length models' guide: every token scored once, windows "
                                    "batched, only the scored rows projected onto the vocabulary.")
    pp.add_argument("--model", "-m", default=DEFAULT_MODEL,
                    help=f"hub id, id@revision, local folder or bundled:NAME (default {DEFAULT_MODEL})")
    _add_text_options(pp)
    pp.add_argument("--window", type=int, metavar="N", help="tokens per forward pass (default: the model's context)")
    pp.add_argument("--stride", type=int, metavar="N", help="tokens between window starts (default: window // 2)")
    pp.add_argument("--batch-size", type=int, default=8, metavar="N", help="windows per forward pass (default 8)")
    pp.add_argument("--json", action="store_true", help="print the result as JSON")
    pp.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's own)")
    pp.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    _add_model_options(pp)
    pp.set_defaults(func=cmd_perplexity)

    mp = sub.add_parser("models", help="list the bundled models", description="List the bundled models.")
    mp.add_argument("--json", action="store_true", help="machine-readable output")
    mp.set_defaults(func=cmd_models)
    _add_corpus_parser(sub)
    return parser


# --------------------------------------------------------------------------- corpus job


def _add_corpus_parser(sub) -> None:
    kp = sub.add_parser("corpus", help="corpus-scale statistics of one model or a checkpoint series",
                        description="Stream a corpus (.txt, .jsonl with a text field, or a saved datasets folder) "
                                    "in sliding windows through each model and write merged statistics "
                                    "(attention per layer x head, loss distribution, perplexity, norm inputs).")
    kp.add_argument("--model", "-m", action="append", required=True, metavar="SPEC",
                    help="model spec; repeat for a checkpoint series (id@rev, a folder of checkpoint-* folders, "
                         "bundled:gpt2-mini@step-0 ...)")
    kp.add_argument("--data", required=True, metavar="PATH", help="corpus: .txt, .jsonl or a save_to_disk folder")
    kp.add_argument("--out", required=True, metavar="DIR", help="result folder (resumes a job left there)")
    kp.add_argument("--window", type=int, metavar="N", help="tokens per window (default: the model's context)")
    kp.add_argument("--stride", type=int, metavar="N", help="tokens between window starts (default window // 2)")
    kp.add_argument("--batch-size", type=int, default=8, metavar="N", help="windows per forward pass (default 8)")
    kp.add_argument("--checkpoint-every", type=int, default=200, metavar="N",
                    help="save partial accumulators every N windows (default 200; 0 = never)")
    kp.add_argument("--text-field", default="text", help="JSONL / dataset field holding the text (default text)")
    kp.add_argument("--engine", choices=("local", "ray"), default="local")
    kp.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    kp.add_argument("--workers", type=int, default=2, metavar="N", help="Ray actors, one model each (default 2)")
    kp.add_argument("--device", default="auto")
    kp.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's own)")
    kp.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    kp.set_defaults(func=cmd_corpus)


def cmd_corpus_report(args) -> int:
    from .corpus_report import write_corpus_report

    for path, fmt in _outputs(args):
        written = write_corpus_report(args.corpus, path, fmt)
        print(f"wrote {written} ({fmt}, {_size(written.stat().st_size)})")
    return EXIT_OK


def cmd_corpus(args) -> int:
    import torch

    from . import corpus

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = corpus.CorpusSettings(window=args.window, stride=args.stride, batch_size=args.batch_size,
                                     checkpoint_every=args.checkpoint_every, text_field=args.text_field)
    out = corpus.run_job(args.model, args.data, args.out, settings, engine=args.engine, address=args.address,
                         workers=args.workers, device=args.device, stream=None if args.quiet else sys.stderr)
    for r in corpus.load_results(out):
        print(f"{r.spec}: perplexity {r.summary['perplexity']:.3f} over {r.summary['tokens_scored']:,} tokens")
    print(out)
    return EXIT_OK


# --------------------------------------------------------------------------- helpers


def _without_final_newline(text: str) -> str:
    """Drop the one line terminator editors put at the end of a file: the text analysed is then the
    text a user would paste into the app (a trailing newline is a token of its own)."""
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _read_text(args) -> str:
    if args.text is not None:
        return args.text
    name = args.text_file
    try:
        if name == "-":
            return _without_final_newline(sys.stdin.read())
        path = Path(os.path.expanduser(name))
        if path.is_dir():
            raise CLIError(f"'{name}' is a directory, not a text file.", "Give the path of a UTF-8 text file.")
        return _without_final_newline(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"Text file '{name}' does not exist.", "Check the path, or pass the text with --text.") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"Text file '{name}' is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                       "Save it as UTF-8, or pass the text with --text.") from None
    except PermissionError:
        raise CLIError(f"Text file '{name}' cannot be read (permission denied).") from None


def _parse_settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--set expects KEY=VALUE, got '{pair}'.", "For example: --set attribution_steps=64")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        settings[key.strip()] = value
    return settings


def _outputs(args) -> list[tuple[Path, str]]:
    """(path, format) of every --out, checked before any work."""
    from .report import check_output_path, format_for_path

    if args.format and len(args.out) > 1:
        raise CLIError("--format applies to a single --out.", "Let the suffixes (.html, .json, .md) choose instead.")
    seen, out = set(), []
    for name in args.out:
        path = check_output_path(name, overwrite=args.overwrite)
        fmt = format_for_path(name, args.format)
        key = os.path.abspath(path)
        if key in seen:
            raise CLIError(f"'{name}' is given twice as --out.")
        seen.add(key)
        out.append((path, fmt))
    return out


def _prepare_runtime(args) -> None:
    """Quiet third-party chatter that is not ours to show, and apply --threads."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise CLIError(f"--threads must be at least 1, got {args.threads}.")
        torch.set_num_threads(args.threads)


SMALL_MODEL_PARAMETERS = 50_000_000


def _load(spec: str, args, bar: ProgressBar, fraction: float = 0.0):
    from .models import load

    bar(f"loading {spec}", fraction)
    return load(spec, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)


def _auto_threads(args, *lms) -> None:
    """One CPU thread for small models unless --threads says otherwise.

    Measured with the bundled gpt2-mini (4 layers, 128 wide) on a 2-core machine shared with
    other work: the full report took 26-31 s with one thread and 54-59 s with two (twice the CPU
    time, spent synchronising threads over tiny matrix products).
    """
    if args.threads is not None or any(lm.device.type != "cpu" for lm in lms):
        return
    if all(lm.n_parameters < SMALL_MODEL_PARAMETERS for lm in lms):
        import torch

        torch.set_num_threads(1)


def _section_progress(bar: ProgressBar, start: float, span: float) -> Callable[[str, float], None]:
    """Map the report's progress (0..1 over its sections) onto part of the bar."""
    def progress(label: str, fraction: float) -> None:
        if label == "done":
            return
        bar(label, start + span * fraction)
    return progress


def _write_all(report, outputs, args, bar: ProgressBar, t0: float) -> None:
    from .report import write_report

    for path, fmt in outputs:
        written = write_report(report, path, fmt=fmt, overwrite=args.overwrite)
        size = written.stat().st_size
        print(f"wrote {written} ({fmt}, {_size(size)})")
    bar("done", 1.0)
    notes = [(name, sec) for name, sec in report.sections.items() if not sec.available]
    if not args.quiet:
        from .report import blocks_text

        for line in blocks_text(report):  # headline figures of the analyses on the contract
            bar.message(line)
        for name, sec in notes:
            bar.message(f"{'warning' if sec.status == 'failed' else 'note'}: section {name}: {sec}")
        bar.message(f"finished in {time.perf_counter() - t0:.1f} s")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------- commands


def _check_text(args, text: str) -> None:
    """Reject an empty or unusable text before minutes of model loading."""
    from .inputs import clean_text

    clean_text(text)
    if args.text_pair is not None and args.text_pair.strip():
        clean_text(args.text_pair, what="second sentence")


def _say_truncation(lm: LoadedModel, text: str, text_pair: str | None, settings: dict, bar: ProgressBar) -> None:
    """On stderr, whatever --quiet says: the report analyses only the first tokens of a text longer than the context."""
    from .inputs import encode
    from .report import _settings

    enc = encode(lm, text, text_pair, max_tokens=_settings(settings)["max_tokens"], truncate=True)
    if not enc.truncated:
        return
    from .report import analysed_part

    kept, _ = analysed_part(enc)
    total = len(lm.tokenizer(text, text_pair, add_special_tokens=True, verbose=False)["input_ids"])
    chars = f"{len(kept.text):,} of {len(enc.text):,} characters"
    if enc.text_pair:
        chars += f" and {len(kept.text_pair or ''):,} of {len(enc.text_pair):,} of the second sentence"
    bar.message(f"warning: the text has {total:,} tokens and {lm.spec} reads at most {enc.n_tokens:,}: the report "
                f"analyses the first {enc.n_tokens:,} tokens kept ({chars}); the rest is left out.")


def cmd_report(args) -> int:
    t0 = time.perf_counter()
    if getattr(args, "corpus", None):
        return cmd_corpus_report(args)
    if args.text is None and args.text_file is None:
        raise CLIError("one of the arguments --text --text-file (or --corpus DIR) is required.",
                       "see 'python -m inspector report --help'.")
    text = _read_text(args)
    settings = _parse_settings(args.set)
    outputs = _outputs(args)
    from .report import SECTIONS, _check_sections, _settings, build_report

    sections = _check_sections(args.sections, SECTIONS) if args.sections else SECTIONS
    _settings(settings)  # unknown keys fail now, not after loading
    _check_text(args, text)
    bar = ProgressBar(enabled=not args.quiet)
    _prepare_runtime(args)
    lm = _load(args.model, args, bar)
    _auto_threads(args, lm)
    _say_truncation(lm, text, args.text_pair, settings, bar)
    report = build_report(lm, text, sections=sections, settings=settings, text_pair=args.text_pair,
                          progress=_section_progress(bar, 0.1, 0.85))
    bar("writing", 0.97)
    _write_all(report, outputs, args, bar, t0)
    return EXIT_OK


def cmd_compare(args) -> int:
    t0 = time.perf_counter()
    text = _read_text(args)
    settings = _parse_settings(args.set)
    outputs = _outputs(args)
    from .report import _settings, build_comparison_report

    _settings(settings)
    _check_text(args, text)

    bar = ProgressBar(enabled=not args.quiet)
    _prepare_runtime(args)
    lm_a = _load(args.model_a, args, bar)
    lm_b = _load(args.model_b, args, bar, 0.1)
    _auto_threads(args, lm_a, lm_b)
    _say_truncation(lm_a, text, args.text_pair, settings, bar)
    report = build_comparison_report(lm_a, lm_b, text, settings=settings, text_pair=args.text_pair,
                                     progress=_section_progress(bar, 0.2, 0.75))
    bar("writing", 0.97)
    _write_all(report, outputs, args, bar, t0)
    return EXIT_OK


def cmd_perplexity(args) -> int:
    import math

    from .analyses.loss import score_corpus
    from .inputs import clean_text

    text = _read_text(args)
    if args.text_pair is not None:
        raise CLIError("--text-pair does not apply to perplexity.", "Put the whole text in --text or --text-file.")
    clean_text(text, max_chars=max(len(text), 1), what="text")
    for name, value, lowest in (("--window", args.window, 2), ("--stride", args.stride, 1),
                                ("--batch-size", args.batch_size, 1)):
        if value is not None and value < lowest:
            raise CLIError(f"{name} must be at least {lowest}, got {value}.")
    if args.window is not None and args.stride is not None and args.stride >= args.window:
        raise CLIError(f"--stride ({args.stride}) must be smaller than --window ({args.window}) so that every "
                       "token is scored with some left context.")
    bar = ProgressBar(enabled=not args.quiet)
    _prepare_runtime(args)
    lm = _load(args.model, args, bar)
    bar(f"scoring {len(text):,} characters", 0.5)
    score = score_corpus(lm, text, window=args.window, stride=args.stride, batch_size=args.batch_size)
    bar("done", 1.0)
    nll_per_token = score.nll_sum / score.n_tokens
    result = {
        "model": args.model,
        "perplexity": score.perplexity,
        "nll_nats_per_token": nll_per_token,
        "bits_per_token": nll_per_token / math.log(2.0),
        "scored_tokens": score.n_tokens,
        "characters": len(text),
        "window": score.window,
        "stride": score.stride,
        "windows": score.n_windows,
        "batch_size": score.batch_size,
        "seconds": score.seconds,
        "tokens_per_s": score.tokens_per_s,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return EXIT_OK
    print(f"model        {args.model}\n"
          f"perplexity   {score.perplexity:.4f}\n"
          f"loss         {nll_per_token:.4f} nats/token ({result['bits_per_token']:.4f} bits/token)\n"
          f"scored       {score.n_tokens:,} tokens of {len(text):,} characters (the first token has no context)\n"
          f"windows      {score.n_windows:,} of {score.window} tokens, stride {score.stride}, "
          f"{score.batch_size} per forward pass\n"
          f"speed        {score.tokens_per_s:,.0f} tokens/s ({score.seconds:.1f} s on {lm.device})")
    return EXIT_OK


def cmd_models(args) -> int:
    from . import bundled
    from .models import bundled_spec

    models = bundled.list_bundled()
    if args.json:
        print(json.dumps([{"spec": bundled_spec(m.name), "kind": m.kind, "available": m.available,
                           "checkpoints": m.checkpoints, "default_checkpoint": m.default_checkpoint,
                           "description": m.description, "licence": getattr(m, "licence", ""),
                           "install": getattr(m, "install", "")} for m in models], indent=1))
        return EXIT_OK
    marks = {DEFAULT_MODEL: "default of the CLI", bundled.APP_DEFAULT_MODEL: "the app opens on it"}
    for m in models:
        spec = bundled_spec(m.name)
        mark = f" ({marks[spec]})" if spec in marks and m.available else ""
        install = getattr(m, "install", "") or "python -m inspector.bundled build"
        state = ", ".join(m.checkpoints) if m.available else f"not installed (install: {install})"
        licence = f"; licence: {m.licence}" if getattr(m, "licence", "") else ""
        print(f"{spec}{mark}\n    {m.kind}; checkpoints: {state}{licence}\n    {m.description}")
    if not all(m.available for m in models):
        print("\nModels marked 'not installed' name the command that installs or builds them.", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("INSPECTOR_MAX_TEXT_CHARS", CLI_MAX_TEXT_CHARS)
    from .errors import InspectorError

    try:
        return args.func(args)
    except (InspectorError, CLIError) as exc:
        if args.debug:
            raise
        _print_error(exc.message, exc.hint)
    except KeyboardInterrupt:
        _print_error("interrupted.")
        return EXIT_INTERRUPTED
    except MemoryError:
        _print_error("out of memory.", "Try a shorter text, fewer sections, or a smaller model.")
    except Exception as exc:  # noqa: BLE001 - the promise is: no traceback without --debug
        if args.debug:
            raise
        _print_error(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                     "This is a bug in inspector; run again with --debug for the traceback and report it.")
    return EXIT_ERROR


def _print_error(message: str, hint: str = "") -> None:
    if _current_bar is not None:
        _current_bar.end_line()
    message = " ".join(str(message).split())  # one line, whatever the library wrote
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {' '.join(str(hint).split())}\n")
    sys.stderr.flush()

"""ThinkScope from the terminal: generate, import, export.

    python cli.py generate --prompt "What is 17 + 26?" [--answer 43] [--model M]
    python cli.py import traces.jsonl
    python cli.py export traces.jsonl
All commands honour THINKSCOPE_DB (or --db).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _storage(args):
    from storage.config import StorageConfig

    return StorageConfig.from_env(args.db)


class _TerminalStream:
    """Prints tokens as they arrive: thinking dimmed (on a terminal), answer plain, a rule between."""

    def __init__(self, out=sys.stdout):
        self._out = out
        self._tty = out.isatty()
        self._in_answer = False
        self._out.write(self._dim("── thinking ──\n"))

    def _dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self._tty else text

    def __call__(self, step) -> None:
        from analysis.records import ANSWER

        if step.phase == ANSWER and not self._in_answer:
            self._in_answer = True
            self._out.write(self._dim("\n── answer ──\n"))
        self._out.write(step.text if self._in_answer else self._dim(step.text))
        self._out.flush()


def cmd_generate(args) -> int:
    from analysis.reasoning import ReasoningFormat
    from generation.decoding import SamplingConfig
    from generation.models import ModelLoadError, ModelSpec, load_model
    from generation.prompting import detect_format
    from generation.streaming import GenerationRequest, generate
    from storage.traces import save_trace

    if not args.prompt.strip():
        print("error: the prompt is empty", file=sys.stderr)
        return EXIT_USAGE
    try:
        sampling = SamplingConfig(args.temperature, args.top_p, args.max_thinking, args.max_answer, args.seed)
        config = _storage(args)
        loaded = load_model(ModelSpec(args.model, trust_remote_code=args.trust_remote_code))
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    fmt = detect_format(loaded.tokenizer)
    if args.format != "auto":
        fmt = ReasoningFormat(kind=args.format, answer_marker=args.marker or fmt.answer_marker,
                              starts_in_thinking=fmt.starts_in_thinking)
    request = GenerationRequest(args.prompt.strip(), sampling, fmt, args.answer, prompt_source="cli")
    finished = generate(loaded, request, on_token=_TerminalStream(), on_finish=lambda r: save_trace(config, r))
    record = finished.record
    grade = {True: "correct", False: "incorrect", None: "ungraded"}[record.correct]
    print(
        f"\n\n[{record.stop_reason}] answer={record.extracted_answer!r} ({grade}) · "
        f"{record.n_thinking_tokens} thinking + {record.n_answer_tokens} answer tokens · "
        f"{record.latency_s:.1f} s · {record.tokens_per_s:.1f} tok/s"
    )
    if finished.error:
        print(f"error: {finished.error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"stored as trace {finished.stored} in {config.db_path}")
    return EXIT_OK


def cmd_import(args) -> int:
    from tqdm import tqdm

    from storage.errors import StorageError
    from storage.jsonl import import_jsonl

    config = _storage(args)
    with tqdm(desc=f"importing {Path(args.file).name}", unit="line", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            ids = import_jsonl(config, Path(args.file), progress=progress)
        except (StorageError, OSError) as exc:
            print(f"\nerror: {exc}\nNothing from {args.file} was imported.", file=sys.stderr)
            return EXIT_ERROR
    print(f"imported {len(ids)} traces into {config.db_path}")
    return EXIT_OK


def cmd_export(args) -> int:
    from storage.errors import StorageError
    from storage.jsonl import export_jsonl

    config = _storage(args)
    try:
        count = export_jsonl(config, Path(args.file))
    except (StorageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exported {count} traces to {args.file}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinkscope", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="DuckDB file (default: $THINKSCOPE_DB or the user data directory)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="stream a generation to the terminal and store it")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--answer", help="reference answer, to grade the generation")
    gen.add_argument("--model", default="embedded:SmolLM2-135M-Instruct", help="embedded model, HF id or directory")
    gen.add_argument("--trust-remote-code", action="store_true")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--max-thinking", type=int, default=256)
    gen.add_argument("--max-answer", type=int, default=96)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--format", choices=["auto", "answer_marker", "think_tags"], default="auto")
    gen.add_argument("--marker", help="answer marker for the answer_marker format (default 'Answer:')")
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser("import", help="import traces from ThinkScope JSONL")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="export every trace as ThinkScope JSONL")
    exp.add_argument("file")
    exp.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # storage errors and the like: one clear line, not a traceback
        from storage.errors import StorageError

        if isinstance(exc, StorageError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())

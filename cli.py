"""ThinkScope from the terminal: generate, import, export.

    python cli.py generate --prompt "What is 17 + 26?" [--answer 43] [--model M]
    python cli.py import FILE [--format auto|thinkscope|openai|raw|anthropic|openwebui]
    python cli.py export [--format jsonl|parquet] OUT
    python cli.py analyze [--trace ID | --run ID] [--model M]
    python cli.py sweep --prompt TEXT --answer REF --budgets 32,64,128 --samples 8 [--model M] [--json]
    python cli.py run --strategy NAME --prompts FILE.jsonl [--n N] [--model M] [--json]
    generate, sweep and run also take --backend openai --base-url URL [--model NAME] (an OpenAI-compatible server)
    python cli.py loops [--run ID] [--threshold 0.9] [--unit sentence|paragraph]
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
    from generation.models import ModelLoadError
    from generation.streaming import GenerationRequest, generate
    from storage.traces import save_trace

    if not args.prompt.strip():
        print("error: the prompt is empty", file=sys.stderr)
        return EXIT_USAGE
    try:
        sampling = SamplingConfig(args.temperature, args.top_p, args.max_thinking, args.max_answer, args.seed)
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
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
    from storage.importers import import_file

    config = _storage(args)
    # Progress comes in bytes (JSON Lines) or records (a JSON document): shown as a percentage.
    with tqdm(desc=f"importing {Path(args.file).name}", total=100, unit="%", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(int(100 * done / max(total, 1)) - bar.n)

        try:
            result = import_file(config, Path(args.file), args.format, progress=progress)
        except (StorageError, OSError) as exc:
            print(f"\nerror: {exc}\nNothing from {args.file} was imported.", file=sys.stderr)
            return EXIT_ERROR
    print(f"imported {result.count} traces ({result.format}) into {config.db_path}")
    return EXIT_OK


def cmd_export(args) -> int:
    from storage.errors import StorageError
    from storage.jsonl import export_jsonl
    from storage.annotations import export_annotations_jsonl
    from storage.parquet_export import export_parquet

    config = _storage(args)
    try:
        if args.format == "parquet":
            done = export_parquet(config, Path(args.file))
            print(f"exported {done.n_traces} traces and {done.n_tokens} token rows to "
                  f"{done.traces_path} and {done.tokens_path}")
            return EXIT_OK
        if args.format == "annotations":
            count = export_annotations_jsonl(config, Path(args.file))
            print(f"exported {count} annotation versions to {args.file}")
            return EXIT_OK
        count = export_jsonl(config, Path(args.file))
    except (StorageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exported {count} traces to {args.file}")
    return EXIT_OK


def cmd_analyze(args) -> int:
    """MI peaks, logit-lens settling and confidence for stored traces; skips what is already analysed."""
    import generation  # noqa: F401  (first: sets OMP_WAIT_POLICY before analysis imports torch)
    from tqdm import tqdm

    from analysis.trace_signals import AnalysisSettings
    from generation.analyze import analyze_trace, load_analysis_model
    from generation.models import ModelLoadError
    from storage.analyses import save_analysis, unanalysed_trace_ids
    from storage.traces import get_trace

    config = _storage(args)
    # Reference: the prompt's stored answer when there is one, else the model's own final answer.
    settings = {kind: AnalysisSettings(reference=kind, lens_dtype=args.lens_dtype) for kind in ("stored", "self")}
    if args.trace is not None and get_trace(config, args.trace) is None:
        print(f"error: no trace {args.trace} in {config.db_path}", file=sys.stderr)
        return EXIT_USAGE
    todo = unanalysed_trace_ids(config, tuple(s.key for s in settings.values()), args.model, args.trace, args.run)
    if not todo:
        print(f"nothing to analyse: every selected trace is already analysed ({config.db_path})")
        return EXIT_OK
    models: dict = {}  # name -> LoadedModel, or the load error message
    failures = 0
    for trace_id in tqdm(todo, desc="analysing", unit="trace", disable=None):
        record = get_trace(config, trace_id).record
        name = args.model or record.model
        if name not in models:
            try:
                models[name] = load_analysis_model(name)
            except ModelLoadError as exc:
                models[name] = str(exc)
        loaded = models[name]
        try:
            if isinstance(loaded, str):
                raise ValueError(loaded)
            analysis = analyze_trace(loaded, record, settings["stored" if record.reference_answer else "self"])
            save_analysis(config, trace_id, analysis)
        except ValueError as exc:
            failures += 1
            tqdm.write(f"trace {trace_id}: not analysed: {exc}", file=sys.stderr)
    print(f"analysed {len(todo) - failures} of {len(todo)} traces into {config.db_path}")
    return EXIT_ERROR if failures else EXIT_OK


def _load_for_tcc(args):
    """(model or backend, its reasoning format) for generate/sweep/run, or raises ModelLoadError/ValueError."""
    from generation.models import EMBEDDED_MODEL, ModelSpec, load_model
    from generation.prompting import detect_format

    if args.backend == "openai":
        from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig, RemoteError

        if not args.base_url:
            raise ValueError("--backend openai needs --base-url, e.g. http://localhost:8000/v1")
        config = OpenAIConfig(args.base_url, "" if args.model == EMBEDDED_MODEL else args.model, args.api_key_env,
                              args.concurrency, template=args.template)
        try:
            backend = OpenAIBackend(config)
        except RemoteError as exc:
            raise ValueError(str(exc)) from exc
        return backend, backend.default_format()
    loaded = load_model(ModelSpec(args.model, trust_remote_code=args.trust_remote_code))
    return loaded, detect_format(loaded.tokenizer)


def _print_table(rows: list[dict], as_json: bool, extra: dict) -> None:
    import json

    if as_json:
        print(json.dumps({**extra, "rows": rows}, default=str))
        return
    for key, value in extra.items():
        print(f"{key}: {value}")
    if rows:
        cols = list(rows[0])
        cells = [[("" if r[c] is None else f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
                 for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def cmd_sweep(args) -> int:
    from tqdm import tqdm

    from generation.models import ModelLoadError
    from generation.sweep import SweepSettings, curves, parse_budgets, run_sweep

    try:
        settings = SweepSettings(args.prompt, args.answer, parse_budgets(args.budgets), args.samples,
                                 free_samples=args.free_samples, temperature=args.temperature,
                                 max_answer_tokens=args.max_answer, seed=args.seed)
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tqdm(desc="sweep", unit="cell", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, tokens: int) -> None:
            bar.total = total
            bar.set_postfix(tokens=tokens, refresh=False)
            bar.update(done - bar.n)

        result = run_sweep(config, loaded, fmt, settings, progress)
    by_budget, _ = curves(result.cells)
    rows = [{"budget": p.budget, "n": p.n, "accuracy": p.accuracy, "ci_low": p.ci_low, "ci_high": p.ci_high,
             "mean_thinking_tokens": p.mean_tokens} for p in by_budget.points]
    if not rows:
        budgets = sorted({c.budget for c in result.cells if c.budget})
        rows = [{"budget": b, "n": sum(c.budget == b for c in result.cells), "accuracy": "unknown"} for b in budgets]
    extra = {"sweep_key": result.key, "generated": result.generated, "stored_cells": len(result.cells),
             "missing": result.missing, "run_id": result.run_id,
             "best_budget": by_budget.best.budget if by_budget.best else None,
             "decline_budget": by_budget.decline.budget if by_budget.decline else None}
    if settings.reference_answer is None:
        extra["note"] = "no reference answer: accuracy is unknown"
    if result.error:
        extra["error"] = f"{result.error} (failed cells are not stored; rerun to resume)"
    _print_table(rows, args.json, extra)
    return EXIT_ERROR if result.error else EXIT_OK


def cmd_run(args) -> int:
    import json

    from tqdm import tqdm

    from generation.decoding import SamplingConfig
    from generation.models import ModelLoadError
    from generation.strategies import StrategySettings, get_strategy
    from generation.strategies.runner import PromptItem, run_strategy

    try:
        get_strategy(args.strategy)
        items = []
        with open(args.prompts, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or not str(obj.get("prompt", "")).strip():
                        raise ValueError(f"{args.prompts}:{lineno}: each line needs a non-empty 'prompt'")
                    answer = obj.get("answer", obj.get("reference_answer"))
                    items.append(PromptItem(obj["prompt"], None if answer is None else str(answer), "cli"))
        if not items:
            raise ValueError(f"{args.prompts} holds no prompts")
        sampling = SamplingConfig(args.temperature, 0.95, args.max_thinking, args.max_answer, args.seed)
        settings = StrategySettings(sampling=sampling, n=args.n, min_thinking_tokens=args.min_thinking,
                                    max_waits=args.max_waits, effort=args.effort)
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
    except (ValueError, OSError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tqdm(desc=args.strategy, total=len(items), unit="prompt", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, tokens: int) -> None:
            bar.set_postfix(tokens=tokens, refresh=False)
            bar.update(done - bar.n)

        result = run_strategy(config, loaded, args.strategy, items, fmt, settings, progress,
                              price_per_million=args.price)
    rows = [{"prompt": s.prompt[:40], "reference": s.reference_answer, "selected": s.selected_answer,
             "correct": s.correct, "rule": s.rule} for s in result.selections]
    m = result.metrics
    extra = {"run_id": result.run_id, "strategy": args.strategy, "selection_accuracy": m["selection_accuracy"],
             "sample_accuracy": m["accuracy"], "mean_thinking_tokens": m["mean_thinking_tokens"],
             "mean_answer_tokens": m["mean_answer_tokens"], "tokens_per_s": m["tokens_per_s"],
             "outcome_efficiency": m["outcome_efficiency"], "e3": m["e3"], "ock_score": m["ock_score"],
             "cost_usd": m["cost_usd"]}
    _print_table(rows, args.json, extra)
    return EXIT_OK


def cmd_loops(args) -> int:
    """Near-duplicate thinking steps (loops) of stored traces; skips traces already done for these settings."""
    from tqdm import tqdm

    from generation.embeddings import EmbeddingConfig, load_embedder, loop_key, store_trace_loops
    from storage.loops import repeat_shares, traces_without_loops

    config = _storage(args)
    try:
        settings = EmbeddingConfig(threshold=args.threshold, unit=args.unit, min_chars=args.min_chars)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    todo = traces_without_loops(config, loop_key(settings), args.run)
    if not todo:
        print(f"nothing to do: every selected trace already has loop marks for these settings ({config.db_path})")
        return EXIT_OK
    embedder = load_embedder()
    with tqdm(total=len(todo), desc="finding loops", unit="trace", disable=None) as bar:
        store_trace_loops(config, embedder, settings, todo, lambda done, total: bar.update(done - bar.n))
    shares = [s for s in repeat_shares(config, todo, loop_key(settings)).values() if s is not None]
    mean = f"{sum(shares) / len(shares):.1%}" if shares else "n/a (no steps)"
    print(f"stored loop marks of {len(todo)} traces into {config.db_path}; mean share of repeated steps: {mean}")
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
    _backend_options(gen)
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser("import", help="import traces (ThinkScope, OpenAI, Anthropic, Open WebUI, raw text)")
    imp.add_argument("file")
    imp.add_argument("--format", default="auto",
                     choices=["auto", "thinkscope", "openai", "raw", "anthropic", "openwebui"],
                     help="file format (default: detected from the content)")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="export every trace as ThinkScope JSONL or Parquet, or the annotations")
    exp.add_argument("file", help="JSONL file, or for parquet a directory (traces.parquet + tokens.parquet)")
    exp.add_argument("--format", choices=["jsonl", "parquet", "annotations"], default="jsonl",
                     help="annotations: every review annotation version as JSONL")
    exp.set_defaults(func=cmd_export)

    ana = sub.add_parser("analyze", help="MI peaks, deep-thinking ratio and confidence for stored traces")
    which = ana.add_mutually_exclusive_group()
    which.add_argument("--trace", type=int, help="one trace id (default: every trace not yet analysed)")
    which.add_argument("--run", type=int, help="every trace of one run")
    ana.add_argument("--model", help="analysing model (default: each trace's own model)")
    ana.add_argument("--lens-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                     help="logit-lens unembedding precision: auto (bfloat16 where the hardware makes it fast), "
                          "float32, or bfloat16 (near-threshold divergences are recomputed in float32)")
    ana.set_defaults(func=cmd_analyze)

    swp = sub.add_parser("sweep", help="accuracy vs thinking budget for one prompt (resumable)")
    swp.add_argument("--prompt", required=True)
    swp.add_argument("--answer", help="reference answer (without one, accuracy is unknown)")
    swp.add_argument("--budgets", required=True, help="thinking budgets, increasing, e.g. 32,64,128")
    swp.add_argument("--samples", type=int, default=8, help="samples per budget")
    swp.add_argument("--free-samples", type=int, default=0, help="free-running samples, binned by length")
    swp.add_argument("--temperature", type=float, default=0.7)
    swp.add_argument("--max-answer", type=int, default=48)
    swp.add_argument("--seed", type=int, default=0)
    swp.set_defaults(func=cmd_sweep)

    run = sub.add_parser("run", help="run a test-time-compute strategy over a prompt set")
    run.add_argument("--strategy", required=True, help="greedy, self_consistency, borda, deepconf_online, ...")
    run.add_argument("--prompts", required=True, help="JSONL with 'prompt' and optional 'answer' per line")
    run.add_argument("--n", type=int, default=4, help="samples per prompt")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--max-thinking", type=int, default=256)
    run.add_argument("--max-answer", type=int, default=48)
    run.add_argument("--min-thinking", type=int, default=0, help="budget forcing: minimum thinking tokens")
    run.add_argument("--max-waits", type=int, default=0, help="budget forcing: 'Wait' insertions allowed")
    run.add_argument("--effort", default="medium", choices=["low", "medium", "high", "max"])
    run.add_argument("--price", type=float, help="price per million tokens, for the cost figure")
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(func=cmd_run)
    loops = sub.add_parser("loops", help="mark near-duplicate thinking steps (loops) with sentence embeddings")
    loops.add_argument("--run", type=int, help="only the traces of this run (default: every trace)")
    loops.add_argument("--threshold", type=float, default=0.9, help="cosine similarity that counts as a repeat")
    loops.add_argument("--unit", choices=["sentence", "paragraph"], default="sentence")
    loops.add_argument("--min-chars", type=int, default=12, help="shorter steps are ignored")
    loops.set_defaults(func=cmd_loops)
    for cmd in (swp, run):
        cmd.add_argument("--model", default="embedded:SmolLM2-135M-Instruct", help="embedded model, HF id or directory")
        cmd.add_argument("--trust-remote-code", action="store_true")
        cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        _backend_options(cmd)
    return parser


def _backend_options(cmd) -> None:
    cmd.add_argument("--backend", choices=["local", "openai"], default="local",
                     help="local transformers model, or an OpenAI-compatible server (vLLM, SGLang, ...)")
    cmd.add_argument("--base-url", help="server URL for --backend openai, e.g. http://localhost:8000/v1")
    cmd.add_argument("--api-key-env", default="THINKSCOPE_API_KEY",
                     help="NAME of the environment variable holding the server's API key (never stored)")
    cmd.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (--backend openai)")
    cmd.add_argument("--template", help="local tokenizer (dir or hub id) whose chat template renders prompts for "
                                        "/v1/completions: enables budget forcing through the server")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # storage errors and the like: one clear line, not a traceback
        from generation.backends.base import BackendUnavailable
        from storage.errors import StorageError

        if isinstance(exc, BackendUnavailable):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, StorageError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())

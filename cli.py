"""ThinkScope from the terminal: generate, import, export.

    python cli.py generate --prompt "What is 17 + 26?" [--answer 43] [--model M]
    python cli.py import FILE [--format auto|thinkscope|openai|raw|anthropic|openwebui|records] [--map ...]
    python cli.py export [--format jsonl|parquet] OUT
    python cli.py analyze [--trace ID | --run ID] [--model M | --use-trace-model]
    python cli.py sweep --prompt TEXT --answer REF --budgets 32,64,128 --samples 8 [--model M] [--json]
    python cli.py run --strategy NAME --prompts FILE.jsonl [--n N] [--model M] [--json]
    run and sweep take --prompts FILE(.jsonl|.json|.csv|.parquet) | hf:ID[:CONFIG[:SPLIT]] | gsm8k | math500 |
        aime2024 | aime2025 | set:NAME, with [--preset P] [--field F] [--answer-field F] [--limit N]
    generate, sweep and run also take --backend openai --base-url URL [--model NAME] (an OpenAI-compatible server)
    generate, sweep, run and analyze take --device auto|cpu|cuda|cuda:N|mps and --dtype auto|float32|bfloat16|float16
    python cli.py loops [--run ID] [--threshold 0.9] [--unit sentence|paragraph]
    python cli.py anchors --trace ID --samples 8 [--max-tokens 256] [--json]
    python cli.py branch --trace ID --sentence K (--replace TEXT | --delete) --samples 4 [--json]
All commands honour THINKSCOPE_DB (or --db). Tracebacks go to the log file (cache directory, logs/cli.log);
--verbose prints them too.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("thinkscope.cli")


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
    from analysis.answers import ungraded_reason
    from analysis.reasoning import ReasoningFormat
    from generation.decoding import SamplingConfig
    from generation.models import ModelLoadError
    from generation.streaming import GenerationRequest, generate
    from storage.errors import TraceQueued
    from storage.traces import save_or_queue

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
    finished = generate(loaded, request, on_token=_TerminalStream(), on_finish=lambda r: save_or_queue(config, r))
    record = finished.record
    # an ungraded trace prints "—" and why (stopped, failed, no reference), never "incorrect"
    grade = {True: "correct", False: "incorrect"}.get(record.correct) or \
        f"— {ungraded_reason(record.stop_reason, record.reference_answer, record.meta) or 'ungraded'}"
    print(
        f"\n\n[{record.stop_reason}] answer={record.extracted_answer!r} ({grade}) · "
        f"{record.n_thinking_tokens} thinking + {record.n_answer_tokens} answer tokens · "
        f"{record.latency_s:.1f} s · {record.tokens_per_s:.1f} tok/s"
    )
    if isinstance(finished.stored, TraceQueued):  # the database stayed locked: not lost, stored later
        if finished.error:
            print(f"error: {finished.error}", file=sys.stderr)
        print(f"queued, not yet stored: {finished.stored}", file=sys.stderr)
        return EXIT_ERROR if finished.error else EXIT_OK
    if finished.error:
        print(f"error: {finished.error}", file=sys.stderr)
        if finished.stored is not None:  # what arrived is kept: say where
            partial = ", partial" if record.meta.get("partial") else ""
            print(f"stored as trace {finished.stored} ({record.stop_reason}{partial}) in {config.db_path}")
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
            result = import_file(config, Path(args.file), args.format, progress=progress, mapping=args.map,
                                 allow_duplicates=args.allow_duplicates)
        except (StorageError, OSError) as exc:
            print(f"\nerror: {exc}\nNothing from {args.file} was imported.", file=sys.stderr)
            return EXIT_ERROR
    print(f"imported {result.summary()} ({result.format}) into {config.db_path}")
    return EXIT_OK


def cmd_export(args) -> int:
    from storage.errors import StorageError
    from storage.jsonl import export_jsonl
    from storage.annotations import export_annotations_jsonl
    from storage.parquet_export import export_parquet

    config = _storage(args)
    # With `-` the traces go to standard output, so the summary goes to stderr.
    report = sys.stderr if args.file == "-" else sys.stdout
    try:
        if args.format == "parquet":
            if args.file == "-":
                print("error: the Parquet export writes a folder (traces.parquet + tokens.parquet); "
                      "`-` (standard output) works for jsonl and annotations", file=sys.stderr)
                return EXIT_USAGE
            done = export_parquet(config, Path(args.file))
            print(f"exported {done.n_traces} traces and {done.n_tokens} token rows to "
                  f"{done.traces_path} and {done.tokens_path}")
            return EXIT_OK
        if args.format == "annotations":
            count = export_annotations_jsonl(config, args.file)
            print(f"exported {count} annotation versions to {args.file}", file=report)
            return EXIT_OK
        count = export_jsonl(config, args.file)
    except (StorageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exported {count} traces to {args.file}", file=report)
    return EXIT_OK


def cmd_analyze(args) -> int:
    """MI peaks, logit-lens settling and confidence for stored traces; skips what is already analysed."""
    import generation  # noqa: F401  (first: sets OMP_WAIT_POLICY before analysis imports torch)
    from tqdm import tqdm

    from analysis.trace_signals import AnalysisSettings
    from generation.analyze import analyze_trace, choose_analysis_model, load_analysis_model
    from generation.models import ModelLoadError
    from storage.analyses import save_analysis, unanalysed_trace_ids
    from storage.errors import StorageError
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
    failed: list[int] = []
    # One bad trace (an older database, a crafted file) is reported and skipped; the others go on.
    for trace_id in tqdm(todo, desc="analysing", unit="trace", disable=None):
        try:
            found = get_trace(config, trace_id)
            if found is None:
                raise ValueError("it is no longer in the database")
            record = found.record
            choice = choose_analysis_model(record.model, args.model, args.use_trace_model)
            if choice.needs_confirmation:
                raise ValueError(f"{choice.message} Give --model NAME, or --use-trace-model to load the trace's model.")
            if choice.name not in models:
                try:
                    models[choice.name] = load_analysis_model(choice.name, device=args.device, dtype=args.dtype)
                except ModelLoadError as exc:
                    models[choice.name] = str(exc)
            loaded = models[choice.name]
            if isinstance(loaded, str):
                raise ValueError(loaded)
            analysis = analyze_trace(loaded, record, settings["stored" if record.reference_answer else "self"])
            save_analysis(config, trace_id, analysis)
        except (ValueError, StorageError) as exc:
            failed.append(trace_id)
            tqdm.write(f"trace {trace_id}: not analysed: {exc}", file=sys.stderr)
        except Exception as exc:  # a defect, not the data's fault: keep the traceback in the log
            failed.append(trace_id)
            log.error("analysing trace %s failed", trace_id, exc_info=True)
            tqdm.write(f"trace {trace_id}: not analysed: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
    summary = f"analysed {len(todo) - len(failed)} of {len(todo)} traces into {config.db_path}"
    if failed:
        shown = ", ".join(map(str, failed[:20])) + (", ..." if len(failed) > 20 else "")
        summary += f"; {len(failed)} not analysed (traces {shown}: see the messages above)"
    print(summary)
    return EXIT_ERROR if failed else EXIT_OK


def _load_for_tcc(args):
    """(model or backend, its reasoning format) for generate/sweep/run, or raises ModelLoadError/ValueError."""
    from generation.models import EMBEDDED_MODEL, ModelSpec, load_model
    from generation.prompting import detect_format

    if args.backend == "openai":
        from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig, RemoteError

        if not args.base_url:
            raise ValueError("--backend openai needs --base-url, e.g. http://localhost:8000/v1")
        timeouts = {k: v for k, v in (("stall_timeout_s", args.stall_timeout), ("deadline_s", args.deadline))
                    if v is not None}  # unset: the config's default ($THINKSCOPE_STALL_TIMEOUT_S, ...)
        config = OpenAIConfig(args.base_url, "" if args.model == EMBEDDED_MODEL else args.model, args.api_key_env,
                              args.concurrency, template=args.template, **timeouts)
        try:
            backend = OpenAIBackend(config)
        except RemoteError as exc:
            raise ValueError(str(exc)) from exc
        return backend, backend.default_format()
    loaded = load_model(ModelSpec(args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype,
                                  device=args.device))
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
        cells = [[("—" if r[c] is None else f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
                 for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def cmd_sweep(args) -> int:
    from generation.models import ModelLoadError
    from generation.sweep import SweepSettings, curves, parse_budgets, run_sweep

    try:
        prompt, answer, preset = args.prompt, args.answer, None
        if args.prompts:
            if args.prompt:
                raise ValueError("give either --prompt or --prompts, not both")
            rows, preset, label = _prompt_rows(args)
            if args.index is None:  # the whole set: one sweep per prompt, one set-sweep id
                return _sweep_set(args, rows, preset, label)
            if not 0 <= args.index < len(rows):
                raise ValueError(f"--index {args.index} is outside the set's {len(rows)} prompts (0 to {len(rows) - 1})")
            prompt, answer = rows[args.index].prompt, answer or rows[args.index].reference_answer
        elif not args.prompt:
            raise ValueError("give --prompt TEXT, or --prompts SOURCE with --index K")
        settings = SweepSettings(prompt, answer, parse_budgets(args.budgets), args.samples,
                                 free_samples=args.free_samples, temperature=args.temperature,
                                 max_answer_tokens=args.max_answer, seed=args.seed)
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
        if preset is not None:  # its system prompt joins the chat, its answer format grades (Preset.apply)
            fmt = preset.apply(fmt)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = _with_cell_bar(lambda progress: run_sweep(config, loaded, fmt, settings, progress))
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


def _with_cell_bar(run):
    """run(progress) under a progress bar of sweep cells (with the tokens of the batch in progress)."""
    from tqdm import tqdm

    with tqdm(desc="sweep", unit="cell", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, tokens: int) -> None:
            bar.total = total
            bar.set_postfix(tokens=tokens, refresh=False)
            bar.update(done - bar.n)

        return run(progress)


def _sweep_set(args, rows, preset, label: str) -> int:
    import numpy as np

    from generation.models import ModelLoadError
    from generation.sweep import SetSweepSettings, parse_budgets, run_set_sweep, set_sweep_table

    try:
        settings = SetSweepSettings(tuple((r.prompt, r.reference_answer) for r in rows), parse_budgets(args.budgets),
                                    args.samples, temperature=args.temperature, max_answer_tokens=args.max_answer,
                                    seed=args.seed, set_label=label)
        if args.free_samples:
            raise ValueError("--free-samples is for a one-prompt sweep (give --index K)")
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
        if preset is not None:
            fmt = preset.apply(fmt)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = _with_cell_bar(lambda progress: run_set_sweep(config, loaded, fmt, settings, progress))
    table = set_sweep_table(config, result.run_id)
    graded = table.graded()
    out = []
    for j, budget in enumerate(table.budgets):
        acc = graded.accuracy[:, j]
        out.append({"budget": budget, "prompts_graded": len(graded.prompts),
                    "accuracy": float(acc.mean()) if len(acc) else None,
                    "mean_thinking_tokens": float(np.nanmean(table.mean_thinking_tokens[:, j]))
                    if np.isfinite(table.mean_thinking_tokens[:, j]).any() else None})
    extra = {"sweep_id": result.run_id, "prompts": len(table.prompts), "missing_cells": result.missing,
             "per_prompt_accuracy": [[None if np.isnan(v) else float(v) for v in row] for row in table.accuracy]}
    if not args.json:
        extra.pop("per_prompt_accuracy")
        extra["next"] = f"python cli.py budget oracle --sweep {result.run_id}"
    if result.stopped:
        extra["note"] = "stopped: run the same command again to resume"
    if result.error:
        extra["error"] = f"{result.error} (failed cells are not stored; rerun to resume)"
    _print_table(out, args.json, extra)
    return EXIT_ERROR if result.error else EXIT_OK


def cmd_budget(args) -> int:
    from analysis.budget_oracle import OracleSettings, exact_frontier, fixed_points, lagrangian_frontier, tokens_saved
    from generation.sweep import set_sweep_table
    from storage.errors import StorageError

    try:
        table = set_sweep_table(_storage(args), args.sweep).graded()
        if not table.prompts:
            raise ValueError(f"sweep {args.sweep} has no prompt graded at every budget: the oracle needs "
                             "reference answers and a stored sample at each budget")
        acc, cost = table.accuracy, table.mean_thinking_tokens
        frontier = exact_frontier(acc, cost)
        savings = tokens_saved(acc, cost, OracleSettings(n_bootstrap=args.bootstrap, seed=args.seed))
    except (ValueError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    hull = {q.choice for q in lagrangian_frontier(acc, cost)}
    rows = [{"mean_thinking_tokens": q.mean_cost, "accuracy": q.mean_accuracy, "hull_vertex": q.choice in hull,
             "budgets": [table.budgets[b] for b in q.choice]} for q in frontier]
    if not args.json:
        for r in rows:
            r["budgets"] = ",".join(map(str, r["budgets"]))
    fixed = [{"budget": table.budgets[j], "mean_thinking_tokens": q.mean_cost, "accuracy": q.mean_accuracy}
             for j, q in enumerate(fixed_points(acc, cost))]
    extra = {"sweep_id": args.sweep, "prompts": len(table.prompts), "fixed_budgets": fixed,
             "best_fixed_budget": table.budgets[savings.best_fixed_index],
             "best_fixed_accuracy": savings.best_fixed_accuracy, "oracle_tokens_at_that_accuracy": savings.oracle_cost,
             "tokens_saved": savings.saved_tokens, "fraction_saved": savings.saved_fraction,
             "fraction_saved_interval": list(savings.interval) if savings.interval else None}
    _print_table(rows, args.json, extra)
    return EXIT_OK


def cmd_budget_policy(args) -> int:
    from generation.decoding import SamplingConfig
    from generation.models import ModelLoadError
    from generation.strategies import StrategySettings
    from generation.strategies.adaptive import run_policy_on_sweep
    from storage.errors import StorageError

    try:
        config = _storage(args)
        loaded, fmt = _load_for_tcc(args)
        settings = StrategySettings(n=1, probe_tokens=args.probe_tokens,
                                    sampling=SamplingConfig(args.temperature, 1.0, args.probe_tokens + 1,
                                                            args.max_answer, args.seed))
        escalate = None
        if args.escalate_model:
            from generation.models import ModelSpec, load_model

            escalate = load_model(ModelSpec(args.escalate_model, trust_remote_code=args.trust_remote_code,
                                            dtype=args.dtype, device=args.device))
        run, split, fitted = run_policy_on_sweep(config, loaded, fmt, args.sweep, args.policy, settings,
                                                 escalate=escalate)
    except (ValueError, ModelLoadError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = [{"prompt": s.prompt, "reference": s.reference_answer, "selected": s.selected_answer, "correct": s.correct,
             "budget": s.detail.get("chosen_budget"), "escalated": s.detail.get("escalated")} for s in run.selections]
    extra = {"run_id": run.run_id, "policy": args.policy, "calibration_prompts": list(split.calibration),
             "test_prompts": list(split.test),
             "fitted": [list(m) for m in fitted] if isinstance(fitted, tuple) else fitted,
             "accuracy": run.metrics.get("accuracy"), "thinking_tokens_per_query": run.metrics.get("thinking_tokens_per_query"),
             "next": f"Budgets page, sweep {args.sweep}"}
    _print_table(rows, args.json, extra)
    return EXIT_OK


def _prompt_rows(args):
    """(rows, preset or None, label) from --prompts: a file, hf:ID[:CONFIG[:SPLIT]], a preset name, or
    set:NAME (a stored set). A loaded set is stored as a named prompt set (--set-name, default e.g.
    gsm8k-test), so `--prompts set:NAME` runs it again without the hub or the file."""
    from generation.prompt_sets import PRESETS, PromptSetError, PromptSource, load_prompt_set
    from storage.errors import StorageError
    from storage.prompt_sets import get_prompt_set, list_prompt_sets, save_prompt_set

    config = _storage(args)
    if args.prompts.startswith("set:"):
        found = get_prompt_set(config, args.prompts[4:], args.limit)
        if found is None:
            names = ", ".join(i.name for i in list_prompt_sets(config)) or "none yet"
            raise ValueError(f"no stored prompt set {args.prompts[4:]!r} in {config.db_path} (stored: {names})")
        info, rows = found
        preset = PRESETS.get(args.preset or info.preset or "")
        return rows, preset, f"set:{info.name}"
    try:
        loaded = load_prompt_set(PromptSource(args.prompts, args.preset, args.field, args.answer_field, args.limit))
        name = args.set_name or loaded.name
        existing = get_prompt_set(config, name, limit=0)
        if existing is not None and existing[0].source != loaded.source and not args.set_name:
            name = f"{name}-{len(list_prompt_sets(config)) + 1}"  # another source had the default name
        save_prompt_set(config, name, loaded.source, loaded.rows, loaded.preset.name if loaded.preset else None,
                        loaded.fields, replace=existing is None or existing[0].source == loaded.source)
    except (PromptSetError, StorageError) as exc:
        raise ValueError(str(exc)) from None
    print(f"prompt set {name!r}: {len(loaded.rows)} prompts from {loaded.source}"
          + (f" (preset {loaded.preset.name})" if loaded.preset else ""), file=sys.stderr)
    return loaded.rows, loaded.preset, f"set:{name}"


def cmd_run(args) -> int:
    from tqdm import tqdm

    from generation.decoding import SamplingConfig
    from generation.models import ModelLoadError
    from generation.strategies import StrategySettings, get_strategy
    from generation.strategies.runner import PromptItem, run_strategy

    try:
        get_strategy(args.strategy)
        rows, preset, label = _prompt_rows(args)
        items = [PromptItem(r.prompt, r.reference_answer, label) for r in rows]
        sampling = SamplingConfig(args.temperature, 0.95, args.max_thinking, args.max_answer, args.seed)
        settings = StrategySettings(sampling=sampling, n=args.n, min_thinking_tokens=args.min_thinking,
                                    max_waits=args.max_waits, effort=args.effort, step_aggregate=args.step_aggregate,
                                    step_scorer=args.scorer or "self_certainty")
        get_strategy(args.strategy).validate(settings)  # refused settings: before the model loads
        config = _storage(args)
        prm = _load_scorer(args)
        loaded, fmt = _load_for_tcc(args)
        if preset is not None:  # its system prompt joins the chat, its answer format grades (Preset.apply)
            fmt = preset.apply(fmt)
    except (ValueError, OSError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tqdm(desc=args.strategy, total=len(items), unit="prompt", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, tokens: int) -> None:
            bar.set_postfix(tokens=tokens, refresh=False)
            bar.update(done - bar.n)

        try:
            result = run_strategy(config, loaded, args.strategy, items, fmt, settings, progress,
                                  price_per_million=args.price, prm=prm)
        except ValueError as exc:  # settings the strategy refuses (e.g. n not a multiple of M)
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if result.resumed:  # an interrupted run of the same strategy, settings and prompts (runner.run_strategy)
        print(f"resumed run {result.run_id}: {result.kept} of {len(items)} prompts kept from before", file=sys.stderr)
    rows = [{"prompt": s.prompt[:40], "reference": s.reference_answer, "selected": s.selected_answer,
             "correct": s.correct, "rule": s.rule, "tie": s.detail.get("tie") or ""} for s in result.selections]
    m = result.metrics
    # docs/METHODS.md §6: accuracy and tokens per query (the selected answer; every decoded token of
    # the query), E3/OckScore from those; sample figures per stored sample; not-finished apart.
    extra = {"run_id": result.run_id, "strategy": args.strategy, "selection_accuracy": m["accuracy"],
             "sample_accuracy": m["sample_accuracy"], "not_finished_samples": m["n_not_finished"],
             "ties": m["n_ties"], "total_tokens_per_query": m["total_tokens_per_query"],
             "mean_thinking_tokens_per_sample": m["mean_thinking_tokens"],
             "mean_answer_tokens_per_sample": m["mean_answer_tokens"], "tokens_per_s": m["tokens_per_s"],
             "outcome_efficiency": m["outcome_efficiency"], "e3_total_tokens_per_query": m["e3"],
             "ock_score_total_tokens_per_query": m["ock_score"], "cost_usd": m["cost_usd"]}
    _print_table(rows, args.json, extra)
    return EXIT_OK


def _load_scorer(args):
    """The PRM named by --scorer prm:<hub id or directory>, or None for the default (self-certainty)."""
    if args.scorer in (None, "", "self_certainty"):
        return None
    from generation.prm import PRMConfig, load_prm

    if args.strategy not in SCORED_STRATEGIES:
        raise ValueError(f"--scorer applies to {', '.join(SCORED_STRATEGIES)}, not {args.strategy}")
    return load_prm(PRMConfig.from_spec(args.scorer, style=args.prm_style, trust_remote_code=args.trust_remote_code,
                                        device="cpu" if args.device == "auto" else args.device))


SCORED_STRATEGIES = ("best_of_n", "beam_search", "dvts")


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


def _anchor_model(args, config):
    """(trace record, loaded model) for anchors/branch, by the same rule as analyze; raises ValueError."""
    from generation.analyze import choose_analysis_model, load_analysis_model
    from generation.models import ModelLoadError
    from storage.traces import get_trace

    found = get_trace(config, args.trace)
    if found is None:
        raise ValueError(f"no trace {args.trace} in {config.db_path}")
    choice = choose_analysis_model(found.record.model, args.model, args.use_trace_model)
    if choice.needs_confirmation:
        raise ValueError(f"{choice.message} Give --model NAME, or --use-trace-model to load the trace's model.")
    try:
        return found.record, load_analysis_model(choice.name, device=args.device, dtype=args.dtype)
    except ModelLoadError as exc:
        raise ValueError(str(exc)) from exc


def cmd_anchors(args) -> int:
    """Thought Anchors importance of each thinking sentence (resumable; docs/METHODS.md)."""
    import json

    from tqdm import tqdm

    from generation.anchors import AnchorSettings, anchors_summary, estimate, load_importance, run_anchors
    from generation.embeddings import load_embedder

    config = _storage(args)
    try:
        settings = AnchorSettings(samples=args.samples, max_new_tokens=args.max_tokens, answer_tokens=args.answer_tokens,
                                  forced=not args.no_forced,
                                  temperature=args.temperature, seed=args.seed)
        record, loaded = _anchor_model(args, config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"estimate: {estimate(record, settings).describe()}", file=sys.stderr)
    try:
        with tqdm(desc="resampling", unit="batch", disable=None, file=sys.stderr) as bar:
            def progress(done: int, total: int, tokens: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
            run = run_anchors(config, loaded, args.trace, settings, load_embedder(), progress)
    except ValueError as exc:  # BackendUnavailable is one
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result = load_importance(config, args.trace, record, run.key, settings.samples)
    summary = anchors_summary(run, result)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{run.generated} rollouts generated, {run.stored}/{run.total} stored (key {run.key})")
        def kl(value) -> str:
            return "  n/a" if value is None else f"{value:.3f}"

        print("KL in nats (additive smoothing alpha = 1); n/a: no rollout on one side")
        for row in summary["sentences"]:
            print(f"{row['index']:3d}  resampling {kl(row['resampling_kl'])}  counterfactual "
                  f"{kl(row['counterfactual_kl'])}  forced {kl(row['forced_kl'])}  {row['text'][:70]!r}")
    return EXIT_OK


def cmd_branch(args) -> int:
    """Cut a trace at a sentence, replace or delete it, continue N samples; each stored as a child trace."""
    import json

    from generation.anchors import BranchSettings, branch_trace

    config = _storage(args)
    try:
        settings = BranchSettings(samples=args.samples, max_new_tokens=args.max_tokens, seed=args.seed)
        _, loaded = _anchor_model(args, config)
        ids = branch_trace(config, loaded, args.trace, args.sentence, "delete" if args.delete else "replace",
                           args.replace, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"parent_trace_id": args.trace, "sentence": args.sentence, "child_trace_ids": ids}))
    else:
        print(f"stored {len(ids)} branches of trace {args.trace} at sentence {args.sentence}: "
              f"traces {', '.join(map(str, ids))}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinkscope", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="DuckDB file (default: $THINKSCOPE_DB or the user data directory)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print tracebacks (they always go to the log file)")
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

    imp = sub.add_parser("import", help="import traces (ThinkScope, OpenAI, Anthropic, Open WebUI, raw text, "
                                        "records in JSON/JSONL/CSV/Parquet)")
    imp.add_argument("file")
    imp.add_argument("--format", default="auto",
                     choices=["auto", "thinkscope", "openai", "raw", "anthropic", "openwebui", "records"],
                     help="file format (default: detected from the content)")
    imp.add_argument("--map", metavar="ROLE=FIELD,...",
                     help="records: which field holds what, e.g. prompt=question,response=output "
                          "(roles: prompt, response, thinking, answer, reference, model)")
    imp.add_argument("--allow-duplicates", action="store_true",
                     help="store traces the database already holds again (default: count them as present)")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="export every trace as ThinkScope JSONL or Parquet, or the annotations")
    exp.add_argument("file", help="JSONL file (- for standard output), or for parquet a directory "
                                  "(traces.parquet + tokens.parquet)")
    exp.add_argument("--format", choices=["jsonl", "parquet", "annotations"], default="jsonl",
                     help="annotations: every review annotation version as JSONL")
    exp.set_defaults(func=cmd_export)

    ana = sub.add_parser("analyze", help="MI peaks, deep-thinking ratio and confidence for stored traces")
    which = ana.add_mutually_exclusive_group()
    which.add_argument("--trace", type=int, help="one trace id (default: every trace not yet analysed)")
    which.add_argument("--run", type=int, help="every trace of one run")
    ana.add_argument("--model", help="analysing model (default: each trace's own model)")
    ana.add_argument("--use-trace-model", action="store_true",
                     help="load (and download if needed) the model a trace names; without it only the embedded "
                          "model is loaded on a trace's word, since imported files name any model")
    ana.add_argument("--lens-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                     help="logit-lens unembedding precision: auto (bfloat16 where the hardware makes it fast), "
                          "float32, or bfloat16 (near-threshold divergences are recomputed in float32)")
    ana.set_defaults(func=cmd_analyze)

    swp = sub.add_parser("sweep", help="accuracy vs thinking budget for one prompt or a prompt set (resumable)")
    swp.add_argument("--prompt", help="the prompt (or --prompts SOURCE with --index K)")
    swp.add_argument("--prompts", help="prompt set: a file, hf:ID[:CONFIG[:SPLIT]], a preset or set:NAME")
    swp.add_argument("--index", type=int, help="with --prompts: sweep only this prompt of the set (0-based); "
                                                "without it, every prompt (a set sweep for `budget oracle`)")
    swp.add_argument("--answer", help="reference answer (without one, accuracy is unknown)")
    swp.add_argument("--budgets", required=True, help="thinking budgets, increasing, e.g. 32,64,128")
    swp.add_argument("--samples", type=int, default=8, help="samples per budget")
    swp.add_argument("--free-samples", type=int, default=0, help="free-running samples, binned by length")
    swp.add_argument("--temperature", type=float, default=0.7)
    swp.add_argument("--max-answer", type=int, default=48)
    swp.add_argument("--seed", type=int, default=0)
    swp.set_defaults(func=cmd_sweep)

    bud = sub.add_parser("budget", help="adaptive budgets: what a per-prompt budget oracle would save")
    bud_sub = bud.add_subparsers(dest="budget_command", required=True)
    orc = bud_sub.add_parser("oracle", help="the per-prompt oracle frontier of a set sweep (cli.py sweep --prompts)")
    orc.add_argument("--sweep", type=int, required=True, help="the set sweep's id (printed by cli.py sweep)")
    orc.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over prompts (0: none)")
    orc.add_argument("--seed", type=int, default=0)
    orc.add_argument("--json", action="store_true", help="print JSON instead of a table")
    orc.set_defaults(func=cmd_budget)
    pol = bud_sub.add_parser("policy", help="run an L2 policy on a set sweep's test split (fitted on the other half)")
    pol.add_argument("--sweep", type=int, required=True, help="the set sweep's id")
    pol.add_argument("--policy", required=True, choices=["adaptive_probe", "self_budget", "tiered"])
    pol.add_argument("--escalate-model", help="tiered: the larger local model (HF id or directory) that "
                                              "low-confidence prompts go to")
    pol.add_argument("--probe-tokens", type=int, default=32, help="thinking budget of the probe or the estimate")
    pol.add_argument("--max-answer", type=int, default=48)
    pol.add_argument("--temperature", type=float, default=0.0)
    pol.add_argument("--seed", type=int, default=0)
    pol.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pol.add_argument("--model", default="embedded:SmolLM2-135M-Instruct", help="embedded model, HF id or directory")
    pol.add_argument("--trust-remote-code", action="store_true")
    _device_options(pol)
    _backend_options(pol)
    pol.set_defaults(func=cmd_budget_policy)

    run = sub.add_parser("run", help="run a test-time-compute strategy over a prompt set")
    run.add_argument("--strategy", required=True, help="greedy, self_consistency, borda, deepconf_online, ...")
    run.add_argument("--prompts", required=True,
                     help="JSONL/JSON/CSV/Parquet file, hf:ID[:CONFIG[:SPLIT]], a preset (gsm8k, math500, aime2024, "
                          "aime2025) or set:NAME (a stored prompt set)")
    run.add_argument("--n", type=int, default=4, help="samples per prompt")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--max-thinking", type=int, default=256)
    run.add_argument("--max-answer", type=int, default=48)
    run.add_argument("--min-thinking", type=int, default=0, help="budget forcing: minimum thinking tokens")
    run.add_argument("--max-waits", type=int, default=0, help="budget forcing: 'Wait' insertions allowed")
    run.add_argument("--effort", default="medium", choices=["low", "medium", "high", "max"])
    run.add_argument("--price", type=float, help="price per million tokens, for the cost figure")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--scorer", default="self_certainty", metavar="self_certainty|prm:PATH",
                     help="step scorer of best_of_n, beam_search and dvts: self-certainty, or a process reward model "
                          "(Qwen2.5-Math-PRM or RLHFlow style) by hub id or directory")
    run.add_argument("--prm-style", default="auto", choices=["auto", "qwen", "rlhflow"],
                     help="how the PRM reads steps (auto: from its head)")
    run.add_argument("--step-aggregate", default="last", choices=["last", "min", "mean", "geomean", "prod"],
                     help="how a sample's step scores combine (prod suits PRM probabilities)")
    run.set_defaults(func=cmd_run)
    loops = sub.add_parser("loops", help="mark near-duplicate thinking steps (loops) with sentence embeddings")
    loops.add_argument("--run", type=int, help="only the traces of this run (default: every trace)")
    loops.add_argument("--threshold", type=float, default=0.9, help="cosine similarity that counts as a repeat")
    loops.add_argument("--unit", choices=["sentence", "paragraph"], default="sentence")
    loops.add_argument("--min-chars", type=int, default=12, help="shorter steps are ignored")
    loops.set_defaults(func=cmd_loops)
    anc = sub.add_parser("anchors", help="which thinking sentences matter: resampling importance (Thought Anchors)")
    anc.add_argument("--trace", type=int, required=True)
    anc.add_argument("--samples", type=int, default=8, help="continuations per sentence cut (and per kind)")
    anc.add_argument("--max-tokens", type=int, default=256, help="new thinking tokens per continuation")
    anc.add_argument("--answer-tokens", type=int, default=48, help="answer tokens after thinking ends")
    anc.add_argument("--no-forced", action="store_true", help="skip the forced-answer rollouts")
    anc.add_argument("--json", action="store_true", help="print the scores as JSON")
    anc.set_defaults(func=cmd_anchors)
    brn = sub.add_parser("branch", help="cut a trace at a sentence, edit it, continue N samples as child traces")
    brn.add_argument("--trace", type=int, required=True)
    brn.add_argument("--sentence", type=int, required=True, help="0-based index of the thinking sentence")
    edit = brn.add_mutually_exclusive_group(required=True)
    edit.add_argument("--replace", metavar="TEXT", help="the new sentence")
    edit.add_argument("--delete", action="store_true", help="drop the sentence")
    brn.add_argument("--samples", type=int, default=4)
    brn.add_argument("--max-tokens", type=int, default=256, help="new thinking tokens per continuation")
    brn.add_argument("--json", action="store_true", help="print the child trace ids as JSON")
    brn.set_defaults(func=cmd_branch)
    for cmd in (anc, brn):
        cmd.add_argument("--model", help="model that continues the trace (default: the trace's own, when embedded)")
        cmd.add_argument("--use-trace-model", action="store_true", help="load the model the trace names")
        cmd.add_argument("--temperature", type=float, default=0.7)
        cmd.add_argument("--seed", type=int, default=0)
        _device_options(cmd)
    for cmd in (gen, ana, swp, run):
        _device_options(cmd)
    for cmd in (swp, run):
        _prompt_set_options(cmd)
    for cmd in sub.choices.values():  # --verbose after the command too; unset there, the global one holds
        cmd.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for cmd in (swp, run):
        cmd.add_argument("--model", default="embedded:SmolLM2-135M-Instruct", help="embedded model, HF id or directory")
        cmd.add_argument("--trust-remote-code", action="store_true")
        cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        _backend_options(cmd)
    return parser


def _prompt_set_options(cmd) -> None:
    cmd.add_argument("--preset", choices=["gsm8k", "math500", "aime2024", "aime2025"],
                     help="the prompt set's system prompt, answer format and reference cleaning (GSM8K: after ####); "
                          "inferred for the presets' own hub ids")
    cmd.add_argument("--field", help="the prompts' field (default: the preset's, else prompt/question/problem/...)")
    cmd.add_argument("--answer-field", help="the reference answers' field (default: the preset's, else answer/...)")
    cmd.add_argument("--limit", type=int, help="only the first N prompts")
    cmd.add_argument("--set-name", help="store the loaded prompts as this named prompt set (default: e.g. gsm8k-test)")


def _device_options(cmd) -> None:
    cmd.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                     help="where a local model runs (default auto: a GPU when there is one, else the CPU)")
    cmd.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="local model weights (default auto: bfloat16 on GPUs that support it, float32 on the CPU)")


def _backend_options(cmd) -> None:
    cmd.add_argument("--backend", choices=["local", "openai"], default="local",
                     help="local transformers model, or an OpenAI-compatible server (vLLM, SGLang, ...)")
    cmd.add_argument("--base-url", help="server URL for --backend openai, e.g. http://localhost:8000/v1")
    cmd.add_argument("--api-key-env", default="THINKSCOPE_API_KEY",
                     help="NAME of the environment variable holding the server's API key (never stored)")
    cmd.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (--backend openai)")
    cmd.add_argument("--template", help="local tokenizer (dir or hub id) whose chat template renders prompts for "
                                        "/v1/completions: enables budget forcing through the server")
    cmd.add_argument("--stall-timeout", type=float, metavar="S",
                     help="give up when the server sends no new token for S seconds; what arrived is stored "
                          "(default: $THINKSCOPE_STALL_TIMEOUT_S or 60)")
    cmd.add_argument("--deadline", type=float, metavar="S",
                     help="longest time one generation may take, in seconds (default: $THINKSCOPE_DEADLINE_S or 3600)")


class _LogLine(logging.Formatter):
    """The terminal gets one line per record; its traceback goes to the log file (or --verbose)."""

    def __init__(self, log_file: Path | None, verbose: bool):
        super().__init__()
        self._log_file, self._verbose = log_file, verbose

    def format(self, record: logging.LogRecord) -> str:
        from generation.backends.openai_config import redact_text

        if self._verbose:
            return redact_text(f"{record.levelname.lower()}: {super().format(record)}")
        where = (f" (traceback in {self._log_file})" if self._log_file else " (--verbose shows the traceback)") \
            if record.exc_info else ""
        return redact_text(f"{record.levelname.lower()}: {record.getMessage()}{where}")


class _Redacted(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from generation.backends.openai_config import redact_text

        return redact_text(super().format(record))  # no credentials from a URL in the log file either


def _start_logging(verbose: bool) -> tuple[list[logging.Handler], Path | None]:
    """Warnings and errors to stderr as single lines, with tracebacks to cache_dir()/logs/cli.log."""
    from logging.handlers import RotatingFileHandler

    from generation.models import cache_dir

    handlers: list[logging.Handler] = []
    log_file: Path | None = cache_dir() / "logs" / "cli.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(log_file, maxBytes=2_000_000, backupCount=2, encoding="utf-8", delay=True)
        file_handler.setFormatter(_Redacted("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
        handlers.append(file_handler)
    except OSError:
        log_file = None
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(_LogLine(log_file, verbose))
    handlers.append(terminal)
    root = logging.getLogger()
    for handler in handlers:
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    return handlers, log_file


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers, log_file = _start_logging(args.verbose)
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
        if args.verbose:
            raise
        log.error("%s failed: unexpected %s: %s", args.command, type(exc).__name__, exc, exc_info=True)
        return EXIT_ERROR
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())

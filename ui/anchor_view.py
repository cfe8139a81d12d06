"""The Trace page's Thought Anchors and Branch sections (docs/METHODS.md §8).

Rollouts run on a BackgroundJob (the script run can end and come back to it); scores are read from the
stored rollouts on each rerun, which costs milliseconds. Trace text is untrusted: sentences, answers and
edits are html.escape'd before they become HTML, or shown with st.text / show_text.
"""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import streamlit as st

from analysis.anchors import IMPORTANCE_KINDS, NO_ANSWER, AnchorMath, SentenceImportance, answer_shares, top_anchors
from analysis.records import TraceRecord
from analysis.steps import Step
from generation.analyze import choose_analysis_model
from generation.anchors import (
    AnchorResult,
    AnchorSettings,
    BranchSettings,
    branch_trace,
    cuts,
    estimate,
    load_importance,
    run_anchors,
)
from generation.backends import BackendUnavailable
from generation.models import LoadedModel, ModelLoadError
from generation.streaming import BackgroundJob
from storage.anchors import Branch, branch_of, branch_tree, get_rollouts
from storage.annotations import current_annotations
from storage.config import StorageConfig
from storage.errors import StorageError
from ui.live import follow_with_bar, stop_job
from ui.resources import cached_embedder, cached_model, cached_trace
from ui.tables import Col, show_table
from ui.token_view import TOKEN_CSS, show_text

JOB = "anchor_job"  # (BackgroundJob, trace id, what) while rollouts or a branch run
SPEED = "anchor_speed"  # batched tokens/s measured by the last run in this session
_EXPECTED = (BackendUnavailable, ValueError, StorageError)
_KIND_LABELS = {"resampling": "Resampling", "counterfactual": "Counterfactual", "forced": "Forced answer"}


def branch_banner(config: StorageConfig, trace_id: int) -> None:
    """For a child trace: where it was branched from and how (the edit shown as text)."""
    branch = branch_of(config, trace_id)
    if branch is None:
        return
    st.info(f"Branch of trace #{branch.parent_trace_id}: sentence {branch.sentence_index} "
            f"{'replaced' if branch.edit == 'replace' else 'deleted'}, then continued. The tokens up to there "
            "were given, not sampled (marked forced).")
    st.text(f"Original: {branch.original}" + (f"\nReplaced by: {branch.replacement}" if branch.replacement else ""))
    st.page_link("pages/trace.py", label=f"Open the parent, trace #{branch.parent_trace_id}",
                 icon=":material/call_split:", query_params={"id": branch.parent_trace_id})


def _model_name(record: TraceRecord, key: str) -> str | None:
    """The continuing model by the analysis rule (a model named only by trace data needs a yes); nothing
    is loaded here, so opening a trace costs no model load: `_load` runs on a button press."""
    typed = st.text_input("Continuing model", record.model, key=f"{key}_model",
                          help="The trace's own model by default; the thinking text is re-tokenized for it.")
    choice = choose_analysis_model(record.model, None if typed.strip() == record.model else typed)
    if choice.needs_confirmation:
        st.info(choice.message)  # info, not a warning: the analysis section above already warns about this model
        if not st.checkbox("Load the model this trace names", key=f"{key}_confirm"):
            return None
        choice = choose_analysis_model(record.model, None, True)
    return choice.name or None


def _load(name: str) -> LoadedModel | None:
    try:
        return cached_model(name)
    except ModelLoadError as exc:
        st.error(f"Cannot load {name!r}: {exc}")
        return None


def _settings() -> AnchorSettings | None:
    c = st.columns(4)
    values = dict(samples=int(c[0].number_input("Samples per sentence (N)", 1, 256, 8, key="anchor_n")),
                  max_new_tokens=int(c[1].number_input("Max new thinking tokens", 1, 4096, 256, key="anchor_max")),
                  answer_tokens=int(c[2].number_input("Answer tokens", 1, 1024, 48, key="anchor_answer")),
                  forced=c[3].checkbox("Forced-answer rollouts", True, key="anchor_forced"))
    try:
        return AnchorSettings(**values)
    except ValueError as exc:
        st.error(str(exc))
        return None


def anchor_section(config: StorageConfig, trace_id: int, record: TraceRecord) -> None:
    with st.expander("Which sentences matter (Thought Anchors)", expanded=JOB in st.session_state):
        steps, _ = cuts(record.thinking_text)
        if not steps:
            st.info("This trace has no thinking sentences to resample.")
            return
        settings = _settings()
        name = _model_name(record, "anchor")
        if settings is None or name is None:
            return
        key = settings.key(name)
        stored = len([r for r in get_rollouts(config, trace_id, key) if r.sample < settings.samples])
        cost = estimate(record, settings, stored, st.session_state.get(SPEED))
        st.caption(f"Cost: {cost.describe()}.")
        _run_controls(config, trace_id, name, settings, cost.n_rollouts)
        result = load_importance(config, trace_id, record, key, settings.samples,
                                 AnchorMath(similarity_threshold=st.session_state.get("anchor_threshold", 0.8)))
        if result is None:
            st.info("No rollouts stored for these settings yet: Run importance generates them (Stop keeps what finished).")
            return
        _show_result(config, trace_id, record.thinking_text, result)


def _run_controls(config, trace_id: int, name: str, settings: AnchorSettings, missing: int) -> None:
    c1, c2 = st.columns(2)
    if c1.button("Run importance", key="anchor_run", disabled=missing == 0 or JOB in st.session_state,
                 help="Nothing left to generate for these settings." if missing == 0 else None) and (
            loaded := _load(name)) is not None:
        embedder = cached_embedder(settings.embedder_path)

        def work(stop, report):
            return run_anchors(config, loaded, trace_id, settings, embedder,
                               lambda d, n, t: report(done=d, total=n, tokens=t, fraction=d / max(n, 1)), stop)

        st.session_state[JOB] = (BackgroundJob(work, expected=_EXPECTED).start(), trace_id, "anchors")
    c2.button("Stop", key="anchor_stop", on_click=stop_job, args=(JOB,), disabled=JOB not in st.session_state)
    entry = st.session_state.get(JOB)
    if entry is None or entry[2] != "anchors":
        return
    job = entry[0]
    follow_with_bar(job, lambda p: f"{p.get('done', 0)}/{p.get('total', '…')} sentence batches · "
                                   f"{p.get('tokens', 0)} tokens in this batch")
    st.session_state.pop(JOB, None)
    if job.error is not None:
        st.error(str(job.error))
    elif job.result is not None:
        if job.result.tokens_per_s > 0:
            st.session_state[SPEED] = job.result.tokens_per_s
        if job.result.stopped:
            st.warning(f"Stopped: {job.result.stored} of {job.result.total} rollouts kept; run again to resume.")


def _colour(value: float, top: float) -> str:
    share = 0.0 if not math.isfinite(value) or top <= 0 else min(value / top, 1.0)
    return f"rgba(220, 60, 30, {0.08 + 0.72 * share:.2f})"


def strip_html(text: str, steps: list[Step], scores: dict[int, SentenceImportance], selected: int | None) -> str:
    """The thinking with each sentence shaded by its score (hover: KL, accuracy change, rollouts)."""
    top = max((s.kl for s in scores.values() if math.isfinite(s.kl)), default=0.0)
    parts, pos = [], 0
    for step in steps:
        parts.append(html.escape(text[pos:step.start]).replace("\n", "<br>"))
        sc = scores.get(step.index)
        kl = sc.kl if sc is not None else math.nan
        title = (f"sentence {step.index}: KL {kl:.3f} nats · accuracy change {sc.accuracy_change:+.2f} · "
                 f"{sc.n_before} vs {sc.n_after} rollouts" if sc is not None else f"sentence {step.index}: no score")
        outline = "outline: 2px solid #1f77b4;" if step.index == selected else ""
        parts.append(f'<span class="ts-anchor" data-sentence="{step.index}" title="{html.escape(title)}" '
                     f'style="background: {_colour(kl, top)}; border-radius: 3px; {outline}">'
                     f"{html.escape(step.text)}</span>")
        pos = step.end
    parts.append(html.escape(text[pos:]).replace("\n", "<br>"))
    return TOKEN_CSS + '<div class="ts-tokens ts-anchor-strip">' + "".join(parts) + "</div>"


def _answer_label(category) -> str:
    if category == NO_ANSWER:
        return "no answer"
    return str(category[1]) if isinstance(category, tuple) and len(category) == 2 else str(category)


def distribution_figure(before, after, labels: tuple[str, str]) -> go.Figure:
    """Answer counts before and after the sentence, side by side (categories: the union, most frequent first)."""
    counts = [dict(answer_shares(before)), dict(answer_shares(after))]
    order = list(dict.fromkeys([a for a, _ in answer_shares(after)] + [a for a, _ in answer_shares(before)]))[:20]
    fig = go.Figure([go.Bar(name=name, x=[_answer_label(a) for a in order], y=[c.get(a, 0) for a in order])
                     for name, c in zip(labels, counts)])
    fig.update_layout(barmode="group", height=280, margin=dict(l=10, r=10, t=30, b=10), yaxis_title="rollouts",
                      xaxis_title="final answer", xaxis_type="category")
    return fig


def _show_result(config, trace_id: int, text: str, result: AnchorResult) -> None:
    c1, c2 = st.columns([3, 2])
    kinds = [k for k in IMPORTANCE_KINDS if any(s.kind == k for s in result.scores)]
    kind = c1.radio("Importance", kinds, format_func=_KIND_LABELS.get, horizontal=True, key="anchor_kind")
    c2.slider("Counterfactual: different when cosine <", 0.0, 1.0, 0.8, 0.05, key="anchor_threshold")
    if not result.complete:
        st.caption("Some sentences have no rollouts yet: their scores are missing or rest on fewer samples.")
    scores = {s.index: s for s in result.scores if s.kind == kind}
    selected = st.selectbox("Sentence", [s.index for s in result.steps], key="anchor_sentence",
                            format_func=lambda i: f"{i}: {result.steps[i].text[:80]}")
    st.html(strip_html(text, result.steps, scores, selected))
    st.caption("Redder = larger KL divergence (nats, additive smoothing α = 1) between the answers with and "
               "without the sentence. Hover a sentence for its numbers.")
    if selected is not None and selected + 1 < len(result.free):
        source = result.forced if kind == "forced" and result.forced else result.free
        before = source[selected]
        if kind == "counterfactual":
            keep = [not (r.similarity >= st.session_state.get("anchor_threshold", 0.8)) for r in before]
            before = [r for r, k in zip(before, keep) if k]
        st.plotly_chart(distribution_figure(before, source[selected + 1],
                                            (f"without sentence {selected} (resampled)", f"with sentence {selected}")),
                        width="stretch", key="anchor_bars")
    _top_table(config, trace_id, result, kind)


def _labels(config, trace_id: int, step: Step) -> str:
    names = set()
    for annotation in current_annotations(config, trace_id).values():
        names.update(s.label for s in annotation.spans if s.start < step.end and step.start < s.end and s.label)
    return ", ".join(sorted(names))


def _top_table(config, trace_id: int, result: AnchorResult, kind: str) -> None:
    rows = [{"sentence": s.index, "text": result.steps[s.index].text, "kl": s.kl,
             "accuracy change": s.accuracy_change if math.isfinite(s.accuracy_change) else None,
             "rollouts": s.n_before, "review labels": _labels(config, trace_id, result.steps[s.index]) or None}
            for s in top_anchors(result.scores, kind, 5)]
    st.markdown("**Top anchors**")
    show_table(rows, (Col("sentence", "sentence", "int", width=70), Col("kl", "KL (nats)", "float4", width=90),
                      Col("accuracy change", "accuracy change", "float", width=120),
                      Col("rollouts", "rollouts (before)", "int", width=110),
                      Col("review labels", "Review labels", width="medium"), Col("text", "sentence text", "long_text")),
               key="anchor_top", empty="No sentence has a score of this kind yet.")


# --- Branch from here ---------------------------------------------------------------------------

def branch_section(config: StorageConfig, trace_id: int, record: TraceRecord) -> None:
    with st.expander("Branch from here", expanded=st.session_state.get("branch_last", (None,))[0] == trace_id
                     or JOB in st.session_state):
        steps, _ = cuts(record.thinking_text)
        if not steps:
            st.info("This trace has no thinking sentences to branch from.")
            return
        k = st.selectbox("Cut at sentence", [s.index for s in steps], key="branch_sentence",
                         format_func=lambda i: f"{i}: {steps[i].text[:80]}")
        edit = st.radio("Edit", ("replace", "delete"), horizontal=True, key="branch_edit")
        replacement = st.text_area("New sentence", steps[k].text, key=f"branch_text_{k}",
                                   height=68) if edit == "replace" else None
        c = st.columns(3)
        samples = int(c[0].number_input("Samples", 1, 16, 4, key="branch_n"))
        max_new = int(c[1].number_input("New thinking tokens per branch", 1, 4096, 256, key="branch_max"))
        name = _model_name(record, "branch")
        if name is None:
            return
        if c[2].button("Branch", key="branch_run", disabled=JOB in st.session_state) and (
                loaded := _load(name)) is not None:
            try:
                settings = BranchSettings(samples=samples, max_new_tokens=max_new)
            except ValueError as exc:
                st.error(str(exc))
                return

            def work(stop, report):
                return branch_trace(config, loaded, trace_id, k, edit, replacement, settings,
                                    lambda d, n, t: report(done=d, total=n, tokens=t, fraction=min(t / (n * max_new), 1)),
                                    stop)

            st.session_state[JOB] = (BackgroundJob(work, expected=_EXPECTED).start(), trace_id, "branch")
        entry = st.session_state.get(JOB)
        if entry is not None and entry[2] == "branch":
            st.button("Stop", key="branch_stop", on_click=stop_job, args=(JOB,))
            follow_with_bar(entry[0], lambda p: f"{p.get('tokens', 0)} tokens · {p.get('done', 0)}/{samples} done")
            st.session_state.pop(JOB, None)
            if entry[0].error is not None:
                st.error(str(entry[0].error))
            elif not entry[0].result:
                st.warning("Stopped before the branches finished: nothing was stored.")
            else:
                st.session_state["branch_last"] = (trace_id, entry[0].result)
        _side_by_side(config, trace_id, record)
        _tree(config, trace_id)


def _side_by_side(config, trace_id: int, record: TraceRecord) -> None:
    last = st.session_state.get("branch_last")
    if not last or last[0] != trace_id:
        return
    children = [(cid, cached_trace(config, cid)) for cid in last[1]]
    branch = branch_of(config, last[1][0])
    cols = st.columns(len(children) + 1)
    cols[0].markdown("**Original**")
    show_text(record.thinking_text[branch.cut_char:] + "\n\nAnswer: " + (record.answer_text or "(none)"), cols[0])
    for col, (cid, child) in zip(cols[1:], children):
        col.page_link("pages/trace.py", label=f"Trace #{cid}", query_params={"id": cid})
        if child is not None:
            r = child.record
            show_text(r.thinking_text[branch.cut_char:] + "\n\nAnswer: " + (r.answer_text or "(none)"), col)


def _tree(config, trace_id: int) -> None:
    root, branches = branch_tree(config, trace_id)
    if not branches:
        return
    st.markdown("**Branches of this trace**")
    depth = {root: 0}
    children: dict[int, list[Branch]] = {}
    for b in branches:
        children.setdefault(b.parent_trace_id, []).append(b)

    def draw(node: int) -> None:
        for b in children.get(node, []):
            depth[b.child_trace_id] = depth[node] + 1
            here = " (this trace)" if b.child_trace_id == trace_id else ""
            st.page_link("pages/trace.py", query_params={"id": b.child_trace_id},
                         label=f"{'　' * depth[node]}└ Trace #{b.child_trace_id}{here} · sentence {b.sentence_index} "
                               f"{'replaced' if b.edit == 'replace' else 'deleted'}")
            draw(b.child_trace_id)

    st.page_link("pages/trace.py", query_params={"id": root},
                 label=f"Trace #{root}" + (" (this trace)" if root == trace_id else " (root)"))
    draw(root)

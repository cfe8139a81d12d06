"""Live views and long jobs: the background job, progress that moves with tokens, escaped live text."""
import threading

from analysis.reasoning import ReasoningFormat
from analysis.records import ANSWER, THINKING, TokenStep
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.runner import PromptItem, batch_share, run_strategy
from generation.streaming import BackgroundJob, GenerationRequest, LiveGeneration
from generation.sweep import SweepSettings, run_sweep

MARKER = ReasoningFormat(kind="answer_marker")


def test_background_job_keeps_result_progress_and_errors():
    seen = threading.Event()

    def work(stop, report):
        report(done=1, total=2)
        report(fraction=0.5)
        seen.set()
        stop.wait(10)
        return "kept" if stop.is_set() else "ran out"

    job = BackgroundJob(work).start()
    assert seen.wait(10)
    assert job.progress == {"done": 1, "total": 2, "fraction": 0.5}
    assert not job.done
    job.stop()
    assert job.wait(10) and job.done and job.result == "kept" and job.error is None

    def refuse(stop, report):
        raise ValueError("a clear refusal")

    failed = BackgroundJob(refuse, expected=(ValueError,)).start()
    assert failed.wait(10)
    assert isinstance(failed.error, ValueError) and failed.result is None


def test_batch_share_follows_rows_or_tokens_and_stays_below_one():
    assert batch_share(0, 4, 0, 100) == 0.0
    assert batch_share(0, 4, 30, 100) == 0.3  # tokens lead
    assert batch_share(3, 4, 30, 100) == 0.75  # finished rows lead
    assert batch_share(4, 4, 200, 100) == 0.99  # done only when the batch returns
    assert batch_share(0, 0, 5, 0) == 0.0


def _moves_with_tokens(fractions: list[float]) -> None:
    assert fractions == sorted(fractions), "the bar never moves back"
    inside = {round(f, 6) for f in fractions if 0 < f < 1}
    assert len(inside) >= 3, f"the bar moves while the single batch decodes: {fractions}"
    assert fractions[-1] == 1.0


def test_sweep_progress_moves_with_tokens_within_one_batch(embedded, db_config):
    settings = SweepSettings("What is 2 + 6?", "8", (4, 8), samples_per_budget=2, max_answer_tokens=4)
    fractions: list[float] = []
    result = run_sweep(db_config, embedded, MARKER, settings, fraction=fractions.append)
    assert len(result.cells) == 4  # one batch of four cells
    _moves_with_tokens(fractions)


def test_strategy_progress_moves_with_tokens_within_one_prompt(embedded, db_config):
    settings = StrategySettings(sampling=SamplingConfig(0.7, 0.95, 6, 4, 0), n=2)
    fractions: list[float] = []
    run = run_strategy(db_config, embedded, "self_consistency", [PromptItem("What is 2 + 6?", "8")], MARKER,
                       settings, fraction=fractions.append)
    assert len(run.selections) == 1
    _moves_with_tokens(fractions)


def test_live_generation_exposes_its_tokens_for_a_ui_to_poll(embedded):
    request = GenerationRequest("What is 2 + 3?", SamplingConfig(0.0, 1.0, 8, 4, 0), MARKER)
    live = LiveGeneration(embedded, request).start()
    assert live.wait(120)
    record = live.finished.record
    assert [s.text for s in live.steps] == record.tokens.text
    assert live.started is not None
    if record.n_answer_tokens:
        assert 0 < live.answer_started_s <= record.latency_s


def _step(i: int, text: str, phase: int) -> TokenStep:
    return TokenStep(i, i, text, -0.5, 1.0, (1,), ("<b>alt</b>",), (-1.0,), phase)


def test_live_pieces_are_escaped_with_and_without_colour():
    from ui.live import _pieces_html

    steps = [_step(0, "<script>alert(1)</script>", THINKING), _step(1, ' <img src=x onerror="boom()">', ANSWER)]
    for colour in (False, True):
        out = _pieces_html(steps, 10, colour)
        assert "<script>" not in out and "<img" not in out and "<b>alt" not in out
        assert "&lt;script&gt;" in out and "&lt;img" in out
    coloured = _pieces_html(steps, 10, True)
    assert coloured.count("<span") == 2 and 'title="#10' in coloured  # numbered as in the whole trace

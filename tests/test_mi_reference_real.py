"""The MI reference on the real embedded model: different answers give different curves (docs/METHODS.md §1).

A one-token reference encoded alone sits at position 0, an attention sink whose state barely depends on
its token: the curves for "7" and "8" then correlate ~0.9996 (issue 10). The analysis puts the reference
after the first prompt token instead, as the authors' tokenizer.encode puts it after BOS.
"""
import generation  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

import numpy as np
import pytest

from analysis.mutual_information import mi_curve
from analysis.trace_signals import AnalysisSettings
from generation.analyze import analyze_trace, forced_input, reference_input
from generation.hidden_states import reference_state, teacher_forced_states


@pytest.fixture(scope="module")
def trace(embedded):
    from generation.decoding import SamplingConfig
    from generation.prompting import detect_format
    from generation.streaming import GenerationRequest, generate

    request = GenerationRequest("What is 3 + 4?", SamplingConfig(0.0, 1.0, 64, 8, 0), detect_format(embedded.tokenizer), "7")
    record = generate(embedded, request).record
    assert len(record.tokens) >= 40
    return record


def _pearson(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_two_different_answers_give_different_curves(embedded, trace):
    curves = {answer: analyze_trace(embedded, trace, AnalysisSettings(
        reference="typed", typed_reference=answer, lens_dtype="float32")) for answer in ("7", "8")}
    assert all(a.reference_text == answer for answer, a in curves.items())
    r = _pearson(curves["7"].tokens.mi, curves["8"].tokens.mi)
    assert r < 0.95, r


def test_the_sink_position_would_not_tell_them_apart(embedded, trace):
    """The same check with the old representation fails, so the test above can fail."""
    tok, model = embedded.tokenizer, embedded.model
    inputs = forced_input(embedded, trace)
    h_td = teacher_forced_states(model, inputs.prompt_ids, inputs.token_ids).block_output(-1)

    def curve(answer: str, context: bool):
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1  # a one-token answer: alone, it would sit at position 0
        return mi_curve(h_td, reference_state(model, reference_input(inputs.prompt_ids, ids) if context else ids))

    assert _pearson(curve("7", context=False), curve("8", context=False)) > 0.99
    assert _pearson(curve("7", context=True), curve("8", context=True)) < 0.95
    # And the analysis itself uses the representation with context.
    analysed = analyze_trace(embedded, trace, AnalysisSettings(reference="typed", typed_reference="7", lens_dtype="float32"))
    np.testing.assert_allclose(analysed.tokens.mi, curve("7", context=True), rtol=1e-9, atol=1e-9)


def test_reference_input_starts_like_the_prompt():
    assert reference_input([1, 5, 6], [39]) == [1, 39]
    with pytest.raises(ValueError, match="no tokens"):
        reference_input([1, 5, 6], [])

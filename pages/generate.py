"""Generate: type a prompt, watch the model think live, and keep the trace."""
import streamlit as st

from generation.models import LoadedModel
from generation.streaming import GenerationRequest, LiveGeneration
from storage.traces import save_or_queue
from ui.live import backend_notes, draw_record, stream_to_page
from ui.resources import storage_config
from ui.results import show_finished
from ui.signal_view import live_analysis, show_analysis
from ui.widgets import model_and_format, sampling_settings

LIVE = "live_generation"  # the generation outlives the script run that started it (see ui/live.py)


def _stop() -> None:
    # A callback runs before the rerun it causes: the worker stops at its next token, and the rerun
    # below waits for the partial trace to be stored and shows it.
    if (live := st.session_state.get(LIVE)) is not None:
        live.stop()


st.title("Generate")
loaded, fmt = model_and_format()
sampling = sampling_settings()
prompt = st.text_area("Prompt", key="prompt", placeholder="What is 17 + 26?", height=100)
reference = st.text_input("Reference answer (optional, used to grade the answer)", key="reference")

go_col, stop_col, colour_col = st.columns([1, 1, 6], vertical_alignment="center")
go = go_col.button("Generate", type="primary", disabled=fmt is None or sampling is None)
stop_col.button("Stop", key="gen_stop", on_click=_stop)
colour = colour_col.toggle("Colour tokens by log-probability", key="gen_colour",
                           help="Red tokens were unlikely under the model (log p near -6); clear ones were sure.")

if go:
    if not prompt.strip():
        st.error("The prompt is empty: type a question first.")
        st.stop()
    if (previous := st.session_state.get(LIVE)) is not None:
        previous.stop()
        previous.wait(30)
    request = GenerationRequest(prompt.strip(), sampling, fmt, reference.strip() or None)
    config = storage_config()
    st.session_state[LIVE] = LiveGeneration(loaded, request, on_finish=lambda record: save_or_queue(config, record))
    st.session_state[LIVE].start()
    st.session_state.pop("last_analysis", None)

if (live := st.session_state.get(LIVE)) is not None:
    if live.finished is None:  # running, or stopping: follow it to its end
        finished = stream_to_page(live, colour)
    else:
        finished = live.finished
        draw_record(finished.record, live.answer_started_s, colour)
        backend_notes(finished.record.meta)
    show_finished(finished)
    # Analysed once per generation; not after a Stop (the user asked for less work, not more).
    # A server's model may not exist here (or be huge): its traces are re-scored on the Trace page.
    done = st.session_state.get("last_analysis")
    if done is not None and done[0] is live:
        if done[1] is not None:
            show_analysis(done[1], key="live", full=False)
    elif finished is not None and finished.record.stop_reason != "stopped" and isinstance(loaded, LoadedModel):
        st.session_state["last_analysis"] = (live, live_analysis(storage_config(), finished))

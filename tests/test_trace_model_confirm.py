"""The Trace page never loads (or downloads) a model named only by the trace's data: it asks first."""
import generation  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.testing import make_record
from storage.traces import save_trace

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_db(app_db):
    return dataclasses.replace(app_db, seed_path=None)


def test_a_model_named_by_an_imported_trace_needs_a_confirmation(app_db, monkeypatch):
    import ui.resources

    loads = []
    real_load = ui.resources.load_model
    monkeypatch.setattr(ui.resources, "load_model", lambda spec: loads.append(spec.name) or real_load(spec))
    trace_id = save_trace(app_db, make_record(model="deepseek-ai/DeepSeek-V3", stop_reason="imported"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["id"] = str(trace_id)
    at.run()
    at.switch_page("pages/trace.py").run()
    assert not at.exception, at.exception
    assert any("names the model 'deepseek-ai/DeepSeek-V3'" in w.value and "download" in w.value for w in at.warning)
    assert at.button(key="an_run").disabled  # AppTest, like a browser, cannot click it
    assert "deepseek-ai/DeepSeek-V3" not in loads
    # A model the user types is theirs to load: no question asked.
    at.text_input(key="an_model").input("my/own-model").run()
    assert not at.warning and not at.button(key="an_run").disabled
    at.text_input(key="an_model").input("deepseek-ai/DeepSeek-V3").run()
    at.checkbox(key="an_confirm").check().run()
    assert not at.button(key="an_run").disabled

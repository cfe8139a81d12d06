"""What the CLI says when things go wrong: one clear line (tracebacks in the log file, or with
--verbose), the id of the trace that was kept, analyse errors per trace with a summary, no model
loaded on the word of a trace's data, and no DuckDB extension fetched for a foreign file."""
from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

import cli
from storage.connection import connect
from storage.testing import make_record
from storage.traces import get_trace, save_trace
from test_openai_backend import FakeServer, chunk

EMBEDDED = "embedded:SmolLM2-135M-Instruct"


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    """The CLI's log file goes under THINKSCOPE_CACHE; a fresh one per test."""
    monkeypatch.setenv("THINKSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "logs"


def _generate(db_config, server, before=(), after=()):
    return cli.main(["--db", str(db_config.db_path), *before, "generate", "--prompt", "What is 2 + 3?",
                     "--backend", "openai", "--base-url", server.url, *after])


def test_a_remote_failure_prints_one_line_keeps_the_traceback_in_the_log_and_names_the_stored_trace(
        server, db_config, log_dir, capsys):
    server.script = lambda h, body: h.sse([chunk("<think>Let"), chunk(" me")], done=False)
    assert _generate(db_config, server) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert "error: RemoteError: the server closed the stream after 2 tokens" in err
    assert f"traceback in {log_dir / 'cli.log'}" in err  # says where the traceback went
    assert "Traceback" in (log_dir / "cli.log").read_text()
    stored = [line for line in out.splitlines() if line.startswith("stored as trace")]
    assert stored, out
    trace_id = int(stored[0].split()[3])
    record = get_trace(db_config, trace_id).record
    assert record.stop_reason == "error" and record.thinking_text == "Let me"


def test_verbose_prints_the_traceback(server, db_config, log_dir, capsys):
    server.script = lambda h, body: h.sse([chunk("<think>Let")], done=False)
    assert _generate(db_config, server, before=["--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert _generate(db_config, server, after=["-v"]) == 1  # also after the command
    assert "Traceback" in capsys.readouterr().err


def test_stall_timeout_flag_stores_what_arrived(server, db_config, log_dir, capsys):
    def lines():
        yield f"data: {json.dumps(chunk('<think>Hmm'))}\n\n".encode()
        for _ in range(1500):  # keep-alive comments, bounded; ends when the client leaves
            if server.release.wait(0.02):
                return
            yield b": ping\n\n"

    server.script = lambda h, body: h.stream_lines(lines())
    assert _generate(db_config, server, after=["--stall-timeout", "0.6"]) == 1
    out, err = capsys.readouterr()
    assert "no new token for 0.6 s (stall timeout)" in err and "Traceback" not in err
    trace_id = int(next(line for line in out.splitlines() if line.startswith("stored as trace")).split()[3])
    assert get_trace(db_config, trace_id).record.meta["timeout"] == "stall"
    assert _generate(db_config, server, after=["--stall-timeout", "-1"]) == 2
    assert "stall_timeout_s must be a positive" in capsys.readouterr().err


def test_an_unexpected_failure_is_one_line_and_logged(db_config, log_dir, capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("a defect")

    monkeypatch.setattr(cli, "cmd_export", broken)
    assert cli.main(["--db", str(db_config.db_path), "export", "x.jsonl"]) == 1
    err = capsys.readouterr().err
    assert "export failed: unexpected RuntimeError: a defect" in err and "Traceback" not in err
    assert "RuntimeError: a defect" in (log_dir / "cli.log").read_text()
    with pytest.raises(RuntimeError):
        cli.main(["--db", str(db_config.db_path), "--verbose", "export", "x.jsonl"])


def test_a_sqlite_file_as_database_fails_clearly_without_fetching_an_extension(tmp_path, log_dir, capsys):
    path = tmp_path / "looks.duckdb"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    assert cli.main(["--db", str(path), "export", str(tmp_path / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "is not a DuckDB database" in err and "download" not in err.lower()
    from storage.connection import _host_connection

    settings = _host_connection().execute("SELECT current_setting('autoload_known_extensions'), "
                                          "current_setting('autoinstall_known_extensions')").fetchone()
    assert settings == (False, False)


# -- analyze: per-trace errors, and no model named only by the data -------------------------------

def _analysed(db_config) -> list[int]:
    with connect(db_config, read_only=True) as con:
        return [r[0] for r in con.execute("SELECT DISTINCT trace_id FROM analyses").fetchall()]


def _corrupt(db_config, trace_id: int, sql: str) -> None:
    """What an older database (before import validation) or a crafted file could hold."""
    with connect(db_config) as con:
        con.execute(sql, [trace_id])


@pytest.mark.model
def test_analyze_reports_each_bad_trace_and_goes_on(db_config, embedded, capsys, monkeypatch):
    import generation.analyze as analyze

    loads = []
    real_load = analyze.load_model
    monkeypatch.setattr(analyze, "load_model", lambda spec: loads.append(spec.name) or real_load(spec))
    base = make_record(model=EMBEDDED, n_tokens=6)  # synthetic ids, all inside the model's vocabulary
    good = save_trace(db_config, base)
    bad_format = save_trace(db_config, dataclasses.replace(base, prompt="Bad format?"))
    _corrupt(db_config, bad_format, """UPDATE traces SET settings = '{"format": {"kind": "think_tags", "colour": "red"}}'
                                       WHERE trace_id = ?""")
    huge_id = save_trace(db_config, dataclasses.replace(base, prompt="Huge id?"))
    _corrupt(db_config, huge_id, "UPDATE tokens SET token_id = 1000000000000 WHERE trace_id = ?")
    foreign = save_trace(db_config, dataclasses.replace(base, model="deepseek-ai/DeepSeek-V3", prompt="Foreign?"))
    assert get_trace(db_config, huge_id).record.tokens.token_id.max() == 10**12

    assert cli.main(["--db", str(db_config.db_path), "analyze"]) == 1
    out, err = capsys.readouterr()
    assert f"trace {bad_format}: not analysed: settings.format of this trace is not a usable reasoning format" in err
    assert f"trace {foreign}: not analysed: This trace names the model 'deepseek-ai/DeepSeek-V3'" in err
    assert "--use-trace-model" in err and "Traceback" not in err
    # The huge ids are not this model's: re-encoded from the text, analysed like an imported trace.
    assert f"analysed 2 of 4 traces into {db_config.db_path}; 2 not analysed (traces {bad_format}, {foreign}" in out
    assert "deepseek-ai/DeepSeek-V3" not in loads  # never loaded, never downloaded
    assert loads == [EMBEDDED]
    assert {good, huge_id} <= set(_analysed(db_config))

    # With the explicit flag the trace's model is loaded (here it fails, as offline), still per trace.
    monkeypatch.setattr(analyze, "load_model", lambda spec: loads.append(spec.name) or (_ for _ in ()).throw(
        analyze.ModelLoadError("not in the cache")))
    assert cli.main(["--db", str(db_config.db_path), "analyze", "--trace", str(foreign), "--use-trace-model"]) == 1
    assert loads[-1] == "deepseek-ai/DeepSeek-V3" and "not in the cache" in capsys.readouterr().err


def test_the_model_rule():
    from generation.analyze import choose_analysis_model

    assert choose_analysis_model("deepseek-ai/DeepSeek-V3").needs_confirmation
    assert choose_analysis_model("/some/dir").needs_confirmation
    assert not choose_analysis_model(EMBEDDED).needs_confirmation
    assert choose_analysis_model("deepseek-ai/DeepSeek-V3", chosen=" my/model ").name == "my/model"
    assert not choose_analysis_model("deepseek-ai/DeepSeek-V3", use_trace_model=True).needs_confirmation
    assert choose_analysis_model("").needs_confirmation and choose_analysis_model("").name == ""


@pytest.mark.model
def test_analyze_trace_itself_survives_bad_ids_and_refuses_a_bad_format_clearly(embedded):
    from analysis.trace_signals import AnalysisSettings
    from generation.analyze import TraceDataError, analyze_trace

    record = make_record(model=EMBEDDED, n_tokens=6)
    record = dataclasses.replace(record, tokens=dataclasses.replace(record.tokens,
                                                                    token_id=record.tokens.token_id * 0 + 10**12))
    analysis = analyze_trace(embedded, record, AnalysisSettings(lens_dtype="float32"))
    assert analysis.retokenized and len(analysis.tokens) > 0
    bad = dataclasses.replace(record, settings={"format": {"kind": "think_tags", "colour": "red"}})
    with pytest.raises(TraceDataError, match="not a usable reasoning format"):
        analyze_trace(embedded, bad)

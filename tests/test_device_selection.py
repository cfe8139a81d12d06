"""Device and dtype choice (generation/models.py), and every generation tensor on the model's device."""
from __future__ import annotations

import sys
import threading

import pytest
import torch

from generation.models import (
    LoadedModel, ModelLoadError, ModelSpec, load_model, needs_device_map, resolve_device, resolve_dtype, weight_bytes,
)
from tests.tiny_models import byte_tokenizer, tiny_llama


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as if it had no GPU at all, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_spec_validates_device_and_dtype():
    assert ModelSpec().device == "auto" and ModelSpec().dtype == "auto"
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert ModelSpec(device=ok).device == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", "cuda:0 "):
        with pytest.raises(ValueError, match="device must be"):
            ModelSpec(device=bad)
    with pytest.raises(ValueError, match="dtype must be"):
        ModelSpec(dtype="fp8")


def test_cpu_explicitly_and_auto_without_gpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("bfloat16", torch.device("cpu")) == "bfloat16"  # an explicit choice is kept


def test_auto_prefers_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ModelLoadError, match="cuda:2 requested but this machine has 2 CUDA device"):
        resolve_device("cuda:2")
    for major, expected in ((9, "bfloat16"), (8, "bfloat16"), (7, "float16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, m=major: (m, 0))
        assert resolve_dtype("auto", torch.device("cuda", 0)) == expected


def test_a_missing_device_is_a_clear_error(no_gpu):
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ModelLoadError, match=r"requested but torch\.cuda\.is_available\(\) is False"):
            resolve_device(device)
    with pytest.raises(ModelLoadError, match=r"mps requested but torch\.backends\.mps\.is_available\(\) is False"):
        resolve_device("mps")
    # load_model refuses before it converts or loads anything (the spec names the embedded model).
    with pytest.raises(ModelLoadError, match="cuda requested"):
        load_model(ModelSpec(device="cuda"))


def test_cli_reports_a_missing_device(no_gpu, tmp_path, capsys):
    import cli

    code = cli.main(["--db", str(tmp_path / "t.duckdb"), "generate", "--prompt", "1+1?", "--device", "cuda"])
    assert code == cli.EXIT_USAGE
    assert "cuda requested but torch.cuda.is_available() is False" in capsys.readouterr().err


@pytest.mark.parametrize("tie", [True, False])
def test_weight_bytes_counts_real_parameters(tie):
    config, model = tiny_llama(tie)
    # Slow reference: the real model's distinct storages.
    real = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    assert weight_bytes(config, "float32") == real * 4
    assert weight_bytes(config, "bfloat16") == real * 2


def test_device_map_only_when_one_gpu_is_too_small():
    gib = 1 << 30
    assert not needs_device_map(int(1.2 * gib), 141 * gib)  # Qwen3-0.6B on an H200
    assert needs_device_map(140 * gib, 141 * gib)  # a 70B model in bf16
    assert needs_device_map(16 * gib, 16 * gib)  # no room left for the KV cache


class _FactoryLog:
    """Stands in for `torch` inside generation/ modules: records the device each new tensor asks for."""

    FACTORIES = ("tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "Generator",
                 "zeros_like", "ones_like", "full_like", "randn", "rand", "randint")

    def __init__(self):
        self.devices: list[tuple[str, object]] = []

    def __getattr__(self, name):
        real = getattr(torch, name)
        if name not in self.FACTORIES:
            return real

        def made(*args, **kwargs):
            # *_like factories inherit their input's device when none is given.
            like = name.endswith("_like") and isinstance(args[0], torch.Tensor)
            device = kwargs.get("device", args[0].device if like else None)
            self.devices.append((name, None if device is None else torch.device(device)))
            return real(*args, **kwargs)

        return made


@pytest.fixture
def factory_log(monkeypatch):
    import generation.batch, generation.decoding, generation.streaming  # noqa: E401,F401  (so they are patched)

    log = _FactoryLog()
    for name, module in list(sys.modules.items()):
        if name.startswith("generation") and getattr(module, "torch", None) is torch:
            monkeypatch.setattr(module, "torch", log)
    return log


def _loaded() -> LoadedModel:
    _, model = tiny_llama(tie=True)
    tok = byte_tokenizer()
    model.generation_config.eos_token_id = tok.eos_token_id
    return LoadedModel(ModelSpec(device="cpu", dtype="float32"), model, tok, 0.0, "random weights", "cpu")


def _assert_on_model_device(log: _FactoryLog, device: torch.device):
    assert log.devices, "no tensor was created through generation/'s torch: the check saw nothing"
    off = [(name, d) for name, d in log.devices if d != device]
    assert not off, f"tensors created without the model's device ({device}): {off}"


def test_single_stream_decode_creates_tensors_on_the_model_device(factory_log):
    from analysis.reasoning import ReasoningFormat
    from generation.decoding import DecodeOutcome, SamplingConfig, decode

    loaded = _loaded()
    fmt = ReasoningFormat("answer_marker")
    cfg = SamplingConfig(0.7, 0.9, 4, 3, 1)  # a budget of 4 thinking tokens: forced text is injected too
    ids = loaded.tokenizer("Question: 1+1?\n")["input_ids"]
    steps = list(decode(loaded.model, loaded.tokenizer, ids, cfg, fmt, threading.Event(), DecodeOutcome(),
                        ignore_eos=True))
    assert len(steps) > 4
    _assert_on_model_device(factory_log, loaded.model.device)
    assert any(name == "Generator" for name, _ in factory_log.devices)


def test_batched_decode_creates_tensors_on_the_model_device(factory_log):
    from analysis.reasoning import ReasoningFormat
    from generation.batch import BatchRow, BatchSettings, generate_batch
    from generation.decoding import SamplingConfig

    loaded = _loaded()
    settings = BatchSettings(SamplingConfig(0.7, 0.9, 4, 3, 1), ignore_eos=True)
    rows = [BatchRow("1+1?"), BatchRow("1+1?"), BatchRow("2+3, then more?", max_thinking_tokens=2)]
    records = generate_batch(loaded, rows, ReasoningFormat("answer_marker"), settings)
    assert len(records) == 3 and all(len(r.tokens) > 0 for r in records)
    _assert_on_model_device(factory_log, loaded.model.device)


def test_the_factory_check_can_fail(factory_log):
    """The check above really sees a tensor made without device=."""
    import generation.decoding as decoding

    decoding.torch.zeros(2)
    with pytest.raises(AssertionError, match="without the model's device"):
        _assert_on_model_device(factory_log, torch.device("cpu"))


def test_placement_spreads_only_what_does_not_fit(tmp_path, monkeypatch):
    """from_pretrained gets device_map="cuda:0" for a model that fits one GPU, "auto" for one that does not."""
    from types import SimpleNamespace

    from generation.models import _placement

    config, _ = tiny_llama(tie=False)
    config.save_pretrained(tmp_path)
    n_bytes = weight_bytes(config, "bfloat16")
    spec = ModelSpec(str(tmp_path), device="cuda:0", dtype="bfloat16")
    for memory, expected in ((100 * n_bytes, "cuda:0"), (n_bytes, "auto")):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, m=memory: SimpleNamespace(total_memory=m))
        assert _placement(spec, str(tmp_path), True, torch.device("cuda", 0), "bfloat16") == {"device_map": expected}
    assert _placement(spec, str(tmp_path), True, torch.device("cpu"), "float32") == {}  # the plain CPU load

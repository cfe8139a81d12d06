"""Per-token signal table and per-trace summary of one analysed trace (docs/METHODS.md §1, §2, §4).

Pure: takes the MI curve, the logit-lens JSD matrix and the final-layer token statistics that
generation/analyze.py computed, and applies the peak rule, settling depth, DTR and the DeepConf
scores. Nothing here touches a model, a database or Streamlit.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.confidence import ConfidenceSettings, TokenStats, trace_confidence, trace_self_certainty
from analysis.logit_lens import DTRSettings, deep_band_start, deep_thinking_mask, settling_depth
from analysis.mutual_information import MISettings, mi_peaks

# Where h_y comes from; the UI names the one in use (docs/METHODS.md §1, "No reference answer").
REFERENCE_KINDS = {
    "stored": "the prompt's stored reference answer",
    "typed": "a reference typed by the user",
    "self": "the model's own final answer (self-referenced MI)",
}
LENS_DTYPES = ("auto", "float32", "bfloat16")
# With a bfloat16 lens, every JSD within this many nats of g is recomputed in float32. The settling
# depth and DTR are then the float32 ones provided no other entry errs by more than this: sampled,
# not certified (docs/METHODS.md §2); the worst error measured on real traces is 5x smaller (0.0096 nats).
LENS_EXACT_BAND_NATS = 0.05
# Tokens listed as "most informative" when no token passes the IQR peak rule (docs/METHODS.md §1).
TOP_INFORMATIVE_K = 10


class MissingReferenceError(ValueError):
    """The chosen reference kind has no text for this trace."""


# How h_y is read (docs/METHODS.md §1): at the last reference token, after the first prompt token.
MI_REFERENCE_ENCODING = "after-first-token"


@dataclass(frozen=True)
class AnalysisSettings:
    """Every parameter that changes an analysis result; `key` identifies it in storage.

    layer: decoder block whose output feeds MI, 1-based; -1 = the last block (the card's choice).
    lens_dtype: the logit-lens unembedding product. float32: exact everywhere. bfloat16: bf16 inputs
        with float32 output (fast on CUDA GPUs; same numbers at float32 speed elsewhere); divergences
        within LENS_EXACT_BAND_NATS of g are recomputed in float32 and random others spot-checked, so
        depths and DTR are the float32 ones unless an unchecked entry erred by more than the band
        (sampled, not certified: docs/METHODS.md §2); the heatmap carries the bf16 rounding. auto:
        bfloat16 on CUDA GPUs with bf16, else float32.
    """

    sigma: float = 50.0
    eps: float = 1e-5
    layer: int = -1
    tau: float = 1.5
    g: float = 0.5
    rho: float = 0.85
    k: int = 20
    window: int = 2048
    reference: str = "stored"
    typed_reference: str | None = None
    lens_dtype: str = "auto"

    def __post_init__(self) -> None:
        # Reuse the validating constructors of the math modules so the rules live in one place.
        self.mi_settings()
        self.dtr_settings()
        self.confidence_settings()
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or (self.layer != -1 and self.layer < 1):
            raise ValueError(f"AnalysisSettings.layer must be -1 (last block) or a 1-based layer, got {self.layer!r}")
        if self.reference not in REFERENCE_KINDS:
            raise ValueError(f"AnalysisSettings.reference must be one of {tuple(REFERENCE_KINDS)}, got {self.reference!r}")
        if self.reference == "typed" and not (self.typed_reference or "").strip():
            raise MissingReferenceError("Type a reference answer, or choose another reference.")
        if self.reference != "typed" and self.typed_reference is not None:
            raise ValueError("typed_reference is only used with reference='typed'")
        if self.lens_dtype not in LENS_DTYPES:
            raise ValueError(f"AnalysisSettings.lens_dtype must be one of {LENS_DTYPES}, got {self.lens_dtype!r}")

    def mi_settings(self) -> MISettings:
        return MISettings(sigma=float(self.sigma), eps=float(self.eps), peak_tau=float(self.tau))

    def dtr_settings(self) -> DTRSettings:
        return DTRSettings(g=float(self.g), rho=float(self.rho))

    def confidence_settings(self) -> ConfidenceSettings:
        return ConfidenceSettings(k=self.k, window=self.window)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Stable across processes and versions of Python: sha256 of the canonical JSON, 16 hex digits."""
        # The reference encoding is part of the key, not a setting: analyses stored before it
        # changed (docs/METHODS.md §1) no longer match and are recomputed on request.
        keyed = {**self.to_dict(), "mi_reference_encoding": MI_REFERENCE_ENCODING}
        canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def resolve_reference(kind: str, stored_answer: str | None, own_answer: str | None, typed: str | None = None) -> str:
    """The reference text for `kind`, or MissingReferenceError saying what to do instead."""
    text = {"stored": stored_answer, "self": own_answer, "typed": typed}.get(kind)
    if text is None and kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference kind {kind!r}")
    if not (text or "").strip():
        advice = {
            "stored": "This trace's prompt has no stored reference answer. Type one, or use the model's own answer.",
            "self": "The model gave no final answer to reference. Type a reference answer instead.",
            "typed": "Type a reference answer, or choose another reference.",
        }[kind]
        raise MissingReferenceError(advice)
    return text.strip()


@dataclass(frozen=True)
class TokenSignals:
    """Per analysed token, all [T]; jsd_lt is [L, T] in nats (row L is 0)."""

    text: list[str]
    token_id: np.ndarray  # int64
    phase: np.ndarray  # int8, THINKING / ANSWER
    mi: np.ndarray  # float64
    is_peak: np.ndarray  # bool
    settling_depth: np.ndarray  # int64, 1..L
    is_deep: np.ndarray  # bool
    entropy: np.ndarray  # float64, nats
    logprob: np.ndarray  # float64, log p(token) under the analysing model
    self_certainty: np.ndarray  # float64, nats
    confidence: np.ndarray  # float64, DeepConf C_t
    jsd_lt: np.ndarray  # float64 [L, T]

    def __len__(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class TraceSummary:
    n_tokens: int
    n_layers: int
    deep_band_start: int  # first deep layer, 1-based
    mi_threshold: float  # Q3 + tau * IQR
    n_peaks: int
    peak_ratio: float
    mean_mi: float
    dtr: float
    self_certainty: float
    lowest_group_confidence: float
    tail_confidence: float
    mean_entropy: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TraceAnalysis:
    """One trace analysed by one model under one AnalysisSettings."""

    analysis_model: str
    settings: AnalysisSettings
    reference_kind: str
    reference_text: str
    tokens: TokenSignals
    summary: TraceSummary
    retokenized: bool = False  # token ids came from re-encoding the text, not from the trace
    notes: list[str] = field(default_factory=list)  # caveats the UI shows next to the results
    elapsed_s: float = 0.0


def summarise_signals(
    mi_t,
    jsd_lt,
    stats: TokenStats,
    logprob_t,
    text: list[str],
    token_id,
    phase,
    settings: AnalysisSettings,
) -> tuple[TokenSignals, TraceSummary]:
    """Peaks, settling depth, deep mask and the per-trace scores from the raw signals."""
    mi = np.asarray(mi_t, dtype=np.float64)
    jsd = np.asarray(jsd_lt, dtype=np.float64)
    n_t = mi.shape[0]
    if jsd.ndim != 2 or jsd.shape[1] != n_t:
        raise ValueError(f"jsd_lt must be [L, {n_t}], got {jsd.shape}")
    for name, arr in (("entropy", stats.entropy), ("logprob", logprob_t), ("text", text), ("phase", phase)):
        if len(arr) != n_t:
            raise ValueError(f"{name} has {len(arr)} rows, the MI curve has {n_t}")
    n_layers = jsd.shape[0]
    peaks, threshold = mi_peaks(mi, settings.tau)
    depth = settling_depth(jsd, settings.g) if n_t else np.empty(0, np.int64)
    deep = deep_thinking_mask(depth, n_layers, settings.rho)
    conf = trace_confidence(stats.confidence, settings.confidence_settings())
    tokens = TokenSignals(
        text=list(text),
        token_id=np.asarray(token_id, dtype=np.int64),
        phase=np.asarray(phase, dtype=np.int8),
        mi=mi,
        is_peak=peaks,
        settling_depth=depth,
        is_deep=deep,
        entropy=np.asarray(stats.entropy, dtype=np.float64),
        logprob=np.asarray(logprob_t, dtype=np.float64),
        self_certainty=np.asarray(stats.self_certainty, dtype=np.float64),
        confidence=np.asarray(stats.confidence, dtype=np.float64),
        jsd_lt=jsd,
    )
    nan = float("nan")
    summary = TraceSummary(
        n_tokens=n_t,
        n_layers=n_layers,
        deep_band_start=deep_band_start(n_layers, settings.rho),
        mi_threshold=threshold,
        n_peaks=int(peaks.sum()),
        peak_ratio=float(peaks.mean()) if n_t else nan,
        mean_mi=float(np.nanmean(mi)) if n_t else nan,
        dtr=float(deep.mean()) if n_t else nan,
        self_certainty=trace_self_certainty(stats.self_certainty),
        lowest_group_confidence=conf.lowest_group,
        tail_confidence=conf.tail,
        mean_entropy=float(np.mean(stats.entropy)) if n_t else nan,
    )
    return tokens, summary


def top_informative(mi_t, k: int = TOP_INFORMATIVE_K) -> np.ndarray:
    """Positions of the k largest finite m_t, largest first (ties: earlier first): int64 [<= k].

    The alternative view when the IQR rule finds no peak (docs/METHODS.md §1): a ranking, not a test.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    m = np.asarray(mi_t, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(m))
    order = finite[np.argsort(-m[finite], kind="stable")]
    return order[:k].astype(np.int64)


def finite_or_none(value: float) -> float | None:
    """NaN/inf as None, for JSON and SQL NULL."""
    return float(value) if value is not None and math.isfinite(value) else None

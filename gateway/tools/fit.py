"""Pre-flight for a new local model: will it fit the memory it is given?

A model's memory is three parts, each shown with the numbers behind it:

- weights: parameters × bits per weight ÷ 8 (from a GGUF: the tensors' exact sizes; from Ollama:
  the parameter count × the quantization's nominal bits per weight);
- KV cache: 2 (keys and values) × layers × KV heads × head size × context × parallel slots ×
  bytes per element (f16: 2);
- compute buffer: llama.cpp reserves the worst case of one micro-batch — its logits
  (micro-batch × vocabulary × 4 bytes) plus attention scratch, estimated as micro-batch ×
  context × 16 bytes.

Weights and KV cache match what llama.cpp reports when it loads the model; the compute buffer's
logits part matches too, its attention part is an estimate and says so. Memory-mapped weights
and reserved buffers count in full even where the operating system has not touched every page
yet: the total is what the model may come to use, not what it uses the first second.
Sliding-window attention (Gemma 3's local layers) is sized at full context, as
llama-cpp-python allocates it ("full-size SWA cache").
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB

# Bytes per element of the KV cache by llama.cpp cache type (q8_0: 34 bytes per 32 values).
KV_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

DEFAULT_UBATCH = 512  # llama.cpp's micro-batch (n_ubatch) default
ATTENTION_SCRATCH_BYTES = 16  # per micro-batch token and context position (estimate)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What sizing needs to know about a model (read from a GGUF or from Ollama)."""

    name: str
    architecture: str
    parameters: int
    weight_bytes: int
    weights_exact: bool  # True: summed from the file's tensors; False: parameters × nominal bpw
    quantization: str
    layers: int
    kv_heads: int
    key_size: int  # per head
    value_size: int  # per head
    context_train: int
    vocab: int
    digest: str | None = None  # sha256 of the GGUF file, or Ollama's digest

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weight_bytes / self.parameters if self.parameters else 0.0


@dataclass(frozen=True, slots=True)
class FitRequest:
    memory_bytes: int
    context: int
    parallel: int = 1
    kv_type: str = "f16"
    ubatch: int = DEFAULT_UBATCH


@dataclass(frozen=True, slots=True)
class FitReport:
    shape: ModelShape
    request: FitRequest
    weights: int
    kv_cache: int
    logits: int  # compute buffer: one micro-batch's logits
    attention: int  # compute buffer: attention scratch (estimate)

    @property
    def compute(self) -> int:
        return self.logits + self.attention

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def fits(self) -> bool:
        return self.total <= self.request.memory_bytes

    @property
    def kv_per_token(self) -> float:
        """KV cache bytes one token takes in one slot."""
        s = self.shape
        return s.layers * s.kv_heads * (s.key_size + s.value_size) * KV_BYTES[self.request.kv_type]

    def max_context(self) -> int:
        """The longest context (per slot) that still fits, 0 if even the weights do not."""
        room = self.request.memory_bytes - self.weights - self.logits
        per_token = (
            self.kv_per_token * self.request.parallel
            + self.request.ubatch * ATTENTION_SCRATCH_BYTES
        )
        return max(0, int(room / per_token))


def estimate(shape: ModelShape, request: FitRequest) -> FitReport:
    """Size a model for a context, a number of parallel slots and a KV cache type."""
    if request.kv_type not in KV_BYTES:
        raise ValueError(f"unknown KV cache type {request.kv_type!r}: use one of {list(KV_BYTES)}")
    kv = int(
        shape.layers
        * shape.kv_heads
        * (shape.key_size + shape.value_size)
        * request.context
        * request.parallel
        * KV_BYTES[request.kv_type]
    )
    ubatch = min(request.ubatch, request.context)
    return FitReport(
        shape=shape,
        request=request,
        weights=shape.weight_bytes,
        kv_cache=kv,
        logits=ubatch * shape.vocab * 4,
        attention=ubatch * request.context * ATTENTION_SCRATCH_BYTES,
    )


def human(n: float) -> str:
    """Bytes as MiB or GiB, with the exact count kept by callers that need it."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def render(report: FitReport) -> str:
    """The report an operator reads: every figure with the numbers that made it."""
    s, r = report.shape, report.request
    kv_b = KV_BYTES[r.kv_type]
    verdict = "FITS" if report.fits else "DOES NOT FIT"
    ubatch = min(r.ubatch, r.context)
    if s.key_size == s.value_size:
        heads, size = "2 (K,V)", f"{s.key_size} head size"
    else:
        heads, size = "1", f"({s.key_size} key + {s.value_size} value) head size"
    lines = [
        f"model        {s.name} ({s.architecture}, {s.quantization})",
        *([f"pin          {s.digest}"] if s.digest else []),
        f"weights      {human(report.weights):>11}  = {s.parameters:,} parameters × "
        f"{s.bits_per_weight:.2f} bits per weight ÷ 8"
        + ("" if s.weights_exact else "  (nominal bits for the quantization: an estimate)"),
        f"KV cache     {human(report.kv_cache):>11}  = {heads} × {s.layers} layers × "
        f"{s.kv_heads} KV heads × {size} × {r.context:,} context × "
        f"{r.parallel} slot{'s' if r.parallel != 1 else ''} × {kv_b:g} bytes ({r.kv_type})",
        f"compute      {human(report.compute):>11}  = {ubatch} micro-batch × {s.vocab:,} "
        f"vocabulary × 4 bytes (logits) + {ubatch} × {r.context:,} context × "
        f"{ATTENTION_SCRATCH_BYTES} bytes (attention scratch, estimate)",
        f"total        {human(report.total):>11}  of {human(r.memory_bytes)} → {verdict}",
        f"longest context that fits: {report.max_context():,} tokens per slot "
        f"(trained for {s.context_train:,})",
    ]
    if r.context > s.context_train:
        lines.append(
            f"warning: context {r.context:,} is longer than the model was trained for "
            f"({s.context_train:,}); answers past that length degrade"
        )
    return "\n".join(lines)

"""How the model runs on the machine at hand: numeric precision, torch.compile, memory format.

One home for the choices every forward-heavy path makes (training step, evaluation, TTA,
embedding, kNN, explanations):

- precision "auto" resolves per device: CUDA -> fp16 autocast (AMP, with a GradScaler in
  training) unless train.amp is false; CPU -> bf16 autocast only where the CPU computes bf16
  natively (avx512_bf16 / amx_bf16 on x86, bf16 on Arm), else fp32. oneDNN *emulates* bf16 on
  other AVX-512 CPUs (torch.ops.mkldnn._is_mkldnn_bf16_supported() is then True), which measured
  about 2x *slower* than fp32 on an Intel Xeon without avx512_bf16, so that is not taken as support.
- Under autocast only the model's matmuls/convolutions run in low precision: callers cast
  outputs to fp32 before losses, softmax, metrics and gradient maps; parameters, gradients and
  optimiser state stay fp32, so checkpoints are fp32 whatever the precision.
- compile "auto" compiles only runs long enough to repay the compile time (COMPILE_MIN_STEPS);
  a compile failure (which surfaces at the first call, as compilation is lazy) warns once and
  the run goes on eager.

Environment overrides (for tests and for users who know their machine):
  FERMETRIC_CPU_BF16=1/0   say whether the CPU has native bf16 (skips the cpuinfo check).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import platform
import shutil
import types
from typing import Any, Callable, Optional

import torch
from torch import nn

from fermetric.errors import ConfigError

log = logging.getLogger("fermetric.runtime")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile's first call costs ~45-180 s on 2 CPU cores (forward + backward graphs) and the
# compiled step measured 1.2x (fp32) to 2.3x (bf16) faster: under compile=auto a run compiles when
# its remaining eager training time, estimated from the first PROBE_STEPS timed steps, is at least
# this long (shorter runs, tests and smoke runs stay eager).
COMPILE_MIN_SECONDS = 600.0
PROBE_STEPS = 3
# A scorer under compile=auto compiles its forward (weights frozen into the graph) once it has
# spent this many seconds in eager forward passes with the same weights and batch size: a
# compile costs ~40-90 s on 2 busy cores and the frozen graph measured 1.4-1.5x faster (resnet18,
# small stem), so only heavy work compiles (LIME's 1,000 samples on resnet18: from the 2nd image;
# the demo's small models: never).
COMPILE_INFERENCE_AFTER_SECONDS = 30.0
ENV_COMPILE = "FERMETRIC_COMPILE"
ENV_CPU_BF16 = "FERMETRIC_CPU_BF16"
_warned_emulated: list[bool] = []


@functools.lru_cache(maxsize=1)
def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, which containers narrow), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_threads(requested: int) -> int:
    """`requested` torch threads, capped at this machine's CPUs: a run config written on a bigger
    machine (train.threads) still trains here, and a huge count cannot exhaust memory or threads
    (OpenMP crashed with a segmentation fault at 100,000). 0 stays 0 (torch's default)."""
    cap = cpu_count()
    if requested > cap:
        log.warning("train.threads %d is more than this machine's %d CPUs: using %d", requested, cap, cap)
        return cap
    return requested


def cpu_model() -> str:
    """This machine's CPU model with the kind of vector units it has (a virtual machine's model
    name is often generic: "AMD EPYC"), e.g. "AMD EPYC (AVX-512 bf16)": what timings are measured on."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = _cpu_flags()
    kind = ("AMX bf16" if "amx_bf16" in flags else "AVX-512 bf16" if "avx512_bf16" in flags
            else "AVX-512, no bf16" if "avx512f" in flags else "AVX2" if "avx2" in flags else "")
    return f"{model}{f' ({kind})' if kind else ''}"


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):  # x86 "flags", Arm "Features"
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (so bf16 autocast is faster than fp32).

    FERMETRIC_CPU_BF16=1/0 overrides the check. Unknown platforms (no /proc/cpuinfo: macOS,
    Windows) answer False: fp32 is always correct, bf16 there is unmeasured.
    """
    env = os.environ.get(ENV_CPU_BF16, "").strip()
    if env in ("0", "1"):
        return env == "1"
    flags = _cpu_flags()
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return "bf16" in flags


def _cpu_fp16_works() -> bool:
    """fp16 autocast on the CPU exists in recent PyTorch only; probe a conv forward + backward."""
    try:
        conv = nn.Conv2d(1, 2, 3)
        x = torch.rand(2, 1, 8, 8)
        with torch.autocast("cpu", dtype=torch.float16):
            out = conv(x)
        out.float().sum().backward()
        return out.dtype == torch.float16
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def check_precision(value: Any, where: str = "train.precision") -> str:
    if value not in PRECISIONS:
        raise ConfigError(f"{where} must be one of {', '.join(PRECISIONS)}; got {value!r}")
    return str(value)


def resolve_precision(requested: str, device: torch.device | str, amp: bool = True) -> str:
    """The precision to run in: "fp32", "bf16" or "fp16".

    Args:
        requested: "auto", "fp32", "bf16" or "fp16" (train.precision / --precision).
        device: where the model runs.
        amp: train.amp (older configs): false keeps CUDA's "auto" at fp32.

    Raises:
        ConfigError: an unknown value, or a precision this device cannot run.
    """
    requested = check_precision(requested)
    dev = torch.device(device)
    if dev.type == "cuda":
        if requested == "auto":
            return "fp16" if amp else "fp32"
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision bf16 asked for, but this GPU does not support bf16; use fp16, fp32 or auto")
        return requested
    if dev.type != "cpu":  # mps and others: autocast support varies; fp32 is always right
        if requested in ("auto", "fp32"):
            return "fp32"
        raise ConfigError(f"precision {requested} is supported on cpu and cuda only; use auto or fp32 on {dev.type}")
    if requested == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "bf16" and not cpu_has_native_bf16() and not _warned_emulated:
        _warned_emulated.append(True)  # once per process
        log.warning("bf16 asked for on a CPU without native bf16 (no avx512_bf16/amx_bf16): it is emulated "
                    "and usually slower than fp32")
    if requested == "fp16" and not _cpu_fp16_works():
        raise ConfigError(f"precision fp16 does not work on the CPU with PyTorch {torch.__version__}; use auto, bf16 or fp32")
    return requested


def autocast(device: torch.device | str, precision: str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def use_channels_last(device: torch.device | str, precision: str) -> bool:
    """Whether to run convolutions channels_last (NHWC).

    cuDNN's tensor cores want it; on the CPU oneDNN's NHWC kernels measured faster in fp32 too
    (Intel Xeon, AVX-512, no bf16; baseline CNN: training step 1.32x, inference 1.49x; the issue's
    AMD EPYC with bf16: 1.18x over bf16 alone). Inputs have one channel, so only the weights'
    layout matters (an (N, 1, H, W) tensor is the same memory in both formats).
    """
    return torch.device(device).type in ("cuda", "cpu")


def prepare_for_inference(model: nn.Module, device: torch.device | str, precision: str) -> nn.Module:
    """`model` (in place) in the memory format that runs fastest for `precision` on `device`."""
    if use_channels_last(device, precision):
        model.to(memory_format=torch.channels_last)
    return model


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _compiler_available() -> bool:
    """Inductor needs a C++ compiler on the CPU."""
    return bool(os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++") or shutil.which("c++"))


def resolve_compile(requested: Any, device: torch.device | str, eager_seconds: Optional[float] = None) -> Optional[bool]:
    """Whether to torch.compile the training step; None: "auto", to decide once `eager_seconds`
    (the run's estimated remaining eager training time) is known.

    Args:
        requested: "auto", True/"true" or False/"false" (train.compile / --compile).
        device: where the model runs.
        eager_seconds: estimated remaining training time without compile (see StepCompiler).
    """
    value = {"true": True, "false": False}.get(str(requested).lower(), requested) if isinstance(requested, str) else requested
    if value not in (True, False, "auto"):
        raise ConfigError(f"train.compile must be auto, true or false; got {requested!r}")
    if value != "auto":
        return bool(value)
    if os.environ.get(ENV_COMPILE, "").strip() == "0":  # tests: never compile unless asked
        return False
    if not hasattr(torch, "compile") or torch.device(device).type not in ("cpu", "cuda"):
        return False
    if torch.device(device).type == "cpu" and not _compiler_available():
        return False
    if eager_seconds is None:
        return None
    return eager_seconds >= COMPILE_MIN_SECONDS


class StepCompiler:
    """The model the training step calls: compiled, eager, or (compile=auto) eager for the first
    few steps, timed, then compiled if the rest of the run is long enough to repay compiling.

    Args:
        model: the training model (its parameters are shared with the compiled version).
        requested: train.compile.
        device: where it runs.
        planned_steps: optimiser steps this session plans (epochs left x steps per epoch).
        budget_seconds: train.time_budget_minutes in seconds (0: none), caps the estimate.
    """

    def __init__(self, model: Callable, requested: Any, device: torch.device | str, planned_steps: int,
                 budget_seconds: float = 0.0):
        self.model, self.device = model, device
        self.planned, self.budget = int(planned_steps), float(budget_seconds)
        self.decision = resolve_compile(requested, device)
        self.current: Callable = self._compiled() if self.decision else model
        self._times: list[float] = []

    def _compiled(self) -> Callable:
        return CompiledWithFallback(self.model, "training step", dynamic=False)

    def step_done(self, seconds: float) -> None:
        """Report one eager step's wall time (ignored once decided)."""
        if self.decision is not None:
            return
        self._times.append(float(seconds))
        if len(self._times) <= PROBE_STEPS:  # the first step carries allocator warm-up: not counted
            return
        per_step = sorted(self._times[1:])[len(self._times[1:]) // 2]
        remaining = per_step * max(self.planned - len(self._times), 0)
        if self.budget > 0:
            remaining = min(remaining, self.budget)
        self.decision = bool(resolve_compile("auto", self.device, remaining))
        log.info("compile auto: %.2f s per eager step, ~%.0f s of training left: %s", per_step, remaining,
                 "compiling the step" if self.decision else f"staying eager (compiles from {COMPILE_MIN_SECONDS:.0f} s)")
        if self.decision:
            self.current = self._compiled()


_fresh_ids = itertools.count()


def fresh_method(method: Callable) -> Callable:
    """A copy of a function or bound method with a code object of its own (so its own
    torch.compile cache); anything else (e.g. a module) is returned as is."""
    fn = getattr(method, "__func__", method)
    if not isinstance(fn, types.FunctionType):
        return method
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_fresh_ids)}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    bound = getattr(method, "__self__", None)
    return types.MethodType(copy, bound) if bound is not None else copy


class CompiledWithFallback:
    """torch.compile(fn) that runs `fn` eagerly, with one warning, when compilation fails.

    Compilation is lazy: errors surface at the first call, not at torch.compile(); they are
    caught there. An error that eager execution raises too is the caller's error and propagates.
    """

    def __init__(self, fn: Callable, what: str = "model", freeze: bool = False, **compile_kwargs: Any):
        self.eager = fn
        self.what = what
        self.failed = False
        self.freeze = freeze  # inference only: weights become constants of the compiled graph
        try:
            self.compiled: Optional[Callable] = torch.compile(fn, **compile_kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. an unsupported Python or platform
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed, self.compiled = True, None
        log.warning("torch.compile failed for the %s (%s: %s); running eager instead",
                    self.what, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                if self.freeze:
                    import torch._inductor.config as inductor_config

                    with inductor_config.patch(freezing=True):
                        return self.compiled(*args, **kwargs)
                return self.compiled(*args, **kwargs)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back
                self._fail(exc)
        return self.eager(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # the objective reads model attributes (logits_from_embedding)
        if name == "eager":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.eager, name)


@contextlib.contextmanager
def inference(device: torch.device | str, precision: str):
    """inference_mode + the precision's autocast: for forward passes that need no gradient."""
    with torch.inference_mode(), autocast(device, precision):
        yield


def describe(precision: str, compiled: Optional[bool], channels_last: bool) -> dict[str, Any]:
    return {"precision": precision, "compile": "auto (undecided)" if compiled is None else bool(compiled),
            "channels_last": bool(channels_last)}


NOTE_PREFIX = "# resolved on this machine:"


def note_in_config(path, resolved: dict[str, Any]) -> None:
    """Record what `auto` resolved to as a comment on top of a run's config.yaml.

    The keys keep what was asked (e.g. precision: auto), so a resume on another machine resolves
    again; the comment says what this machine ran with.
    """
    from pathlib import Path

    from fermetric.utils.io import atomic_write_text

    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if not ln.startswith(NOTE_PREFIX)]
    note = f"{NOTE_PREFIX} " + ", ".join(f"{k} {v}" for k, v in resolved.items()) + "\n"
    atomic_write_text(path, note + "".join(lines))

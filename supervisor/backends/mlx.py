"""The $0 local tier, in-process: mlx-lm models (MLX directories, Hugging Face repos, GGUF files).

Everything that touches mlx runs on one dedicated worker thread per backend (a single-thread executor), so
loading and generation never block the event loop and mlx only ever sees one thread. Text deltas reach
``on_text`` through ``loop.call_soon_threadsafe``; cancelling the awaiting task (or the request's timeout)
sets a flag that the generation loop checks at every token, and during prompt processing. A generation that
starts to cycle is ended by the repetition guard (``repetition.py``) with ``finish_reason = "looping"``.

Loaded models stay in memory up to ``memory_budget_mb`` (a model's size is the bytes of its parameters);
beyond that the least recently used are unloaded, as Ollama's ``keep_alive`` does.

Usage is exact and comes from the last ``GenerationResponse`` (protocols.md section 2.3): the prompt is the
chat-templated token list we pass in (no prompt cache is reused, so nothing is a cache read) and the output
count includes the end-of-sequence token. mlx and mlx-lm are imported only on the worker thread, when a model
is first loaded: importing this module does not import them.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from supervisor.backends.base import Health, LocalModel, OnText, Request, Result, TokenCount, refuse_tools
from supervisor.backends.repetition import LOOPING, RepetitionGuard
from supervisor.config import ProviderConfig
from supervisor.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextOverflow,
    ModelNotFound,
    SupervisorError,
)
from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path, is_pulled
from supervisor.usage import Usage

log = logging.getLogger(__name__)

MLX_INSTALL_HINT = 'pip install "frugal-supervisor[mlx]"'
DEFAULT_EMBEDDED_MODEL = "smollm2-135m"
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MB = 1024 * 1024

SourceKind = Literal["dir", "gguf", "hf"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model name points: an MLX model directory, a GGUF file, or a Hugging Face repo id."""

    name: str
    kind: SourceKind
    location: str  # absolute path, or the repo id

    def describe(self) -> str:
        return {"dir": "MLX directory", "gguf": "GGUF file", "hf": "Hugging Face repo"}[self.kind] + f" {self.location}"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a model's files say about it (read without loading it): for an Ollama client's ``/api/show``."""

    name: str
    format: Literal["mlx", "gguf"]
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    quantization: str | None  # "Q4_K_M" (GGUF file type), "4-bit" (MLX), None (full precision or unknown)
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class MLXStats:
    """What this backend has computed so far, cancelled calls included (they used the CPU too)."""

    calls: int = 0
    cancelled_calls: int = 0
    generated_tokens: int = 0
    compute_s: float = 0.0


@dataclass(slots=True)
class _Loaded:
    source: ModelSource
    model: Any
    tokenizer: Any
    context_length: int | None
    size_bytes: int
    load_s: float


class _Stopped(Exception):
    """Raised on the worker thread when a call is cancelled, times out or the backend closes; never escapes."""


@dataclass(slots=True, eq=False)
class _Job:
    """One call as the worker thread sees it: where to send text, whether to stop, and what it computed."""

    loop: asyncio.AbstractEventLoop
    on_text: OnText | None
    started: float
    caller: asyncio.Task[Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    first_token_at: float | None = None
    generated_tokens: int = 0

    def check(self, *_: object) -> None:
        """Raise ``_Stopped`` if the call was cancelled; also mlx-lm's prompt-progress callback."""
        if self.cancel.is_set():
            raise _Stopped

    def emit(self, delta: str) -> None:
        if not delta or self.on_text is None:
            return
        try:
            self.loop.call_soon_threadsafe(self._deliver, delta)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel.set()

    def _deliver(self, delta: str) -> None:
        # A delta queued before the caller was cancelled still arrives after ``task.cancel()``; drop it.
        cancelling = self.caller is not None and self.caller.cancelling() > 0
        if not cancelling and not self.cancel.is_set() and self.on_text is not None:
            self.on_text(delta)


@dataclass(frozen=True, slots=True)
class _Outcome:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    peak_memory_gb: float
    load_s: float
    generate_s: float
    first_token_at: float | None
    stop: str | None
    context_window: int | None
    location: str


class _StopScanner:
    """Cuts the text at the first stop string, holding back just enough that no delta shows part of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.matched: str | None = None

    def feed(self, segment: str) -> str:
        """Add model text; return the delta that is now safe to show (after a match, the last one)."""
        search_from = max(0, len(self.text) - self.hold)
        self.text += segment
        if self.stops:
            hits = [(i, s) for s in self.stops if (i := self.text.find(s, search_from)) >= 0]
            if hits:
                index, self.matched = min(hits)
                self.text = self.text[:index]
                return self.flush()
        safe = max(self.emitted, len(self.text) - self.hold)
        delta = self.text[self.emitted : safe]
        self.emitted = safe
        return delta

    def flush(self) -> str:
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta


class MLXBackend:
    """Models run in-process by mlx-lm on a dedicated worker thread; $0 marginal cost."""

    kind = "mlx"
    local = True
    supports_tools = False  # no native tool calling in-process: tool steps use the JSON-in-text protocol

    def __init__(self, provider: str, config: ProviderConfig, environ: Mapping[str, str]) -> None:
        self.provider = provider
        self._config = config
        self._environ = dict(environ)
        self._executor: ThreadPoolExecutor | None = None
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # by location, least recently used first
        self._lock = threading.Lock()  # guards _loaded, _jobs and _stats across the loop and worker threads
        self._jobs: set[_Job] = set()
        self._stats = MLXStats()

    # ------------------------------------------------------------------------------------------------------
    # The Backend protocol

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        """Generate on the worker thread, streaming deltas to ``on_text``; usage is exact (see module doc)."""
        refuse_tools(request, self.provider)
        if request.max_output_tokens < 1:
            raise BadRequest(
                f"max_output_tokens must be at least 1 (got {request.max_output_tokens})",
                provider=self.provider,
                model=request.model,
            )
        loop = asyncio.get_running_loop()
        job = _Job(loop=loop, on_text=on_text, started=time.perf_counter(), caller=asyncio.current_task())
        with self._lock:
            self._jobs.add(job)
        try:
            future = loop.run_in_executor(self._worker(), self._run, request, job)
            try:
                async with asyncio.timeout(request.timeout_s):
                    outcome = await future
            except TimeoutError:
                job.cancel.set()
                raise BackendTimeout(
                    f"{request.model} did not finish within {request.timeout_s:g} s",
                    "raise the step's timeout_s, or lower max_output_tokens for this local model",
                    provider=self.provider,
                    model=request.model,
                ) from None
            except asyncio.CancelledError:
                job.cancel.set()
                raise
            except _Stopped:  # not cancelled by the caller: aclose() stopped the worker under it
                raise BackendUnavailable(
                    f"the {self.provider} backend was closed while {request.model} was generating",
                    provider=self.provider,
                    model=request.model,
                ) from None
        finally:
            with self._lock:
                self._jobs.discard(job)
        total_s = time.perf_counter() - job.started
        usage = Usage(
            input_uncached=outcome.prompt_tokens,
            cache_read=0,
            cache_write_5m=0,
            cache_write_1h=0,
            output=outcome.generation_tokens,
        )
        raw_usage: dict[str, Any] = {
            "prompt_tokens": outcome.prompt_tokens,
            "generation_tokens": outcome.generation_tokens,
            "prompt_tps": outcome.prompt_tps,
            "generation_tps": outcome.generation_tps,
            "peak_memory": outcome.peak_memory_gb,  # GB, as mlx-lm reports it
            "load_s": outcome.load_s,
            "generate_s": outcome.generate_s,
            "finish_reason": outcome.finish_reason,
            "stop": outcome.stop,
            "context_window": outcome.context_window,
        }
        return Result(
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            usage=usage,
            ttft_s=None if outcome.first_token_at is None else outcome.first_token_at - job.started,
            total_s=total_s,
            tokens_per_s=outcome.generation_tps,
            compute_s=outcome.load_s + outcome.generate_s,
            model_reported=outcome.location,
            raw_usage=raw_usage,
        )

    def count_tokens(self, request: Request) -> TokenCount:
        """The exact prompt size with the model's tokenizer and chat template.

        The tokenizer runs on the calling thread. A model that is not loaded yet is loaded first, on the
        worker thread, and this call waits for that (and for any generation queued before it).
        """
        entry = self._entry(request.model)
        if entry is None:
            entry, _ = self._worker().submit(self._ensure_loaded, request.model).result()
        return TokenCount(tokens=len(self._prompt_tokens(entry, request)), exact=True)

    async def health(self) -> Health:
        """Whether mlx-lm is importable (without importing it), which models are on disk, which are loaded."""
        if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx_lm") is None:
            return Health(
                provider=self.provider,
                kind=self.kind,
                ok=False,
                detail=f"mlx-lm is not installed: {MLX_INSTALL_HINT}",
            )
        try:
            models = self.available_models()
        except (OSError, SupervisorError) as exc:
            return Health(provider=self.provider, kind=self.kind, ok=False, detail=f"cannot list models: {exc}")
        loaded = [m for m in models if m.loaded]
        used_mb = sum(m.size_bytes or 0 for m in loaded) / _MB
        parts = [
            f"mlx-lm ready; {len(models)} model(s) on disk, {len(loaded)} loaded "
            f"({used_mb:.0f} of {self._config.memory_budget_mb} MB budget)"
        ]
        active = _mlx_active_memory_mb()
        if active is not None:
            parts.append(f"mlx active memory {active:.0f} MB")
        if not models:
            parts.append(f"no model on disk: run `supervisor models pull {DEFAULT_EMBEDDED_MODEL}`")
        return Health(provider=self.provider, kind=self.kind, ok=True, detail="; ".join(parts), models=tuple(models))

    async def aclose(self) -> None:
        """Stop running generations at their next token, unload every model, release mlx's per-thread state and
        end the worker thread (joined: nothing of mlx is left running when the interpreter shuts down)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with self._lock:
            for job in self._jobs:
                job.cancel.set()
        await asyncio.get_running_loop().run_in_executor(executor, self._release_thread)
        await asyncio.to_thread(executor.shutdown, wait=True)

    # ------------------------------------------------------------------------------------------------------
    # Models

    def resolve(self, name: str) -> ModelSource:
        """Where ``name`` points: ``config.models``, an embedded model, a path, or a Hugging Face repo id."""
        target = self._config.models.get(name)
        if target is None and name in EMBEDDED_MODELS:
            path = embedded_model_path(name, self._environ)
            if not is_pulled(name, self._environ):
                raise ModelNotFound(
                    f"the embedded model {name} is not on this machine yet",
                    f"supervisor models pull {name}",
                    provider=self.provider,
                    model=name,
                )
            return ModelSource(name, "gguf", str(path))
        configured = target is not None
        raw = target if target is not None else name
        path = Path(raw).expanduser()
        if path.is_dir():
            return ModelSource(name, "dir", str(path.resolve()))
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return ModelSource(name, "gguf", str(path.resolve()))
            raise ModelNotFound(
                f"{path} is a file but not a .gguf model",
                "point the model at an MLX model directory, a .gguf file or a Hugging Face repo id",
                provider=self.provider,
                model=name,
            )
        if path.is_absolute() or raw.startswith((".", "~")) or raw.lower().endswith(".gguf"):
            where = f"[providers.{self.provider}.models] {name}" if configured else "the model id"
            raise ModelNotFound(
                f"{raw} does not exist (from {where})",
                f"check the path, or pull the embedded model with `supervisor models pull {DEFAULT_EMBEDDED_MODEL}`",
                provider=self.provider,
                model=name,
            )
        if _HF_REPO_ID.match(raw):
            return ModelSource(name, "hf", raw)
        known = sorted({*self._config.models, *EMBEDDED_MODELS})
        raise ModelNotFound(
            f"unknown mlx model {name!r}",
            f"known: {', '.join(known)}; or add it under [providers.{self.provider}.models] as a directory, "
            "a .gguf file or a Hugging Face repo id",
            provider=self.provider,
            model=name,
        )

    async def model_missing(self, name: str) -> str | None:
        """Why ``name`` cannot be served from this machine (unknown, or its weights are not on disk), or None.

        Reads the disk only: nothing is loaded. A Hugging Face repo that is not cached yet counts as present,
        because it is downloaded on first use."""
        try:
            source = self.resolve(name)
        except ModelNotFound as exc:
            return str(exc)
        if source.kind == "dir" and _disk_size(source) is None:
            return f"{name}: no *.safetensors weights in its model directory"
        return None

    async def load(self, name: str) -> LocalModel:
        """Load ``name`` now (on the worker thread) so the first call does not pay for it."""
        loop = asyncio.get_running_loop()
        entry, _ = await loop.run_in_executor(self._worker(), self._ensure_loaded, name)
        return self._describe(entry)

    async def unload(self, name: str) -> bool:
        """Unload ``name`` if it is loaded; True if it was."""
        source = self.resolve(name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self._unload, source.location)

    def loaded_models(self) -> list[LocalModel]:
        """Models in memory, most recently used first."""
        with self._lock:
            entries = list(reversed(self._loaded.values()))
        return [self._describe(entry) for entry in entries]

    def available_models(self) -> list[LocalModel]:
        """Configured and embedded models whose weights are on disk, plus anything loaded."""
        with self._lock:
            loaded = {entry.source.location: entry for entry in self._loaded.values()}
        out: list[LocalModel] = []
        seen: set[str] = set()
        names = [*self._config.models, *(n for n in EMBEDDED_MODELS if n not in self._config.models)]
        for name in names:
            try:
                source = self.resolve(name)
            except ModelNotFound:
                continue
            size = _disk_size(source)
            if size is None:
                continue
            entry = loaded.get(source.location)
            seen.add(source.location)
            out.append(
                LocalModel(
                    provider=self.provider,
                    name=name,
                    size_bytes=entry.size_bytes if entry else size,
                    loaded=entry is not None,
                    context_length=entry.context_length if entry else None,
                    detail=source.describe(),
                )
            )
        out.extend(self._describe(entry) for location, entry in loaded.items() if location not in seen)
        return out

    def model_facts(self, name: str) -> ModelFacts:
        """What ``name``'s files say: architecture, context length, parameter count and quantization, read from
        config.json and the safetensors headers (MLX), or the GGUF header, without loading any weights."""
        source = self.resolve(name)
        size = _disk_size(source)
        if source.kind == "gguf":
            from supervisor.backends.gguf import FILE_TYPES, read_gguf_header

            metadata, tensors = read_gguf_header(Path(source.location))
            arch = metadata.get("general.architecture")
            arch = arch if isinstance(arch, str) else None
            context = metadata.get(f"{arch}.context_length") if arch else None
            file_type = metadata.get("general.file_type")
            return ModelFacts(
                name=name,
                format="gguf",
                architecture=arch,
                context_length=int(context) if isinstance(context, int) else None,
                parameter_count=sum(_product(shape) for shape in tensors.values()) or None,
                quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
                size_bytes=size,
            )
        directory = Path(source.location) if source.kind == "dir" else _hf_cached_snapshot(source.location)
        if directory is None or not (directory / "config.json").is_file():
            raise ModelNotFound(
                f"{source.describe()} is not on this machine",
                f"call the model once online, or point [providers.{self.provider}.models] at a local directory",
                provider=self.provider,
                model=name,
            )
        import json

        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        quantization = config.get("quantization") if isinstance(config.get("quantization"), dict) else None
        bits = quantization.get("bits") if quantization else None
        arch = config.get("model_type")
        return ModelFacts(
            name=name,
            format="mlx",
            architecture=arch if isinstance(arch, str) else None,
            context_length=_context_length(config),
            parameter_count=_safetensors_parameters(directory, bits if isinstance(bits, int) else None),
            quantization=f"{bits}-bit" if isinstance(bits, int) else None,
            size_bytes=size,
        )

    def memory_used_bytes(self) -> int:
        """Parameter bytes of the loaded models (what the memory budget is measured against)."""
        with self._lock:
            return sum(entry.size_bytes for entry in self._loaded.values())

    def stats(self) -> MLXStats:
        with self._lock:
            return self._stats

    # ------------------------------------------------------------------------------------------------------
    # Worker thread

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mlx-{self.provider}")
        return self._executor

    def _entry(self, name: str) -> _Loaded | None:
        source = self.resolve(name)
        with self._lock:
            return self._loaded.get(source.location)

    def _run(self, request: Request, job: _Job) -> _Outcome:
        """One call on the worker thread: load if needed, check the window, generate, count."""
        load_s = 0.0
        generate_started: float | None = None
        stopped = False
        try:
            job.check()
            entry, load_s = self._ensure_loaded(request.model)
            job.check()
            prompt = self._prompt_tokens(entry, request)
            window = self._window(entry, request)
            if window is not None and len(prompt) + request.max_output_tokens > window:
                raise ContextOverflow(
                    f"the prompt is {len(prompt)} tokens and max_output_tokens is "
                    f"{request.max_output_tokens}: more than the {window}-token context window of "
                    f"{request.model}",
                    "send fewer or smaller context files, lower max_output_tokens, or use a model with a larger window",
                    provider=self.provider,
                    model=request.model,
                )
            generate_started = time.perf_counter()
            return self._generate(entry, request, prompt, job, window, load_s)
        except _Stopped:
            stopped = True
            raise
        finally:
            generate_s = 0.0 if generate_started is None else time.perf_counter() - generate_started
            with self._lock:
                self._stats = MLXStats(
                    calls=self._stats.calls + int(generate_started is not None),
                    cancelled_calls=self._stats.cancelled_calls + int(stopped),
                    generated_tokens=self._stats.generated_tokens + job.generated_tokens,
                    compute_s=self._stats.compute_s + load_s + generate_s,
                )

    def _generate(
        self,
        entry: _Loaded,
        request: Request,
        prompt: list[int],
        job: _Job,
        window: int | None,
        load_s: float,
    ) -> _Outcome:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if request.seed is not None:
            mx.random.seed(request.seed)
        mx.reset_peak_memory()
        scanner = _StopScanner(request.stop)
        guard = RepetitionGuard()
        started = time.perf_counter()
        last: Any = None
        responses = stream_generate(
            entry.model,
            entry.tokenizer,
            prompt,
            max_tokens=request.max_output_tokens,
            sampler=make_sampler(temp=request.temperature),
            prompt_progress_callback=job.check,
        )
        try:
            for response in responses:
                last = response
                job.generated_tokens = int(response.generation_tokens)
                if job.first_token_at is None:
                    job.first_token_at = time.perf_counter()
                job.check()
                job.emit(scanner.feed(response.text))
                if scanner.matched is not None:
                    break
                if guard.feed(response.text):
                    break  # cycling: every further token would cost time and change nothing
        except (RuntimeError, ValueError) as exc:
            raise BackendError(
                f"mlx-lm failed while generating with {request.model}: {exc}",
                "if memory ran out, lower memory_budget_mb or use a smaller model",
                provider=self.provider,
                model=request.model,
            ) from exc
        finally:
            responses.close()
        job.emit(scanner.flush())
        if last is None:  # stream_generate always yields a final response; this guards a future change
            raise BackendError(f"mlx-lm produced no response for {request.model}", provider=self.provider)
        finish = "stop" if scanner.matched is not None else LOOPING if guard.tripped else last.finish_reason
        return _Outcome(
            text=scanner.text,
            finish_reason=finish,
            prompt_tokens=int(last.prompt_tokens),
            generation_tokens=int(last.generation_tokens),
            prompt_tps=float(last.prompt_tps),
            generation_tps=float(last.generation_tps),
            peak_memory_gb=float(last.peak_memory),
            load_s=load_s,
            generate_s=time.perf_counter() - started,
            first_token_at=job.first_token_at,
            stop=scanner.matched,
            context_window=window,
            location=entry.source.location,
        )

    def _ensure_loaded(self, name: str) -> tuple[_Loaded, float]:
        """The loaded model for ``name``, and the seconds this call spent loading it (0 if it was loaded)."""
        source = self.resolve(name)
        with self._lock:
            entry = self._loaded.get(source.location)
            if entry is not None:
                self._loaded.move_to_end(source.location)
                return entry, 0.0
        self._evict(incoming_bytes=_disk_size(source) or 0)
        started = time.perf_counter()
        model, tokenizer, config = self._load(source)
        load_s = time.perf_counter() - started
        entry = _Loaded(
            source=source,
            model=model,
            tokenizer=tokenizer,
            context_length=_context_length(config),
            size_bytes=_parameter_bytes(model),
            load_s=load_s,
        )
        with self._lock:
            self._loaded[source.location] = entry
        self._evict(keep=source.location)
        if entry.size_bytes > self._config.memory_budget_mb * _MB:
            log.warning(
                "%s needs %.0f MB, more than memory_budget_mb = %d; keeping it loaded alone",
                name,
                entry.size_bytes / _MB,
                self._config.memory_budget_mb,
            )
        log.info("loaded %s (%s, %.1f MB) in %.2f s", name, source.describe(), entry.size_bytes / _MB, load_s)
        return entry, load_s

    def _load(self, source: ModelSource) -> tuple[Any, Any, dict[str, Any]]:
        try:
            import mlx_lm
        except (ImportError, OSError) as exc:
            raise BackendUnavailable(
                f"mlx-lm is not available ({exc})",
                MLX_INSTALL_HINT,
                provider=self.provider,
                model=source.name,
            ) from None
        if source.kind == "gguf":
            from supervisor.backends.gguf import load_gguf

            model, tokenizer, config = load_gguf(Path(source.location))
            return model, tokenizer, config
        try:
            loaded: Any = mlx_lm.load(source.location, return_config=True)
        except OSError as exc:  # FileNotFoundError, and huggingface_hub's offline / not-found errors
            if source.kind == "hf":
                raise ModelNotFound(
                    f"{source.location} is not in the Hugging Face cache and could not be downloaded ({exc})",
                    f"with internet access run `hf download {source.location}` (or call the model once "
                    "online), "
                    f"or point [providers.{self.provider}.models] at a local MLX directory or .gguf file",
                    provider=self.provider,
                    model=source.name,
                ) from None
            raise ModelNotFound(
                f"{source.location} is not an MLX model directory ({exc})",
                "it needs config.json, model*.safetensors and tokenizer files (see `mlx_lm.convert`)",
                provider=self.provider,
                model=source.name,
            ) from None
        except ValueError as exc:
            raise ModelNotFound(
                f"mlx-lm cannot load {source.describe()}: {exc}",
                "check that mlx-lm supports this architecture (upgrade mlx-lm, or use `mlx_lm.convert`)",
                provider=self.provider,
                model=source.name,
            ) from None
        model, tokenizer, config = loaded
        return model, tokenizer, config

    def _evict(self, *, incoming_bytes: int = 0, keep: str | None = None) -> None:
        """Unload least-recently-used models until the loaded ones (plus what is coming) fit the budget."""
        budget = self._config.memory_budget_mb * _MB
        evicted: list[_Loaded] = []
        with self._lock:
            used = sum(entry.size_bytes for entry in self._loaded.values())
            for location in list(self._loaded):
                if used + incoming_bytes <= budget:
                    break
                if location == keep:
                    continue
                entry = self._loaded.pop(location)
                used -= entry.size_bytes
                evicted.append(entry)
        for entry in evicted:
            log.info("unloaded %s to stay within %d MB", entry.source.name, self._config.memory_budget_mb)
        if evicted:
            del evicted
            _release_memory()

    def _unload(self, location: str) -> bool:
        with self._lock:
            entry = self._loaded.pop(location, None)
        if entry is None:
            return False
        del entry
        _release_memory()
        return True

    def _unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
        _release_memory()

    def _release_thread(self) -> None:
        """The worker thread's last job: unload, then destroy the mlx streams this thread created.

        mlx keeps per-thread streams whose destructors take the GIL. Left to run at thread exit, they can run
        while the interpreter is finalizing, and Python then ends the thread inside a C++ destructor:
        "terminate called without an active exception" (exit 134) after a command had printed its answer.
        mlx asks every thread that used it to call ``clear_streams`` before it ends (ml-explore/mlx#4110).
        """
        self._unload_all()
        if "mlx.core" in sys.modules:
            import mlx.core as mx

            clear_streams = getattr(mx, "clear_streams", None)  # mlx >= 0.32
            if clear_streams is not None:
                clear_streams()

    def _prompt_tokens(self, entry: _Loaded, request: Request) -> list[int]:
        """The prompt as token ids: the model's chat template, else plain ``role: content`` lines."""
        tokenizer = entry.tokenizer
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if getattr(tokenizer, "has_chat_template", False):
            from jinja2 import TemplateError

            try:
                ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            except TemplateError as exc:
                raise BadRequest(
                    f"the chat template of {request.model} rejected the messages: {exc}",
                    "some templates allow no system message or need user/assistant turns to alternate",
                    provider=self.provider,
                    model=request.model,
                ) from None
        else:
            text = "".join(f"{m.role}: {m.content}\n" for m in request.messages) + "assistant:"
            ids = tokenizer.encode(text)
        return [int(token) for token in ids]

    def _window(self, entry: _Loaded, request: Request) -> int | None:
        """The context window: the request's (capped at the model's own), the model's, or the provider's."""
        if request.context_window is not None:
            if entry.context_length is not None:
                return min(request.context_window, entry.context_length)
            return request.context_window
        return entry.context_length or self._config.context_window

    def _describe(self, entry: _Loaded) -> LocalModel:
        return LocalModel(
            provider=self.provider,
            name=entry.source.name,
            size_bytes=entry.size_bytes,
            loaded=True,
            context_length=entry.context_length,
            detail=f"{entry.source.describe()} (loaded in {entry.load_s:.1f} s)",
        )


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _parameter_bytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    leaves: Any = tree_flatten(model.parameters())
    return int(sum(value.nbytes for _, value in leaves))


def _product(shape: Sequence[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def _safetensors_parameters(directory: Path, bits: int | None) -> int | None:
    """Parameters counted from the safetensors headers (8-byte length, then JSON: no weights are read). A
    quantized MLX weight packs 32/bits values per uint32; its scales and biases are not parameters."""
    import json
    import struct

    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for tensor, info in header.items():
            if tensor == "__metadata__" or not isinstance(info, dict):
                continue
            if bits and tensor.endswith((".scales", ".biases")):
                continue
            count = _product(info.get("shape") or [])
            total += count * 32 // bits if bits and info.get("dtype") == "U32" else count
    return total or None


def _context_length(config: Mapping[str, Any]) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in ("context_length", "max_position_embeddings"):
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _disk_size(source: ModelSource) -> int | None:
    """Bytes of weights on disk (an estimate of the loaded size), or None when they are not on this disk."""
    if source.kind == "gguf":
        path = Path(source.location)
        return path.stat().st_size if path.is_file() else None
    if source.kind == "dir":
        directory = Path(source.location)
    else:
        directory_or_none = _hf_cached_snapshot(source.location)
        if directory_or_none is None:
            return None
        directory = directory_or_none
    weights = list(directory.glob("*.safetensors"))
    return sum(path.stat().st_size for path in weights) if weights else None


def _hf_cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot directory of a Hugging Face repo, without touching the network."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id after all
        return None
    return Path(found).parent if isinstance(found, str) else None


def _release_memory() -> None:
    """Give freed model buffers back: drop Python references, then mlx's buffer cache."""
    gc.collect()
    if "mlx.core" in sys.modules:
        import mlx.core as mx

        mx.clear_cache()


def _mlx_active_memory_mb() -> float | None:
    """mlx's allocated memory, only when mlx is already imported (health must not import it)."""
    if "mlx.core" not in sys.modules:
        return None
    import mlx.core as mx

    return float(mx.get_active_memory()) / _MB

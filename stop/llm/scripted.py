"""A scripted backend: canned replies from a file, and every prompt recorded.

It is registered like the real backends, so tests exercise the same path users do. The
script is a JSON list whose entries are either replies (strings), served in turn, or
rules `{"when": "text", "replies": [...]}`: a prompt containing `text` gets the rule's
reply for its sample index (sample 0 the first, sample 1 the second, ...), which keeps
the answers deterministic when requests run concurrently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput
from stop.llm import BackendPlugin
from stop.llm.base import Completion, Prompt


class ScriptedBackend:
    def __init__(self, script: list[Any], name: str = "scripted") -> None:
        self.replies = [r for r in script if isinstance(r, str)]
        self.rules = [r for r in script if isinstance(r, dict)]
        if not self.replies and not self.rules:
            raise BadInput("the script holds no replies")
        self.id = f"scripted:{name}"
        self.prompts: list[Prompt] = []
        self._next = itertools.cycle(range(len(self.replies) or 1))
        self._lock = threading.Lock()

    def _reply(self, prompt: Prompt) -> str:
        text = f"{prompt.expertise}\n{prompt.message}"
        for rule in self.rules:
            if rule["when"] in text:
                return rule["replies"][prompt.sample % len(rule["replies"])]
        if not self.replies:
            raise BadInput(f"no scripted rule matches the prompt: {prompt.message[:80]!r}...")
        return self.replies[next(self._next)]

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        out = []
        with self._lock:
            for prompt in prompts:
                self.prompts.append(prompt)
                text = self._reply(prompt)
                words = len(prompt.expertise.split()) + len(prompt.message.split())
                out.append(
                    Completion(text=text, prompt_tokens=words, completion_tokens=len(text.split()))
                )
        return out


def _valid(entry: Any) -> bool:
    if isinstance(entry, str):
        return True
    return (
        isinstance(entry, dict)
        and set(entry) == {"when", "replies"}
        and isinstance(entry["when"], str)
        and isinstance(entry["replies"], list)
        and bool(entry["replies"])
        and all(isinstance(r, str) for r in entry["replies"])
    )


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    script: Path  # a JSON list of replies or rules


def _build(settings: ScriptedOptions) -> ScriptedBackend:
    try:
        script = json.loads(settings.script.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read script {settings.script}: {exc}") from exc
    if not isinstance(script, list) or not all(_valid(e) for e in script):
        raise BadInput(
            f"script {settings.script} must be a JSON list of replies (strings) "
            'or rules {"when": "...", "replies": ["..."]}'
        )
    # The file's content is part of the id so that the cache never mixes two scripts.
    digest = hashlib.sha256(json.dumps(script).encode()).hexdigest()[:12]
    return ScriptedBackend(script, name=f"{settings.script.name}:{digest}")


PLUGIN = BackendPlugin("scripted", ScriptedOptions, _build)

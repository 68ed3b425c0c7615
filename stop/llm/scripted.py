"""A scripted backend: replies read from a file, in order, and every prompt recorded.

It is registered like the real backends, so tests exercise the same path users do.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading

from stop.errors import BadInput
from stop.llm import register_backend
from stop.llm.base import Completion, ModelSettings, Prompt


class ScriptedBackend:
    def __init__(self, replies: list[str], name: str = "scripted") -> None:
        if not replies:
            raise BadInput("the script holds no replies")
        self.id = f"scripted:{name}"
        self.replies = replies
        self.prompts: list[Prompt] = []
        self._next = itertools.cycle(range(len(replies)))
        self._lock = threading.Lock()

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        out = []
        with self._lock:
            for prompt in prompts:
                self.prompts.append(prompt)
                text = self.replies[next(self._next)]
                words = len(prompt.expertise.split()) + len(prompt.message.split())
                out.append(
                    Completion(text=text, prompt_tokens=words, completion_tokens=len(text.split()))
                )
        return out


@register_backend("scripted")
def _build(settings: ModelSettings) -> ScriptedBackend:
    if settings.script is None:
        raise BadInput("the scripted backend needs --script FILE (a JSON list of replies)")
    try:
        replies = json.loads(settings.script.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read script {settings.script}: {exc}") from exc
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
        raise BadInput(f"script {settings.script} must be a JSON list of strings")
    # The file's content is part of the id so that the cache never mixes two scripts.
    digest = hashlib.sha256(json.dumps(replies).encode()).hexdigest()[:12]
    return ScriptedBackend(replies, name=f"{settings.script.name}:{digest}")

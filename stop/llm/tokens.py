"""Token counts for budgets when a server does not report usage.

tiktoken downloads its encodings on first use; on a machine without network that
fails (or hangs), so the load runs once, bounded in time, and counts fall back to an
estimate of four bytes a token. A model starts the load when it is built (`warm`), so
that the wait is spent beside the run's setup, not before its first request.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)
_LOAD_TIMEOUT_S = 5.0
_loading = threading.Lock()  # one load: a second caller waits for the first's result


def warm() -> None:
    """Start loading the encoding in the background, if it is not loaded yet."""
    if _load.cache_info().currsize == 0:  # a model is built per run and per meta test
        threading.Thread(target=_encoding, name="tiktoken-load", daemon=True).start()


def _encoding() -> Any | None:
    with _loading:
        return _load()


@functools.cache
def _load() -> Any | None:
    box: list[Any] = []

    def load() -> None:
        try:
            import tiktoken

            box.append(tiktoken.get_encoding("o200k_base"))
        except Exception as exc:  # noqa: BLE001 - any failure means "estimate instead"
            log.info("tiktoken encoding unavailable (%s); estimating token counts", exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(_LOAD_TIMEOUT_S)
    return box[0] if box else None


def count_tokens(text: str) -> int:
    encoding = _encoding()
    if encoding is not None:
        return len(encoding.encode(text, disallowed_special=()))
    return (len(text.encode()) + 3) // 4

"""One run's money: a cap in USD that every language model of the run draws on.

A request holds its worst case (its prompt, counted with a margin, and a reply of
max_tokens) from the moment it is reserved until its reply is in; then the hold becomes
what the reply cost. A request is refused when what is spent, what is held and its own
worst case could pass the cap, so requests in flight never overspend it. Replies replayed
from the response cache are counted as they cost when they were paid: a resumed run
stops where the uninterrupted one stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stop.errors import BudgetExhausted

Price = Callable[[int, int], float]  # USD of (prompt tokens, completion tokens)


class Purse:
    def __init__(self, price: Price, cap: float | None = None) -> None:
        self.price, self.cap = price, cap
        self.spent = self.held = 0.0
        self.reached = False  # a request was refused, or could not fit: the cap ended asking
        self._lock = threading.Lock()

    def hold(self, usd: float) -> None:
        """Hold `usd` for a request about to be sent, or raise BudgetExhausted."""
        with self._lock:
            if self.cap is not None and self.spent + self.held + usd > self.cap:
                self.reached = True
                raise BudgetExhausted(
                    f"money cap of ${self.cap:g} reached: ${self.spent:.4f} spent, "
                    f"${self.held:.4f} in flight, and the next request could cost ${usd:.4f}"
                )
            self.held += usd

    def settle(self, held: float, spent: float) -> None:
        """A request's hold is over; it cost `spent` (0 if it failed or was never sent)."""
        with self._lock:
            self.held -= held
            self.spent += spent

    def affords(self, usd: float) -> bool:
        with self._lock:
            fits = self.cap is None or self.spent + self.held + usd <= self.cap
            self.reached |= not fits
            return fits

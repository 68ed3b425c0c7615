"""The host's side of `utility.rank`: a learned reranker (stop/search/reranker.py) trained on the
candidates scored so far, refitted whenever new scores arrived since the last fit, so an
improver can evaluate only the candidates worth a full utility evaluation.

One ranker can span several improver runs (the meta-utility keeps one per task across
generations), which is what makes it "retrained each generation".
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from stop.records import Evaluation, RankStats

log = logging.getLogger(__name__)


class CandidateRanker:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._examples: dict[str, Any] = {}  # program -> rerank.Scored
        self._model: Any = None  # rerank.Reranker, once fitted
        self._fitted_on = 0
        self._ranked: set[str] = set()
        self._lock = threading.Lock()
        self.stats = RankStats()

    def add(self, program: str, evaluation: Evaluation) -> None:
        from stop.search.reranker import Scored  # numpy: only for runs that score candidates

        with self._lock:
            self._examples[program] = Scored(
                program=program, score=evaluation.score, status=evaluation.status
            )
            self._update_saved()

    def rank(self, programs: list[str]) -> list[int]:
        from stop.search.reranker import NotEnoughData, Reranker

        with self._lock:
            self.stats.requests += 1
            self._ranked.update(programs)
            self._update_saved()
            if len(self._examples) != self._fitted_on:
                try:
                    self._model = Reranker.fit(
                        list(self._examples.values()), previous=self._model, seed=self.seed
                    )
                    self.stats.fits += 1
                    self.stats.hard_negatives = self._model.hard_negatives
                except NotEnoughData as exc:
                    log.info("reranker not trained yet: %s", exc)
                self._fitted_on = len(self._examples)
            if self._model is None:
                self.stats.unfitted += 1
                return list(range(len(programs)))
            return self._model.rank(programs)

    def _update_saved(self) -> None:
        self.stats.ranked = len(self._ranked)
        self.stats.saved = len(self._ranked - self._examples.keys())

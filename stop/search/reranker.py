"""A learned reranker for program candidates, trained on a run's own scored candidates.

RewardRanker's idea at the size of one numpy module: scoring a candidate in the sandbox
costs 0.1-10 s, so a cheap model that has watched earlier candidates pass and fail picks
which new ones are worth evaluating first. The model is linear over hashed token n-grams
and a few scalar features, trained with a pairwise logistic (RankNet) loss; candidates the
previous model ranked high but that failed ("hard negatives") weigh more in the loss.
The caller retrains it on every candidate so far after each generation; `fit` is cheap.
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import re
import warnings
import zlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from stop.errors import BadInput, StopError

log = logging.getLogger(__name__)

# Bump FORMAT_VERSION whenever the features change (tokenizer, hashing, scalars): saved
# weights are only meaningful for the exact features they were trained on.
FORMAT_VERSION = 1
N_BUCKETS = 1 << 14
N_SCALARS = 5
N_FEATURES = N_BUCKETS + N_SCALARS
MAX_NGRAM = 3  # trigrams tell `range(n - 1):` (a loop header) from `fib(n - 1)` (a call)

MIN_EXAMPLES = 4
MAX_EXAMPLES = 1000  # the newest ones are kept: a bigger kernel costs seconds, not ms
MAX_PAIRS = 20_000
MARGIN = 0.01  # ok scores closer than this fraction of their range count as a tie
HARD_TOP_FRACTION = 0.25  # "ranked high" by the previous model: its top quarter
HARD_NEGATIVE_WEIGHT = 3.0
L2 = 1e-3
MAX_STEPS = 300  # about 100 reach TOLERANCE on a few hundred real-size programs
TOLERANCE = 1e-7  # relative change of the dual weights per step

# Identifiers (Unicode too), numbers (1_000, 0x1f, 1e-3 as three tokens is fine),
# multi-character operators, then any other single non-space character.
_TOKEN = re.compile(r"[^\W\d]\w*|\d[\w.]*|\*\*=?|//=?|>>=?|<<=?|->|[-+*/%&|^<>=!:@]=|[^\s\w]")


class NotEnoughData(StopError):
    """Too few scored candidates, or no two with different outcomes: nothing to learn from.

    Never fatal: the caller evaluates every candidate, as it would without a reranker.
    """


class Scored(BaseModel):
    """One evaluated candidate. Higher score is better; status "ok" or a failure kind
    ("wrong_answer", "crash", "timeout", "syntax_error", "no_code", ...)."""

    model_config = ConfigDict(extra="forbid")

    program: str
    score: float
    status: str


class RerankerRecord(BaseModel):
    """The saved weights: sparse, since only buckets seen in training are ever non-zero."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    n_buckets: int = N_BUCKETS
    n_scalars: int = N_SCALARS
    max_ngram: int = MAX_NGRAM
    indices: list[int]
    weights: list[FiniteFloat]
    hard_negatives: int = Field(ge=0)
    pairs: int = Field(ge=0)


def _parses(program: str) -> bool:
    try:
        with warnings.catch_warnings():  # invalid escapes warn; they are not our business
            warnings.simplefilter("ignore")
            ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: spreads every input bit over every output bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


_PRIME = np.uint64(0x100000001B3)


@functools.lru_cache(maxsize=1024)  # >= MAX_EXAMPLES: retraining sees the same programs again
def _features(program: str) -> tuple[np.ndarray, np.ndarray]:
    """Sparse feature vector (indices, values): L2-normalized signed hashed n-grams, then
    the scalars. The arrays are shared through the cache and must not be modified."""
    tokens = _TOKEN.findall(program)
    # crc32, not hash(): Python salts str hashes per process, and saved weights must mean
    # the same thing in the next process. N-gram hashes are then built from token hashes
    # in numpy (uint64 arithmetic wraps), which is ten times faster than hashing n-gram text.
    token_hash = np.array(
        [zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in tokens], dtype=np.uint64
    )
    level = _fmix(token_hash)
    grams = [level]
    for n in range(2, MAX_NGRAM + 1):
        level = _fmix(level[:-1] * _PRIME + token_hash[n - 1 :] + np.uint64(n))
        grams.append(level)
    hashes, counts = np.unique(np.concatenate(grams), return_counts=True)
    # The low bits pick the bucket, the top bit the sign; sublinear counts: a repeated
    # line is not ten times the signal.
    signed = np.where(hashes >> np.uint64(63), -1.0, 1.0) * (1.0 + np.log(counts))
    # float64, as bincount gives with weights (numpy's stubs say intp whatever the weights)
    dense: np.ndarray = np.bincount(
        (hashes & np.uint64(N_BUCKETS - 1)).astype(np.int64), signed, minlength=N_BUCKETS
    )
    idx = np.flatnonzero(dense)
    val = dense[idx]
    norm = float(np.sqrt(val @ val))
    if norm > 0:
        val /= norm
    lines = program.count("\n") + 1 if program else 0
    # Scaled to about [0, 1.5] for typical programs, the same range as the hashed part.
    scalars = np.array(
        [
            1.0 if _parses(program) else 0.0,
            math.log1p(lines) / 5,
            math.log1p(len(program)) / 10,
            math.log1p(tokens.count("def")) / 2,
            math.log1p(tokens.count("for") + tokens.count("while")) / 2,
        ]
    )
    idx = np.concatenate([idx, np.arange(N_BUCKETS, N_FEATURES)])
    val = np.concatenate([val, scalars])
    idx.flags.writeable = False
    val.flags.writeable = False
    return idx, val


def _batch(programs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features of many programs as coordinate lists (rows, indices, values)."""
    feats = [_features(p) for p in programs]
    if not feats:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    rows = np.repeat(np.arange(len(feats)), [len(i) for i, _ in feats])
    return rows, np.concatenate([i for i, _ in feats]), np.concatenate([v for _, v in feats])


def _margin(ok_scores: np.ndarray) -> float:
    """Ok scores closer than this tie: a small fraction of their range, and never less than
    float noise at their magnitude (1e-9 relative)."""
    if ok_scores.size == 0:
        return 0.0
    spread = float(ok_scores.max() - ok_scores.min())
    return max(MARGIN * spread, 1e-9 * max(1.0, float(np.abs(ok_scores).max())))


def _pairs(ok: np.ndarray, score: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (better, worse) pair: ok beats failed; ok beats ok by more than the margin.
    Two failures are not ordered: how a program fails says little about how close it was."""
    with np.errstate(invalid="ignore"):  # nan and inf - inf compare False: no pair
        both_ok = ok[:, None] & ok[None, :] & (score[:, None] - score[None, :] > margin)
    better = both_ok | (ok[:, None] & ~ok[None, :])
    rows, cols = np.nonzero(better)
    return rows, cols


def _hard_negatives(prior: np.ndarray, ok: np.ndarray, score: np.ndarray, margin: float):
    """Candidates the previous model put in its top quarter that failed or scored below
    the median ok score."""
    top = max(1, math.ceil(len(prior) * HARD_TOP_FRACTION))
    high = np.zeros(len(prior), dtype=bool)
    high[np.argsort(-prior, kind="stable")[:top]] = True
    finite_ok = score[ok & np.isfinite(score)]
    low = np.zeros(len(prior), dtype=bool)
    if finite_ok.size:
        with np.errstate(invalid="ignore"):
            low = ok & (score < np.median(finite_ok) - margin)
    return high & (~ok | low)


class Reranker:
    """A linear scorer over program features. Build it with `fit` or `from_json`."""

    MIN_EXAMPLES = MIN_EXAMPLES

    def __init__(self, weights: np.ndarray, hard_negatives: int = 0, pairs: int = 0) -> None:
        if weights.shape != (N_FEATURES,):
            raise BadInput(f"reranker weights have shape {weights.shape}, not ({N_FEATURES},)")
        self._w = np.array(weights, dtype=np.float64)
        self._w.flags.writeable = False
        self.hard_negatives = hard_negatives  # training candidates weighted as hard negatives
        self.pairs = pairs  # training pairs used

    @classmethod
    def fit(
        cls, examples: list[Scored], previous: Reranker | None = None, seed: int = 0
    ) -> Reranker:
        """Train on scored candidates, oldest first; `previous` (the last generation's
        reranker) marks the hard negatives. Deterministic given the data and the seed."""
        if len(examples) < cls.MIN_EXAMPLES:
            raise NotEnoughData(f"{len(examples)} scored candidates, need {cls.MIN_EXAMPLES}")
        examples = examples[-MAX_EXAMPLES:]
        n = len(examples)
        ok = np.array([e.status == "ok" for e in examples])
        score = np.array([e.score for e in examples], dtype=np.float64)
        finite = score[ok & np.isfinite(score)]
        margin = _margin(finite)
        better, worse = _pairs(ok, score, margin)
        if better.size == 0:
            raise NotEnoughData("no two scored candidates differ in outcome")
        rng = np.random.default_rng(seed)
        if better.size > MAX_PAIRS:
            keep = np.sort(rng.choice(better.size, size=MAX_PAIRS, replace=False))
            better, worse = better[keep], worse[keep]

        rows, idx, val = _batch([e.program for e in examples])
        hard = np.zeros(n, dtype=bool)
        if previous is not None:
            hard = _hard_negatives(previous._score(rows, idx, val, n), ok, score, margin)
        pair_weight = np.where(hard[worse], HARD_NEGATIVE_WEIGHT, 1.0)

        # Dense over the columns seen in training only; the optimum lies in the span of
        # the training rows (w = X^T alpha), so descend on alpha with the n x n kernel:
        # each step costs n^2, not n x features.
        used = np.zeros(N_FEATURES, dtype=bool)
        used[idx] = True
        cols = np.flatnonzero(used)
        x = np.zeros((n, cols.size))
        x[rows, np.searchsorted(cols, idx)] = val
        alpha = _descend(x @ x.T, better, worse, pair_weight)
        weights = np.zeros(N_FEATURES)
        weights[cols] = x.T @ alpha
        log.debug(
            "reranker: %d candidates, %d pairs, %d hard negatives, %d features",
            n,
            better.size,
            int(hard.sum()),
            cols.size,
        )
        return cls(weights, hard_negatives=int(hard.sum()), pairs=int(better.size))

    def _score(self, rows: np.ndarray, idx: np.ndarray, val: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(rows, weights=self._w[idx] * val, minlength=n)

    def predict(self, programs: list[str]) -> list[float]:
        """One score per program; higher is more promising. Only the order means anything."""
        return self._score(*_batch(programs), len(programs)).tolist()

    def rank(self, programs: list[str]) -> list[int]:
        """Indices of the programs, most promising first; ties keep their input order."""
        scores = np.asarray(self.predict(programs))
        return np.argsort(-scores, kind="stable").tolist()

    def select(self, programs: list[str], k: int) -> list[int]:
        """The indices of the k most promising programs (all of them when fewer), best first."""
        if k < 0:
            raise BadInput(f"cannot select {k} candidates")
        return self.rank(programs)[:k]

    def to_json(self) -> str:
        nonzero = np.flatnonzero(self._w)
        return RerankerRecord(
            indices=nonzero.tolist(),
            weights=self._w[nonzero].tolist(),
            hard_negatives=self.hard_negatives,
            pairs=self.pairs,
        ).model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Reranker:
        try:
            record = RerankerRecord.model_validate_json(text)
        except ValidationError as e:
            raise BadInput(f"not a reranker record: {e}") from e
        found = (record.format_version, record.n_buckets, record.n_scalars, record.max_ngram)
        wanted = (FORMAT_VERSION, N_BUCKETS, N_SCALARS, MAX_NGRAM)
        if found != wanted:
            raise BadInput(
                f"reranker record has (format_version, n_buckets, n_scalars, max_ngram) = "
                f"{found}; this version reads {wanted}"
            )
        indices = np.array(record.indices, dtype=np.int64)
        if len(record.weights) != indices.size:
            raise BadInput("reranker record: indices and weights differ in length")
        if indices.size and (indices.min() < 0 or indices.max() >= N_FEATURES):
            raise BadInput("reranker record: a weight index is out of range")
        if np.unique(indices).size != indices.size:
            raise BadInput("reranker record: a weight index repeats")
        weights = np.zeros(N_FEATURES)
        weights[indices] = record.weights
        return cls(weights, hard_negatives=record.hard_negatives, pairs=record.pairs)


def _descend(
    kernel: np.ndarray, better: np.ndarray, worse: np.ndarray, pair_weight: np.ndarray
) -> np.ndarray:
    """Minimize sum_p c_p log(1 + exp(s_worse - s_better)) / sum_p c_p + L2/2 |w|^2 over
    w = X^T alpha, where s = kernel @ alpha, by Nesterov's accelerated gradient descent."""
    n = kernel.shape[0]
    c = pair_weight / pair_weight.sum()
    diag = np.diag(kernel)
    # The loss Hessian is at most (1/4) sum_p c_p d_p d_p^T, whose trace (a bound on its top
    # eigenvalue) is the weighted mean |d_p|^2 with d_p = x_better - x_worse.
    dist = diag[better] + diag[worse] - 2 * kernel[better, worse]
    lipschitz = 0.25 * float(c @ dist) + L2
    step = 1.0 / lipschitz
    root_kappa = math.sqrt(lipschitz / L2)
    momentum = (root_kappa - 1) / (root_kappa + 1)
    alpha = np.zeros(n)
    ahead = alpha
    for _ in range(MAX_STEPS):
        s = kernel @ ahead
        # d loss / d margin for margin = s_better - s_worse is -c * sigmoid(-margin).
        # Clipped so exp cannot overflow; sigmoid is flat out there anyway.
        pull = c / (1.0 + np.exp(np.clip(s[better] - s[worse], -50.0, 50.0)))
        grad = np.bincount(worse, pull, minlength=n) - np.bincount(better, pull, minlength=n)
        new = ahead - step * (grad + L2 * ahead)
        ahead = new + momentum * (new - alpha)
        moved = float(np.max(np.abs(new - alpha)))
        alpha = new
        if moved <= TOLERANCE * (1.0 + float(np.max(np.abs(alpha)))):
            break
    return alpha


def evaluation_savings(reranker: Reranker, examples: list[Scored]) -> float:
    """The fraction of evaluations saved by evaluating `examples` in the reranker's order
    and stopping at the best ok one, against evaluating them all (0.0: none saved, also
    when none is ok). For benchmarks on held-out candidates whose scores are known."""
    ok = [i for i, e in enumerate(examples) if e.status == "ok" and math.isfinite(e.score)]
    if not ok:
        return 0.0
    best = max(examples[i].score for i in ok)
    order = reranker.rank([e.program for e in examples])
    position = next(p for p, i in enumerate(order) if i in ok and examples[i].score == best)
    return 1.0 - (position + 1) / len(examples)

"""The real embedded model (Gemma 3 270M via llama-cpp-python), end to end. Slow-ish:
about half a minute on 2 cores. It runs in CI: setup installs the model."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import FIB, run_stop


def test_stop_improve_on_the_embedded_model(tmp_path):
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--utility",
        "speed",
        "--json",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--samples",
        "2",
        "--budget",
        "3",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["usage"]["calls"] == 2 and out["usage"]["cached"] == 0
    assert out["usage"]["completion_tokens"] > 0
    exchanges = (Path(out["run_dir"]) / "llm.jsonl").read_text().splitlines()
    assert len(exchanges) == 2
    for line in exchanges:
        # The local backend answers with a fenced block whatever the model wrote.
        assert json.loads(line)["text"].startswith("```python\n")
    assert out["candidates"], "the improver scored nothing"
    assert out["best_score"] > 0
    assert out["speedup"] >= 1.0

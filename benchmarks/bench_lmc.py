"""Benchmark: LMC batch executor vs. the reference interpreter on 100-step looping programs.

    python benchmarks/bench_lmc.py [--json] [--rows N] [--repeats R]

Prints runs per second of both and their ratio (> 1: the batch executor is faster);
--json prints [{"name", "baseline", "value", "unit", "ratio"}]. The logic lives in
stop.lmc.bench so that `stop bench lmc` can call it.
"""

from __future__ import annotations

import argparse
import json
import logging

from stop.lmc.bench import bench_lmc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rows", type=int, default=16384, help="(program, input) pairs")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; best is kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")
    results = bench_lmc(rows=args.rows, repeats=args.repeats)
    if args.json:
        print(json.dumps(results))
        return
    for result in results:
        print(
            f"{result['name']}: {result['value']:,.0f} {result['unit']} vs. reference "
            f"{result['baseline']:,.0f} {result['unit']}: {result['ratio']:.1f}x"
        )


if __name__ == "__main__":
    main()

"""Run every benchmark: ``python -m bench`` at full size, ``python -m bench --smoke`` scaled down.

Each benchmark prints JSON and writes JSON plus a PNG to ``bench/results`` (or $INVSAGA_BENCH_RESULTS).
Run one alone with ``python -m bench.<name> --help``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

#: name -> (full-size arguments, smoke arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "hot_row": ([], ["--seconds", "1", "--callers", "4,16"]),
    "buckets": ([], ["--rows", "1,2", "--callers", "8", "--seconds", "1"]),
    "spread": ([], ["--skus", "2000", "--callers", "8", "--seconds", "1"]),
    "saga": ([], ["--checkouts", "8", "--concurrency", "4", "--rounds", "1"]),
    "flash_sale": ([], ["--buyers", "150", "--units", "20", "--connections", "16", "--resales", "2"]),
    "size": ([], ["--skus", "20000", "--shards", "2", "--reads", "200"]),
    "bulk_import": ([], ["--rows", "20000", "--shards", "2"]),
    "order_list": ([], ["--orders", "5000", "--reads", "30"]),
    "relay": ([], ["--skus", "2000", "--callers", "8", "--seconds", "1", "--rounds", "1"]),
    "reshard": (
        [],
        [
            *("--skus", "2000", "--traffic-skus", "200", "--callers", "4"),
            *("--warmup-seconds", "1", "--baseline-seconds", "2", "--after-seconds", "1"),
        ],
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    summary = {}
    for name in args.names or list(BENCHMARKS):
        full, smoke = BENCHMARKS[name]
        module = importlib.import_module(f"bench.{name}")
        payload = module.main(smoke if args.smoke else full)
        summary[name] = payload.get("met", payload.get("targets", {}).get("met"))
    print(json.dumps({"targets_met": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

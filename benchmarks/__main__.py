"""Run a benchmark suite: ``python -m benchmarks core [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = {
    "core": "benchmarks.core",
    "dcb": "benchmarks.dcb",
    "jetstream": "benchmarks.jetstream",
    "projections": "benchmarks.projections",
    "sagas": "benchmarks.sagas",
    "failover": "benchmarks.failover",
    "order_shop": "benchmarks.order_shop",
    "baselines": "benchmarks.baselines",
    "console": "benchmarks.console",
    "audit": "benchmarks.audit",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suite", choices=sorted(SUITES), help="which suite to run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    args = parser.parse_args(argv)
    module = importlib.import_module(SUITES[args.suite])
    module.run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

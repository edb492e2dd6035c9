"""Where a batch-1 request's server CPU goes: the event-loop thread against all other threads.

`python -m benchmarks.cpu_split [--callers 64,8] [serve flags]` starts `vaeserve serve`, drives
batch-1 Decode from N callers, and reads every thread's utime + stime from /proc before and
after. The main thread runs the event loop (gRPC's Python layer, the interceptor, converters,
the batcher); the others are ONNX Runtime's, the batcher's executor and gRPC's pollers. One
process can only scale until its event-loop thread is busy all the time: that thread's µs per
request bounds one worker's requests/s, which is what `--workers` multiplies.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.scenarios import loadgen
from benchmarks.server import start_server


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of process `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def split(pid: int, target: str, callers: int, seconds: float) -> dict[str, float]:
    before = thread_cpu(pid)
    r = loadgen(target, "decode", 1, callers, seconds)
    after = thread_cpu(pid)
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    loop = used.pop(pid, 0.0)
    rest = sum(used.values())
    n = max(1, r["requests"])
    return {
        "callers": callers,
        "requests_per_s": r["images_per_s"],
        "loop_us_per_request": 1e6 * loop / n,
        "other_threads_us_per_request": 1e6 * rest / n,
        "loop_busy_fraction": loop / r["seconds"],
        "loop_bound_requests_per_s": n / loop if loop else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", default="64,8")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_split.json"))
    parser.add_argument("flags", nargs="*", help="`vaeserve serve` flags")
    args = parser.parse_args()
    server = start_server(*args.flags)
    try:
        loadgen(server.target, "decode", 1, 8, 1.0)  # first runs allocate
        rows = []
        for callers in map(int, args.callers.split(",")):
            row = split(server.process.pid, server.target, callers, args.seconds)
            rows.append(row)
            print(
                f"{callers:3d} callers: {row['requests_per_s']:6.0f} req/s; event loop "
                f"{row['loop_us_per_request']:4.0f} µs/req (busy {row['loop_busy_fraction']:.0%}"
                f", bound {row['loop_bound_requests_per_s']:,.0f} req/s), other threads "
                f"{row['other_threads_us_per_request']:4.0f} µs/req",
                flush=True,
            )
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

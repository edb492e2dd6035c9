"""Before / after: the service at another git revision against this work tree, side by side.

`python -m benchmarks.compare --base REV` checks REV out into a temporary git worktree, starts
one `vaeserve serve` from it and one from this tree (same flags, same bundled model), and drives
both with the same load generator, Decode of `--batch` rows (default 1) from N callers, in
rounds where each side goes first in every other one. It prints, per round and as medians of
per-round ratios, requests/s, p99, server CPU µs per request (utime + stime of the server
process, from /proc, over the timed window) and the mean batch the server formed. Pairing
cancels the slow drift of a shared machine's speed.

The base runs from a tree of symlinks on PYTHONPATH laid out as pyproject.toml's package-dir
maps the folders into `vaeserve`, so no second virtual environment is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import tomllib

from benchmarks.scenarios import loadgen

REPO = Path(__file__).resolve().parent.parent


def checkout(rev: str, into: Path) -> Path:
    """A worktree of `rev` under `into`, and beside it a PYTHONPATH folder whose `vaeserve`
    package is that worktree's folders as pyproject.toml maps them."""
    tree = into / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True
    )
    models = REPO / "vaeserve" / "models"  # package data (the bundled model) may be untracked
    if not (tree / "vaeserve" / "models").exists() and models.exists():
        (tree / "vaeserve" / "models").symlink_to(models)
    mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    path = into / "path"
    (path / "vaeserve").mkdir(parents=True)
    for entry in (tree / "vaeserve").iterdir():
        (path / "vaeserve" / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "vaeserve":
            link = path / Path(*package.split("."))
            if not link.exists():
                link.symlink_to(tree / folder)
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`vaeserve serve` on a free port, from `pythonpath` (None: this tree)."""

    def __init__(self, pythonpath: Path | None, flags: list[str]) -> None:
        port_file = Path(tempfile.mkdtemp(prefix="vaeserve-compare-")) / "ports.json"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if pythonpath is not None:
            env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
        cmd = [sys.executable, "-m", "vaeserve", "serve", "--log-level", "WARNING"]
        cmd += ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1"]
        cmd += ["--port-file", str(port_file), "--providers", "cpu", *flags]
        self.process = subprocess.Popen(cmd, env=env, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {' '.join(cmd)}")
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        self.target = f"127.0.0.1:{ports['port']}"
        self.metrics_port = ports["metrics_port"]

    def batches(self) -> tuple[float, float]:
        """(rows, runs) of the decoder so far, from /metrics."""
        text = urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read()
        values = {"sum": 0.0, "count": 0.0}
        for line in text.decode().splitlines():
            if line.startswith("vaeserve_batch_size_") and 'graph="decoder"' in line:
                series, value = line.rsplit(" ", 1)
                kind = series.split("{")[0].rsplit("_", 1)[1]
                if kind in values:
                    values[kind] += float(value)
        return values["sum"], values["count"]

    def measure(self, callers: int, batch: int, seconds: float) -> dict[str, float]:
        rows0, runs0 = self.batches()
        cpu0 = cpu_seconds(self.process.pid)
        r = loadgen(self.target, "decode", batch, callers, seconds)
        cpu = cpu_seconds(self.process.pid) - cpu0
        rows1, runs1 = self.batches()
        return {
            "requests_per_s": r["images_per_s"] / batch,
            "p99_ms": r["p99_ms"],
            "cpu_us_per_request": 1e6 * cpu / max(1, r["requests"]),
            "mean_batch": (rows1 - rows0) / max(1.0, runs1 - runs0),
        }

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def compare(
    base: Server, head: Server, callers: int, batch: int, rounds: int, seconds: float
) -> dict[str, Any]:
    rows = []
    for i in range(rounds):
        if i % 2:  # every other round the other goes first: no side always runs warmer
            later = head.measure(callers, batch, seconds)
            pair = (base.measure(callers, batch, seconds), later)
        else:
            pair = (base.measure(callers, batch, seconds), head.measure(callers, batch, seconds))
        rows.append({"base": pair[0], "head": pair[1]})
        print(
            f"{callers:3d} callers x {batch}, round {i + 1}/{rounds}: "
            + "  |  ".join(
                f"{name} {m['requests_per_s']:6.0f} req/s p99 {m['p99_ms']:5.1f} ms "
                f"{m['cpu_us_per_request']:4.0f} µs/req batch {m['mean_batch']:4.1f}"
                for name, m in zip(("base", "head"), pair, strict=True)
            ),
            flush=True,
        )
    out: dict[str, Any] = {"callers": callers, "batch": batch, "rounds": rows}
    for key in ("requests_per_s", "cpu_us_per_request", "mean_batch", "p99_ms"):
        out[key] = {
            side: statistics.median(r[side][key] for r in rows) for side in ("base", "head")
        }
        out[key]["ratio"] = statistics.median(r["head"][key] / r["base"][key] for r in rows)
    print(
        f"== {callers} callers x {batch}: head/base requests/s "
        f"{out['requests_per_s']['ratio']:.3f}, "
        f"CPU µs/request {out['cpu_us_per_request']['base']:.0f} -> "
        f"{out['cpu_us_per_request']['head']:.0f} ({out['cpu_us_per_request']['ratio']:.3f})",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--callers", default="64,8", help="comma-separated caller counts")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare.json"))
    parser.add_argument("flags", nargs="*", help="`vaeserve serve` flags for both servers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vaeserve-base-") as tmp:
        path = checkout(args.base, Path(tmp))
        base, head = Server(path, args.flags), Server(None, args.flags)
        try:
            for server in (base, head):  # first runs allocate
                loadgen(server.target, "decode", 1, 8, 1.0)
            results = [
                compare(base, head, int(c), args.batch, args.rounds, args.seconds)
                for c in args.callers.split(",")
            ]
        finally:
            base.stop()
            head.stop()
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "worktree",
                    "remove",
                    "--force",
                    str(path.parent / "tree"),
                ],
                check=False,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"base": args.base, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

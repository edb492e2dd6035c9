"""`make bench-peers`: the same decoder.onnx behind vaeserve, a plain grpc.aio server, PyTriton
and MLServer, and in-process ONNX Runtime, in paired alternating rounds.

Every server runs its own ORT session with vaeserve's options and 2 intra-op threads, and every
served figure comes from the same load generator (benchmarks.loadgen's grpc.aio callers, in a
child process). Each round measures every server once per scenario, the order reversed on odd
rounds, so slow drift of the shared machine's speed cancels out of the per-round ratios. Server
CPU time is read from /proc for the server's whole process tree inside the timed window.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.host import cpu_model
from benchmarks.inprocess import session as open_session
from benchmarks.peers import kserve, ortsession
from benchmarks.server import start_server
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.repository import ModelRepository, ModelSpec, bundled_repository
from vaeserve.service.runtime import session_options
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

log = logging.getLogger("benchmarks.peers")

THREADS = 2
MODEL = "decoder"
ROOT = Path(__file__).resolve().parents[2]
START = "<!-- peers:start -->"
END = "<!-- peers:end -->"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    batch: int
    clients: int


SCENARIOS = [
    Scenario("a", "1 client, batch 256", 256, 1),
    Scenario("b", "64 clients, batch 1", 1, 64),
    Scenario("c", "8 clients, batch 1", 1, 8),
]
INPROCESS = "in-process ORT"


# --- process-tree CPU time -------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, utime+stime+cutime+cstime in seconds)} for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        ticks = sum(int(f) for f in fields[11:15])
        out[int(entry.name)] = (int(fields[1]), ticks / TICK)
    return out


def tree(table: dict[int, tuple[int, float]], root: int) -> list[int]:
    """`root` and all its descendants (Triton's tritonserver and stubs, MLServer's workers)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def tree_cpu(table: dict[int, tuple[int, float]], root: int) -> float:
    return sum(table[p][1] for p in tree(table, root))


# --- servers -----------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """One Prometheus scrape: {series: value}."""
    from urllib.request import urlopen

    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def series_sum(values: dict[str, float], name: str, label: str = "") -> float:
    return sum(v for k, v in values.items() if k.split("{")[0] == name and label in k)


@dataclass
class Peer:
    """One running server: how to reach it, how to stop it, how to read its batches."""

    name: str
    target: str
    process: subprocess.Popen[bytes]
    protocol: str = "vaeserve"
    metrics_port: int = 0
    batches: Callable[[dict[str, float]], tuple[float, float]] | None = None  # (runs, rows)
    startup_s: float = 0.0
    pids: set[int] = field(default_factory=set)

    def batch_counts(self) -> tuple[float, float] | None:
        if self.batches is None or not self.metrics_port:
            return None
        try:
            return self.batches(scrape(self.metrics_port))
        except OSError:
            return None

    def stop(self) -> None:
        self.pids.update(tree(proc_table(), self.process.pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        time.sleep(0.5)
        alive = set(proc_table())
        for pid in self.pids & alive - {self.process.pid}:  # children left behind, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def vaeserve_batches(values: dict[str, float]) -> tuple[float, float]:
    label = 'graph="decoder"'
    return (
        series_sum(values, "vaeserve_batch_size_count", label),
        series_sum(values, "vaeserve_batch_size_sum", label),
    )


def triton_batches(values: dict[str, float]) -> tuple[float, float]:
    label = f'model="{MODEL}"'
    return (
        series_sum(values, "nv_inference_exec_count", label),
        series_sum(values, "nv_inference_count", label),
    )


def mlserver_batches(values: dict[str, float]) -> tuple[float, float]:
    return series_sum(values, "decoder_runs_total"), series_sum(values, "decoder_rows_total")


def start_vaeserve(name: str, *extra: str) -> Peer:
    server = start_server("--threads", str(THREADS), *extra, timeout=120)
    return Peer(
        name,
        server.target,
        server.process,
        metrics_port=server.metrics_port,
        batches=vaeserve_batches,
        startup_s=server.startup_s,
    )


def _spawn(
    cmd: list[str], env: dict[str, str], port_file: Path, timeout: float
) -> tuple[subprocess.Popen[bytes], dict[str, int], float]:
    """Start a server that writes its ports to `port_file`; its output goes to server.log."""
    t0 = time.perf_counter()
    logfile = port_file.with_name("server.log").open("wb")
    process = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT)
    while not port_file.exists():
        if process.poll() is not None or time.perf_counter() - t0 > timeout:
            process.kill()
            tail = port_file.with_name("server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd[:3])} did not start:\n{tail}")
        time.sleep(0.05)
    return process, json.loads(port_file.read_text()), t0


def start_plain() -> Peer:
    port_file = Path(tempfile.mkdtemp(prefix="peer-plain-")) / "ports.json"
    cmd = [sys.executable, "-m", "benchmarks.peers.plain", "--port-file", str(port_file)]
    cmd += ["--threads", str(THREADS)]
    process, ports, t0 = _spawn(cmd, dict(os.environ), port_file, 60)
    target = f"127.0.0.1:{ports['port']}"
    with grpc.insecure_channel(target) as channel:
        vae_pb2_grpc.VaeServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    return Peer("plain grpc.aio", target, process, startup_s=time.perf_counter() - t0)


def peers_libdir(python: str) -> str:
    """The peers interpreter's own lib folder (its libpython), for the Triton stub."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout


def start_kserve(name: str, python: str, module: str, decoder: Path, env: dict[str, str]) -> Peer:
    port_file = Path(tempfile.mkdtemp(prefix=f"peer-{module.rsplit('.', 1)[1]}-")) / "ports.json"
    cmd = [python, "-m", module, "--decoder", str(decoder), "--port-file", str(port_file)]
    cmd += ["--threads", str(THREADS)]
    process, ports, t0 = _spawn(cmd, env, port_file, 180)
    target = f"127.0.0.1:{ports['port']}"
    try:
        kserve.wait_ready(target, MODEL, 180, alive=lambda: process.poll() is None)
    except RuntimeError as exc:
        process.kill()
        tail = port_file.with_name("server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}\n{tail}") from None
    batches = triton_batches if "triton" in module else mlserver_batches
    peer = Peer(name, target, process, "kserve", ports["metrics_port"], batches)
    peer.startup_s = time.perf_counter() - t0
    return peer


def start_all(spec: ModelSpec, peers_python: str, skip: set[str]) -> tuple[list[Peer], dict]:
    """Every server that starts; {name: why} for those that do not."""
    decoder = spec.graph_path("decoder")
    base = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    starters: list[tuple[str, Callable[[], Peer]]] = [
        ("vaeserve", lambda: start_vaeserve("vaeserve")),
    ]
    help_text = subprocess.run(
        [sys.executable, "-m", "vaeserve", "serve", "--help"], capture_output=True, text=True
    ).stdout
    if "--workers" in help_text:
        starters.append(
            (
                "vaeserve --workers 2",
                lambda: start_vaeserve("vaeserve --workers 2", "--workers", "2"),
            )
        )
    starters.append(("plain grpc.aio", start_plain))
    if Path(peers_python).exists():
        libdir = peers_libdir(peers_python).strip()
        ld = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
        starters.append(
            (
                "PyTriton",
                lambda: start_kserve(
                    "PyTriton",
                    peers_python,
                    "benchmarks.peers.triton",
                    decoder,
                    {**base, "LD_LIBRARY_PATH": ld},
                ),
            )
        )
        starters.append(
            (
                "MLServer",
                lambda: start_kserve(
                    "MLServer", peers_python, "benchmarks.peers.mlserver_runtime", decoder, base
                ),
            )
        )
    peers, failed = [], {}
    if not Path(peers_python).exists():
        failed["PyTriton"] = failed["MLServer"] = f"no {peers_python} (make bench-peers makes it)"
    if "--workers" not in help_text:
        failed["vaeserve --workers 2"] = "`vaeserve serve --help` lists no --workers"
    for name, start in starters:
        if name in skip:
            failed[name] = "skipped (--skip)"
            continue
        try:
            peer = start()
            peers.append(peer)
            log.info("started %s at %s in %.1fs", name, peer.target, peer.startup_s)
        except Exception as exc:  # a peer that cannot start is reported, the rest still run
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.error("%s did not start: %s", name, exc)
    return peers, failed


def verify(peer: Peer, z: np.ndarray, expected: np.ndarray) -> float:
    """Max abs difference between the peer's images for `z` and in-process ORT's."""
    with grpc.insecure_channel(peer.target) as channel:
        if peer.protocol == "kserve":
            _, pb_grpc = kserve.stubs()
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = kserve.infer_request(MODEL, "z", "image", z)
            reply = stub.ModelInfer(request, timeout=30)
            images = kserve.output_array(reply, len(z), expected.shape[1:])
        else:
            stub = vae_pb2_grpc.VaeServiceStub(channel)
            reply = stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=30)
            images = to_array(reply.images, "images")
    if images.shape != expected.shape:
        raise RuntimeError(f"{peer.name}: images {images.shape}, expected {expected.shape}")
    return float(np.max(np.abs(images - expected)))


def check_options() -> None:
    """The peers' copy of the session options must be vaeserve's."""
    a, b = session_options(THREADS), ortsession.session_options(THREADS)
    names = [
        "graph_optimization_level",
        "execution_mode",
        "intra_op_num_threads",
        "inter_op_num_threads",
        "use_deterministic_compute",
        "log_severity_level",
    ]
    key = "session.intra_op.allow_spinning"
    diff = [n for n in names if getattr(a, n) != getattr(b, n)]
    if a.get_session_config_entry(key) != b.get_session_config_entry(key):
        diff.append(key)
    if diff:
        raise SystemExit(f"benchmarks/peers/ortsession.py differs from vaeserve's options: {diff}")


# --- measurements ------------------------------------------------------------------------------


def drive(peer: Peer, sc: Scenario, seconds: float) -> dict[str, Any]:
    """One loadgen run; server CPU time sampled on its start/end lines, batches around it."""
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--target", peer.target]
    cmd += ["--method", "decode", "--batch", str(sc.batch), "--concurrency", str(sc.clients)]
    cmd += ["--seconds", str(seconds), "--aio", "--announce", "--protocol", peer.protocol]
    if peer.protocol == "kserve":
        cmd += ["--model", MODEL]
    before = peer.batch_counts()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    cpu0 = cpu1 = math.nan
    last = ""
    for line in proc.stdout:
        line = line.strip()
        if line == "start":
            cpu0 = tree_cpu(proc_table(), peer.process.pid)
        elif line == "end":
            cpu1 = tree_cpu(proc_table(), peer.process.pid)
        elif line:
            last = line
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.wait(timeout=seconds + 120) != 0 or not last:
        raise RuntimeError(f"loadgen against {peer.name} failed: {stderr[-1500:]}")
    result = json.loads(last)
    after = peer.batch_counts()
    result["server_cpu_us_per_request"] = (cpu1 - cpu0) / max(result["requests"], 1) * 1e6
    result["requests_per_s"] = result["requests"] / result["seconds"]
    if before and after and after[0] > before[0]:
        result["mean_batch"] = (after[1] - before[1]) / (after[0] - before[0])
    elif peer.batches is None:  # the plain server: one run per request by construction
        result["mean_batch"] = float(sc.batch)
    return result


def in_process(session: Any, z: np.ndarray, sc: Scenario, seconds: float) -> dict[str, Any]:
    """session.run back to back in this process: batch 256 for (a), and for the batch-1
    scenarios a batch of as many rows as there are callers ("batched": what ORT gives when every
    caller's request is merged into one run). CPU time is this process's, all threads."""
    rows = sc.batch if sc.clients == 1 else sc.clients
    x = z[:rows]
    session.run(x)
    calls, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(x)
        calls += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    requests = calls * rows // sc.batch  # served requests: images / request batch
    return {
        "requests": requests,
        "seconds": elapsed,
        "images_per_s": calls * rows / elapsed,
        "requests_per_s": requests / elapsed,
        "server_cpu_us_per_request": cpu / max(requests, 1) * 1e6,
        "mean_batch": float(rows),
        "batched_rows": rows,
    }


def figure(result: dict[str, Any], sc: Scenario) -> float:
    """The scenario's headline figure: images/s for batch 256, requests/s for batch 1."""
    return float(result["images_per_s"] if sc.batch > 1 else result["requests_per_s"])


def summarize(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Medians per scenario and server, and medians of per-round ratios to three references."""
    out: dict[str, Any] = {}
    for sc in SCENARIOS:
        per: dict[str, Any] = {}
        mine = [r for r in rows if r["scenario"] == sc.key]
        rounds = sorted({r["round"] for r in mine})
        by = {(r["round"], r["server"]): r for r in mine}
        for name in names:
            got = [r for r in mine if r["server"] == name]
            if not got:
                continue

            def med(key: str, got: list[dict[str, Any]] = got) -> float | None:
                vals = [r[key] for r in got if r.get(key) is not None and not math.isnan(r[key])]
                return statistics.median(vals) if vals else None

            entry: dict[str, Any] = {
                "figure": med("figure"),
                "unit": "img/s" if sc.batch > 1 else "req/s",
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "server_cpu_us_per_request": med("server_cpu_us_per_request"),
                "mean_batch": med("mean_batch"),
                "errors": sum(r.get("errors", 0) for r in got),
            }
            for ref, key in (
                ("vaeserve", "vs_vaeserve"),
                ("plain grpc.aio", "vs_plain"),
                ("PyTriton", "vs_pytriton"),
            ):
                ratios = [
                    by[(k, name)]["figure"] / by[(k, ref)]["figure"]
                    for k in rounds
                    if (k, name) in by and (k, ref) in by and by[(k, ref)]["figure"] > 0
                ]
                entry[key] = statistics.median(ratios) if ratios else None
                entry[key + "_rounds"] = ratios
            per[name] = entry
        out[sc.key] = {"title": sc.title, "servers": per}
    return out


# --- outputs -----------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown(results: dict[str, Any]) -> str:
    """The docs/performance.md block between the peers markers."""
    m = results["machine"]
    peers = ", ".join(f"{k} {v}" for k, v in m.get("peers", {}).items()) or "absent"
    rounds = f"{results['rounds']} paired round{'s' if results['rounds'] > 1 else ''}"
    lines = [
        START,
        "## Peers: the same decoder behind other servers",
        "",
        f"`{results['command']}`, {results['date']}, {rounds} of "
        f"{results['seconds']:g} s per server and scenario (medians; the ratios are medians of "
        "per-round ratios). Machine: "
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, onnxruntime {m['onnxruntime']}, "
        f"grpcio {m['grpcio']}; peers' venv: {peers}.",
        "",
        "Every server runs decoder.onnx in its own ONNX Runtime session with vaeserve's options "
        f"({THREADS} intra-op threads, float32 images), driven by the same load generator "
        "(benchmarks/loadgen.py, grpc.aio callers on one channel, in its own process). "
        "In-process ORT is the limit: batch 256 for (a); for (b) and (c) one run of as many rows "
        "as there are callers (every request merged). Server CPU is utime+stime of the server's "
        "whole process tree in the timed window, per request; mean batch is rows per ORT run "
        "from the server's own metrics (the plain server runs each request alone).",
        "",
    ]
    for key, block in results["summary"].items():
        sc = next(s for s in SCENARIOS if s.key == key)
        unit = "img/s" if sc.batch > 1 else "req/s"
        lines += [
            f"### ({key}) {block['title']}",
            "",
            f"| server | {unit} | p50 ms | p99 ms | ÷ vaeserve | ÷ plain | ÷ PyTriton | "
            "server CPU µs/req | mean batch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, e in block["servers"].items():
            latency = name != INPROCESS
            lines.append(
                f"| {name} | {_f(e['figure'])} | "
                f"{_f(e['p50_ms'], '{:.1f}') if latency else '–'} | "
                f"{_f(e['p99_ms'], '{:.1f}') if latency else '–'} | "
                f"{_f(e['vs_vaeserve'], '{:.2f}×')} | {_f(e['vs_plain'], '{:.2f}×')} | "
                f"{_f(e['vs_pytriton'], '{:.2f}×')} | "
                f"{_f(e['server_cpu_us_per_request'])} | {_f(e['mean_batch'], '{:.1f}')} |"
            )
        lines.append("")
    if results["not_run"]:
        lines.append(
            "Not measured: " + "; ".join(f"{k}: {v}" for k, v in results["not_run"].items()) + "."
        )
        lines.append("")
    startup = ", ".join(f"{k} {v:.1f} s" for k, v in results["startup_s"].items())
    lines += [
        f"Start-up to ready: {startup}. "
        'Set-up: docs/performance-analysis.md, "Peers". Raw figures: '
        "benchmarks/results/peers.json.",
        "",
        "![peers](../benchmarks/results/peers.png)",
        END,
    ]
    return "\n".join(lines)


def write_doc(doc: Path, block: str) -> None:
    """Replace only what lies between the markers (append them when absent)."""
    text = doc.read_text() if doc.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(5 * len(SCENARIOS), 4.2))
    for ax, sc in zip(axes, SCENARIOS, strict=True):
        servers = results["summary"][sc.key]["servers"]
        names = list(servers)
        values = [servers[n]["figure"] or 0 for n in names]
        lows, highs = [], []
        for n, v in zip(names, values, strict=True):
            got = [
                r["figure"]
                for r in results["measurements"]
                if r["scenario"] == sc.key and r["server"] == n
            ]
            lows.append(v - min(got))
            highs.append(max(got) - v)
        colors = [
            "#999999" if n == INPROCESS else "#1f77b4" if n.startswith("vaeserve") else "#ff7f0e"
            for n in names
        ]
        ax.bar(range(len(names)), values, yerr=[lows, highs], color=colors, capsize=3)
        labels = [
            n
            if n == INPROCESS or servers[n]["p99_ms"] is None
            else f"{n}\np99 {servers[n]['p99_ms']:.0f} ms"
            for n in names
        ]
        ax.set_xticks(range(len(names)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"({sc.key}) {sc.title}", fontsize=10)
        ax.set_ylabel("images/s" if sc.batch > 1 else "requests/s")
    fig.suptitle("Same decoder.onnx, same load generator (median over rounds, bars: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine(peers_python: str) -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    if Path(peers_python).exists():
        code = (
            "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('nvidia-pytriton', 'mlserver', 'onnxruntime-gpu', 'uvloop', 'grpcio', 'numpy')}))"
        )
        out = subprocess.run([peers_python, "-c", code], capture_output=True, text=True)
        if out.returncode == 0:
            info["peers"] = json.loads(out.stdout)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--seconds", type=float, default=None, help="per measurement; default 2.5")
    parser.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--skip", action="append", default=[], help="a server name to leave out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 2.5)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    check_options()
    spec = ModelRepository(bundled_repository()).scan().resolve()
    session = open_session(spec, "decoder", THREADS, None)
    z = np.random.default_rng(0).standard_normal((256, spec.latent_dim)).astype(np.float32)
    expected = session.run(z[:4])[0]
    peers, not_run = start_all(spec, args.peers_python, set(args.skip))
    measurements: list[dict[str, Any]] = []
    order: list[str] = [INPROCESS] + [p.name for p in peers]
    try:
        for peer in list(peers):
            diff = verify(peer, z[:4], expected)
            log.info("%s: images match in-process ORT (max abs diff %.2g)", peer.name, diff)
            if diff > 1e-4:
                raise SystemExit(f"{peer.name} decodes differently (max abs diff {diff})")
        by_name = {p.name: p for p in peers}
        total = rounds * len(SCENARIOS) * len(order)
        done = 0
        for k in range(rounds):
            for sc in SCENARIOS:
                for name in order if k % 2 == 0 else order[::-1]:
                    if name == INPROCESS:
                        result = in_process(session, z, sc, seconds)
                    else:
                        result = drive(by_name[name], sc, seconds)
                    result.update(round=k, scenario=sc.key, server=name)
                    result["figure"] = figure(result, sc)
                    measurements.append(result)
                    done += 1
                    log.info(
                        "[%d/%d] round %d (%s) %-22s %9.0f %s  p50 %6s  p99 %6s ms  "
                        "cpu %6.0f us/req  batch %s",
                        done,
                        total,
                        k + 1,
                        sc.key,
                        name,
                        result["figure"],
                        "img/s" if sc.batch > 1 else "req/s",
                        _f(result.get("p50_ms"), "{:.1f}"),
                        _f(result.get("p99_ms"), "{:.1f}"),
                        result["server_cpu_us_per_request"],
                        _f(result.get("mean_batch"), "{:.1f}"),
                    )
    finally:
        for peer in peers:
            peer.stop()
    command = "python -m benchmarks.peers.run " + " ".join(sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(args.peers_python),
        "model": f"{spec.name} v{spec.version}",
        "threads": THREADS,
        "rounds": rounds,
        "seconds": seconds,
        "quick": args.quick,
        "startup_s": {p.name: p.startup_s for p in peers},
        "not_run": not_run,
        "summary": summarize(measurements, order),
        "measurements": measurements,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "peers.png")
    write_doc(args.doc, markdown(results))
    log.info(
        "wrote %s, %s and %s's peers block in %.0fs",
        args.out / "peers.json",
        args.out / "peers.png",
        args.doc,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    main()

"""Turn benchmark results into PNG plots and docs/performance.md (tables, targets, command)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.peers import run as peers

PEERS = (peers.START, peers.END)  # the block `make bench-peers` owns
TARGETS = {
    "service_fraction": 0.85,  # service batch-256 images/s over in-process ORT
    "batching_gain": 3.0,  # 64 concurrent batch-1 Decode: batching on / off
    "p99_ms": 50.0,
    "startup_s": 3.0,
    "rss_mb": 400.0,
}


def _k(d: dict[Any, Any], key: int) -> Any:
    """JSON turns int keys into strings; accept both."""
    return d[key] if key in d else d[str(key)]


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows."""
    rows = []
    pairs = r.get("paired_service_fraction", {})
    for method, graph in (("decode", "decoder"), ("encode", "encoder")):
        svc = _k(r["single_client"][method], 256)["images_per_s"]
        lim = _k(r["onnxruntime"][graph], 256)
        measured = f"tables: {svc:,.0f} / {lim:,.0f} img/s = {svc / lim:.0%}"
        frac = svc / lim
        if method in pairs:  # alternating rounds: the drift of the machine cancels out
            frac = pairs[method]["median_ratio"]
            rounds = ", ".join(f"{x['ratio']:.0%}" for x in pairs[method]["rounds"])
            measured = f"**{frac:.0%}** paired (median of rounds {rounds}); {measured}"
        rows.append(
            (
                f"{method.title()} batch 256 via service ≥ 85% of in-process ORT",
                measured,
                frac >= TARGETS["service_fraction"],
            )
        )
    on = _k(r["concurrency"]["batching_on"], 64)
    off = _k(r["concurrency"]["batching_off"], 64)
    gain, p99 = on["images_per_s"] / off["images_per_s"], on["p99_ms"]
    measured = (
        f"sweeps: {on['images_per_s']:,.0f} vs {off['images_per_s']:,.0f} img/s = {gain:.2f}×"
    )
    measured_p99 = f"sweep: {p99:.1f} ms"
    if "paired_batching_gain" in r:
        pg = r["paired_batching_gain"]
        gain, p99 = pg["median_gain"], pg["median_on_p99_ms"]
        rounds = ", ".join(f"{x['gain']:.2f}×" for x in pg["rounds"])
        measured = f"**{gain:.2f}×** paired (median of rounds {rounds}); {measured}"
        p99s = ", ".join(f"{x['on_p99_ms']:.1f}" for x in pg["rounds"])
        measured_p99 = f"**{p99:.1f} ms** paired (rounds {p99s}); {measured_p99}"
    rows.append(
        (
            "64 concurrent batch-1 Decode: batching ≥ 3× without",
            measured,
            gain >= TARGETS["batching_gain"],
        )
    )
    rows.append(("… and p99 latency < 50 ms (batching on)", measured_p99, p99 < TARGETS["p99_ms"]))
    st = r["startup"]
    rows.append(
        (
            "Start-up to SERVING < 3 s (default model)",
            f"{st['startup_s']:.2f} s",
            st["startup_s"] < TARGETS["startup_s"],
        )
    )
    rows.append(
        (
            "Resident memory after warm-up < 400 MB, no torch",
            f"{st['rss_after_warmup_mb']:.0f} MB, torch loaded: {st['torch_loaded']}",
            st["rss_after_warmup_mb"] < TARGETS["rss_mb"] and not st["torch_loaded"],
        )
    )
    for graph in ("encoder", "decoder"):
        o, t = _k(r["onnxruntime"][graph], 64), _k(r["pytorch"][graph], 64)
        rows.append(
            (
                f"ORT ≥ PyTorch eager, {graph} batch 64",
                f"{o:,.0f} vs {t:,.0f} img/s = {o / t:.2f}×",
                o >= t,
            )
        )
    return rows


def plots(r: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, graph, method in ((axes[0], "encoder", "encode"), (axes[1], "decoder", "decode")):
        batches = sorted(int(b) for b in r["onnxruntime"][graph])
        ax.plot(
            batches,
            [_k(r["onnxruntime"][graph], b) for b in batches],
            "o-",
            label="ONNX Runtime in-process (limit)",
        )
        ax.plot(
            batches,
            [_k(r["pytorch"][graph], b) for b in batches],
            "s--",
            label="PyTorch eager in-process",
        )
        ax.plot(
            batches,
            [_k(r["single_client"][method], b)["images_per_s"] for b in batches],
            "^-",
            label=f"service {method.title()} (gRPC, 1 client)",
        )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(graph)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "throughput.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for key, label in (("batching_on", "dynamic batching on"), ("batching_off", "off")):
        levels = sorted(int(c) for c in r["concurrency"][key])
        axes[0].plot(
            levels,
            [_k(r["concurrency"][key], c)["images_per_s"] for c in levels],
            "o-",
            label=label,
        )
        axes[1].plot(
            levels, [_k(r["concurrency"][key], c)["p99_ms"] for c in levels], "o-", label=label
        )
    for ax, ylabel in ((axes[0], "images / s"), (axes[1], "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients (batch-1 Decode)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "concurrency.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def markdown(r: dict[str, Any], plot_paths: list[Path], doc_dir: Path) -> str:
    m = r["machine"]
    lines = [
        "# Performance",
        "",
        "Made by `" + r["command"] + "` (`python -m benchmarks.run`), which wrote this page, "
        "`benchmarks/results/results.json` and the plots below "
        f"in {r['seconds']:.0f} s. Every ratio compares figures from that same run.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cpus']} usable); providers "
        f"{r.get('providers', 'cpu')}; "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}, "
        f"numpy {m['numpy']}. Model: {r['model']} (28×28×1, latent 2). ONNX Runtime and "
        f"PyTorch use {r['threads']} threads; the server and the load generator share the "
        "machine's cores. Load comes from separate processes; figures are medians of repeats "
        "(in-process) or totals over a timed window (service).",
        "",
        "What the figures mean, what was changed because of them (with before/after figures) "
        "and why targets are missed: [performance-analysis.md](performance-analysis.md).",
        "",
        "The service and batching ratios are judged on *paired* rounds (`benchmarks/paired.py`): "
        "each round measures one side of the ratio and then the other within seconds, and the "
        "median of the per-round ratios is reported, because the speed of this virtual "
        "machine's cores drifts by 15-30% over the minutes between the tables below. The ratio "
        "of the table entries is shown beside it.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in targets(r)]
    lines += [
        "",
        "## In-process: the limit and the alternative (images/s)",
        "",
        "| batch | ORT encoder | PyTorch encoder | ratio | ORT decoder | PyTorch decoder | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in sorted(int(x) for x in r["onnxruntime"]["encoder"]):
        oe, te = _k(r["onnxruntime"]["encoder"], b), _k(r["pytorch"]["encoder"], b)
        od, td = _k(r["onnxruntime"]["decoder"], b), _k(r["pytorch"]["decoder"], b)
        lines.append(
            f"| {b} | {oe:,.0f} | {te:,.0f} | {oe / te:.2f}× | {od:,.0f} | "
            f"{td:,.0f} | {od / td:.2f}× |"
        )
    lines += [
        "",
        "## The service, one client (typed Python client over loopback gRPC)",
        "",
        "| RPC | batch | images/s | % of in-process ORT | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, graph in (("encode", "encoder"), ("decode", "decoder"), ("sample", "decoder")):
        for b in sorted(int(x) for x in r["single_client"][method]):
            s = _k(r["single_client"][method], b)
            frac = s["images_per_s"] / _k(r["onnxruntime"][graph], b)
            lines.append(
                f"| {method.title()} | {b} | {s['images_per_s']:,.0f} | {frac:.0%} | "
                f"{s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} |"
            )
    lines += [
        "",
        "## Concurrency: batch-1 Decode from N clients",
        "",
        "| clients | batching on img/s | p50 | p99 | batching off img/s | p50 | p99 | gain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    on, off = r["concurrency"]["batching_on"], r["concurrency"]["batching_off"]
    for c in sorted(int(x) for x in on):
        a, b = _k(on, c), _k(off, c)
        lines.append(
            f"| {c} | {a['images_per_s']:,.0f} | {a['p50_ms']:.1f} | "
            f"{a['p99_ms']:.1f} | {b['images_per_s']:,.0f} | {b['p50_ms']:.1f} | "
            f"{b['p99_ms']:.1f} | {a['images_per_s'] / b['images_per_s']:.2f}× |"
        )
    st, pay = r["startup"], r["payload_bytes_per_image"]
    lines += [
        "",
        "Batching off means `--max-batch-size 1`: every request is its own ONNX Runtime run.",
        "",
        "## Start-up, memory, payload",
        "",
        f"- Start-up, process start to readiness SERVING: median {st['startup_s']:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in st['startup_runs_s'])}).",
        f"- Resident memory after warm-up: {st['rss_after_warmup_mb']:.0f} MB; after the "
        f"single-client runs: {r['rss_under_load_mb']:.0f} MB. torch mapped into the "
        f"server: {st['torch_loaded']}.",
        f"- Bytes per 28×28 image in a Decode response: float32 {pay['float32']:.0f}, "
        f"uint8 {pay['uint8']:.0f}, PNG {pay['png']:.0f}.",
        "",
        "## Plots",
        "",
    ]
    for p in plot_paths:
        lines.append(f"![{p.stem}]({os.path.relpath(p, doc_dir)})")
    return "\n".join(lines) + "\n"


def kept_blocks(old: str, markers: tuple[tuple[str, str], ...] = (PEERS,)) -> str:
    """The blocks other scripts own in the page being rewritten (between their markers), to be
    appended to the new page: `make bench` must not erase `make bench-peers`'s figures."""
    blocks = []
    for start, end in markers:
        if start in old and end in old.split(start, 1)[1]:
            blocks.append(start + old.split(start, 1)[1].split(end, 1)[0] + end)
    return "\n\n".join(blocks)

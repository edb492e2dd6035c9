"""`vaeserve export`: checkpoint -> encoder.onnx + decoder.onnx + model.json, checked for parity.

The graphs hold no randomness: the reparameterization noise and prior samples are the caller's,
so served outputs are deterministic and seeds reproducible. Each export is written to a temporary
folder and moved into place only after every check passed, so a repository never holds a
half-written or failing model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vaeserve import __version__
from vaeserve.errors import UserError
from vaeserve.export import metadata as md
from vaeserve.export.onnx_eval import cpu_session, onnx_elbo, run_batched
from vaeserve.export.subpixel import rewrite_decoder
from vaeserve.imaging import to_float
from vaeserve.training.checkpoint import load_model, train_config_of
from vaeserve.training.collapse import ADVICE, collapse_verdict
from vaeserve.training.data import DatasetError
from vaeserve.training.loss import MIN_LOG_SCALE
from vaeserve.training.model import VAE
from vaeserve.training.train import load_split

log = logging.getLogger(__name__)

OPSET = 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_BATCH_SIZES = (1, 7, 1024)


class ExportError(UserError, ValueError):
    """An export that failed a check; nothing was written to the repository."""


@dataclass
class ExportResult:
    directory: Path
    meta: dict[str, Any]


def export_model(
    checkpoint: Path,
    repository: Path,
    name: str,
    version: int,
    *,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    tolerance: float = 1e-4,
    optimize: bool = False,
    fp16: bool = False,
    data: str | None = None,
    command: str | None = None,
    force: bool = False,
    allow_collapsed: bool = False,
) -> ExportResult:
    """Export, check (onnx.checker, parity on random and real inputs at every batch size), write
    metadata, and move the finished model into `repository/name/version`.

    A checkpoint whose run collapsed (training/collapse.py) is refused unless `allow_collapsed`:
    its decoder ignores z, so every served sample would be the same blur."""
    if not NAME_RE.match(name):
        raise ExportError(f"model name {name!r}: use letters, digits, '_', '.', '-' (max 64)")
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    if min(batch_sizes) < 1:
        raise ExportError(f"batch sizes must be >= 1, got {batch_sizes}")
    model, state = load_model(checkpoint)
    if not allow_collapsed:
        _refuse_collapsed(Path(checkpoint), state)
    target = Path(repository) / name / str(version)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists (use --force to replace it)")
    work = target.with_name(f".{version}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        meta = _export_into(
            work, model, state, name, version, batch_sizes, tolerance, data, command
        )
        if optimize:
            meta["variants"].update(_optimized_copies(work, batch_sizes, tolerance))
        if fp16:
            meta["variants"].update(_fp16_variants(work, batch_sizes))
        for variant in meta["variants"].values():
            variant["sha256"] = md.sha256_file(work / variant["file"])
        md.write_model_json(work, meta)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s version %d to %s", name, version, target)
    return ExportResult(target, meta)


def _refuse_collapsed(checkpoint: Path, state: dict[str, Any]) -> None:
    """One-line ExportError when the checkpoint's history (or the metrics.json beside it) says
    the posterior collapsed; checkpoints from before the measure (no `active_units`) pass."""
    metrics = None
    metrics_path = checkpoint.with_name("metrics.json")
    if metrics_path.is_file():
        try:
            loaded = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            loaded = None
        # only a metrics.json of this very run: same number of epochs as the checkpoint
        if isinstance(loaded, dict) and loaded.get("epochs") == state.get("epoch"):
            metrics = loaded
    reason = collapse_verdict(list(state.get("history") or []), metrics)
    if reason is not None:
        raise ExportError(
            f"{checkpoint}: posterior collapse ({reason}): the decoder ignores z and every "
            f"sample would be the same blur; retrain ({ADVICE}), or pass --allow-collapsed to "
            "export it anyway"
        )


def _export_into(
    work: Path,
    model: VAE,
    state: dict[str, Any],
    name: str,
    version: int,
    batch_sizes: tuple[int, ...],
    tolerance: float,
    data: str | None,
    command: str | None,
) -> dict[str, Any]:
    cfg = model.config
    c, h, w = cfg.image_shape
    t0 = time.perf_counter()
    _export_graph(
        model.encoder,
        torch.rand(2, c, h, w),
        work / md.ENCODER,
        [md.ENCODER_INPUT],
        list(md.ENCODER_OUTPUTS),
    )
    _export_graph(
        model.decoder,
        torch.randn(2, cfg.latent_dim),
        work / md.DECODER,
        [md.DECODER_INPUT],
        [md.DECODER_OUTPUT],
    )
    rewrite = _subpixel_decoder(work / md.DECODER)
    log.info("traced both graphs in %.1f s", time.perf_counter() - t0)

    real, real_source, val_images = _real_inputs(model, state, data, max(batch_sizes))
    parity = _check_parity(model, work, batch_sizes, tolerance, real)
    parity["real_inputs"] = real_source

    encoder, decoder = cpu_session(work / md.ENCODER), cpu_session(work / md.DECODER)
    scale = likelihood_scale(model)
    metrics: dict[str, Any] = {"training": _final_metrics(state)}
    if val_images is not None:
        metrics["onnx_validation"] = onnx_elbo(encoder, decoder, val_images, seed=0, scale=scale)

    train_cfg = state["train_config"]
    meta: dict[str, Any] = {
        "format": md.FORMAT,
        "name": name,
        "version": version,
        "latent_dim": cfg.latent_dim,
        "image": {
            "channels": c,
            "height": h,
            "width": w,
            "layout": "NCHW",
            "dtype": "float32",
            "range": [0.0, 1.0],
        },
        "likelihood": cfg.likelihood,
        "prior": "standard normal",
        "opset": OPSET,
        "graphs": md.graph_signatures(c, h, w, cfg.latent_dim),
        "training": {
            "model_config": state["model_config"],
            "train_config": train_cfg,
            "epochs": state["epoch"],
        },
        "dataset": state.get("dataset", {}),
        "metrics": metrics,
        "parity": parity,
        "exporter": {
            "vaeserve": __version__,
            "torch": str(torch.__version__),
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "python": sys.version.split()[0],
            "decoder_rewrite": rewrite,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variants": {},
    }
    if scale is not None:
        meta["likelihood_scale"] = scale
    if command:
        meta["command"] = command
    props = md.metadata_props(meta)  # before any digest is added: the same for both graphs
    for graph in ("encoder", "decoder"):
        path = work / meta["graphs"][graph]["file"]
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, props)
        proto.doc_string = f"vaeserve {graph} for model {name} version {version}"
        onnx.save(proto, str(path))
        onnx.checker.check_model(str(path), full_check=True)
        meta["graphs"][graph]["sha256"] = md.sha256_file(path)
    return meta


# Loggers that narrate every rewrite pass at INFO; the export reports its own summary instead.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


def _export_graph(
    module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]
) -> None:
    """Trace with torch's (dynamo) exporter, batch axis dynamic, as one self-contained file."""
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # "torchvision is not installed. Skipping torchvision::roi_align": irrelevant to this model.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        # torch's internals warn about their own pytree API: nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
        program = torch.onnx.export(
            module.eval(),
            (example,),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError(f"{path.name}: the exporter returned nothing")
    program.save(str(path), external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the graph: {exc}") from None


def _subpixel_decoder(path: Path) -> str:
    """Put the decoder's upsampling in sub-pixel form (export/subpixel.py) when it has the
    book's pattern; the parity check that follows compares the result with PyTorch."""
    proto = onnx.load(str(path))
    rewritten = rewrite_decoder(proto)
    if not rewritten:
        return "none"
    left = sum(node.op_type == "ConvTranspose" for node in proto.graph.node)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"{path.name}: onnx.checker rejected the sub-pixel decoder: {exc}"
        ) from None
    log.info("sub-pixel decoder: %d upsampling(s) rewritten, %d left", rewritten, left)
    return "subpixel" if not left else f"subpixel ({rewritten} of {rewritten + left})"


def _real_inputs(
    model: VAE, state: dict[str, Any], data: str | None, count: int
) -> tuple[np.ndarray, str, np.ndarray | None]:
    """Validation images of the run's own data when it can be read; else the model's samples.

    Returns (images as float32 for parity, a description, uint8 validation images or None).
    """
    cfg = train_config_of(state)
    if data is not None:
        cfg = cfg.__class__(**{**cfg.to_dict(), "data": data})
    c, h, w = model.config.image_shape
    try:
        _, _, val = load_split(cfg, channels=c, height=h, width=w)
    except DatasetError as exc:
        log.warning("training data not readable (%s): checking parity on generated images", exc)
        val = None
    if val is not None and len(val):
        picks = np.resize(np.arange(len(val)), count)  # repeat if fewer than `count`
        images = to_float(val.images[picks])
        return images, f"{len(val)} validation images of {cfg.data}", val.images
    with torch.no_grad():
        z = torch.randn(count, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
        images = model.decode(z).numpy()
    return images, "images decoded from prior samples (training data not found)", None


@torch.no_grad()
def _check_parity(
    model: VAE, work: Path, batch_sizes: tuple[int, ...], tolerance: float, real: np.ndarray
) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| over random and real inputs at each batch size."""
    rng = np.random.default_rng(0)
    c, h, w = model.config.image_shape
    encoder, decoder = cpu_session(work / md.ENCODER), cpu_session(work / md.DECODER)
    result: dict[str, Any] = {
        "tolerance": tolerance,
        "batch_sizes": list(batch_sizes),
        "encoder": {},
        "decoder": {},
    }
    for n in batch_sizes:
        for kind, images in (
            ("random", rng.random((n, c, h, w), dtype=np.float32)),
            ("real", real[:n]),
        ):
            ref_mu, ref_lv = (t.numpy() for t in model.encode(torch.from_numpy(images)))
            (mu, lv) = encoder.run(None, {md.ENCODER_INPUT: images})
            enc_diff = float(max(np.abs(mu - ref_mu).max(), np.abs(lv - ref_lv).max()))
            # decoder on prior-like draws (3 sigma wide) and on real images' encodings
            z = (
                (rng.standard_normal((n, model.config.latent_dim)) * 3).astype(np.float32)
                if kind == "random"
                else ref_mu
            )
            ref_img = model.decode(torch.from_numpy(z)).numpy()
            (img,) = decoder.run(None, {md.DECODER_INPUT: z})
            if img.shape != (n, c, h, w) or mu.shape != (n, model.config.latent_dim):
                raise ExportError(f"batch {n}: wrong output shapes {mu.shape}, {img.shape}")
            dec_diff = float(np.abs(img - ref_img).max())
            result["encoder"][f"{kind}@{n}"] = enc_diff
            result["decoder"][f"{kind}@{n}"] = dec_diff
    for graph in ("encoder", "decoder"):
        worst = max(result[graph].values())
        result[f"{graph}_max_abs_diff"] = worst
        log.info(
            "parity %s: max |onnxruntime - torch| = %.2e over %s",
            graph,
            worst,
            ", ".join(result[graph]),
        )
        if worst > tolerance:
            raise ExportError(
                f"{graph} parity failed: max |onnxruntime - torch| = {worst:.3e} > {tolerance:g}"
            )
    return result


def _optimized_copies(work: Path, batch_sizes: tuple[int, ...], tolerance: float) -> dict[str, Any]:
    """ONNX Runtime's extended graph optimizations saved offline (CPU provider), so a server
    can skip them at start-up; checked for parity against the plain graphs."""
    variants = {}
    for graph in ("encoder", "decoder"):
        src = work / f"{graph}.onnx"
        dst = work / f"{graph}.optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        diff = _variant_diff(src, dst, batch_sizes)
        if diff > tolerance:
            raise ExportError(f"{dst.name}: parity {diff:.3e} > {tolerance:g}")
        variants[f"{graph}_optimized"] = {
            "file": dst.name,
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "note": "optimized for CPUExecutionProvider (ORT_ENABLE_EXTENDED)",
        }
    return variants


# float16 tolerances: decoder pixels in [0, 1] (5e-3 is 1.3 grey levels of 255); encoder
# outputs in latent units, where the prior's standard deviation is 1.
FP16_TOLERANCE = {"decoder": 5e-3, "encoder": 2e-2}


def _fp16_variants(work: Path, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """float16 encoder and decoder for GPUs (float32 inputs and outputs kept, so clients and the
    service see no change), each checked against its float32 graph."""
    from onnxconverter_common import float16

    variants = {}
    for graph in ("encoder", "decoder"):
        src, dst = work / f"{graph}.onnx", work / f"{graph}.fp16.onnx"
        proto = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(proto, str(dst))
        onnx.checker.check_model(str(dst), full_check=True)
        diff = _variant_diff(src, dst, batch_sizes)
        tolerance = FP16_TOLERANCE[graph]
        if diff > tolerance:
            raise ExportError(f"{dst.name}: parity {diff:.3e} > {tolerance:g}")
        variants[f"{graph}_fp16"] = {
            "file": dst.name,
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "note": "float16 weights and compute; float32 input and output",
        }
    return variants


def _variant_diff(reference: Path, variant: Path, batch_sizes: tuple[int, ...]) -> float:
    rng = np.random.default_rng(1)
    ref, var = cpu_session(reference), cpu_session(variant)
    shape = [d if isinstance(d, int) else 1 for d in ref.get_inputs()[0].shape]
    worst = 0.0
    for n in batch_sizes:
        x = rng.random((n, *shape[1:]), dtype=np.float32)
        if len(shape) == 2:  # latents: prior-like
            x = (x - 0.5) * 6
        for a, b in zip(run_batched(ref, x), run_batched(var, x), strict=True):
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def likelihood_scale(model: VAE) -> list[float] | None:
    """A Gaussian likelihood's fitted sigma per channel (model.json's `likelihood_scale`): it
    lives outside both graphs, whose images are the Gaussian's mean; None for Bernoulli."""
    if model.config.likelihood != "gaussian":
        return None
    return [float(v) for v in torch.exp(model.log_scale.detach().clamp(min=MIN_LOG_SCALE))]


def _final_metrics(state: dict[str, Any]) -> dict[str, float]:
    history = state.get("history") or []
    last = history[-1] if history else {}
    return {k: v for k, v in last.items() if k.startswith(("val_", "train_"))}

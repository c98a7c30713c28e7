"""Model benchmarks: training, data pipeline, encoder inference, FLOPs and the machine's peak.

Training throughput goes through the bundle's engine and through a plain PyTorch loop; the data
pipeline runs with and without caching; the encoder runs eager, as TorchScript and in ONNX Runtime.

Each suite returns rows ``{"name", "value", "unit", "target", "passed"}`` like :mod:`bundle.benchmarks.runner`.
Measurements that are compared (bundle vs plain, cached vs uncached, eager vs exported) run back to
back and alternate, so a noisy machine shifts both sides alike.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bundle.benchmarks.common import result_row as _row
from bundle.utils.paths import TRAIN_CONFIG, load_config

# canvas size -> encoder/decoder widths (the quick and paper presets)
PRESETS = {128: [16, 32, 64, 128, 128], 256: [32, 64, 128, 256, 256]}


def training_settings(quick: bool) -> list[tuple[int, list[int], int, int]]:
    """(canvas, widths, batch size, images per site) of the training measurements."""
    if quick:
        return [(64, [8, 16, 16, 32, 32], 4, 10)]
    return [(128, PRESETS[128], 16, 80), (256, PRESETS[256], 8, 30)]


def _parser(root: Path, canvas: int, widths: list[int], batch_size: int, per_site: int):
    """The training config on a small synthetic set under ``root``, without validation or progress bars."""
    return load_config(
        TRAIN_CONFIG,
        {
            "bundle_root": str(root),
            "dataset_dir": str(root / "data"),
            "synthetic#generate": True,
            "synthetic#per_site": per_site,
            "synthetic#size": [canvas, canvas],
            "model": "paper",  # the plain-PyTorch side trains the same single-view network
            "canvas_size": canvas,
            "network_widths": widths,
            "batch_size": batch_size,
            "phase1_epochs": 1,
            "val_interval": 10**6,
            "cache_workers": 0,
            "show_progress": False,
        },
    )


def _rate(stamps: list[tuple[float, int]], warmup: int) -> float:
    """Images/s from (time, images) per iteration, the first ``warmup`` iterations not timed.

    The rate is the batch size over the median iteration time (iterations with a full batch), so a
    burst of load from elsewhere on a shared machine moves one iteration, not the whole figure.
    """
    if len(stamps) < warmup + 3:
        raise ValueError(f"{len(stamps)} iterations are too few to time after {warmup} warm-up; use more images")
    full = max(n for _, n in stamps)
    seconds = [b[0] - a[0] for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False) if b[1] == full]
    return full / statistics.median(seconds)


def _time_bundle_epoch(parser, warmup: int) -> float:
    """Images/s of one epoch of the bundle's phase-1 trainer with its handlers (validation off)."""
    from ignite.engine import Events

    trainer = parser.get_parsed_content("train#trainer")
    stamps: list[tuple[float, int]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: stamps.append((time.perf_counter(), len(e.state.batch["image"])))
    )
    trainer.run()
    return _rate(stamps, warmup)


def _time_plain_epoch(network: torch.nn.Module, loader, warmup: int, channels_last: bool = False) -> float:
    """Images/s of one epoch of a minimal PyTorch loop: forward, 1 - MS-SSIM, backward, Adam step.

    ``channels_last`` gives the loop the same memory-format trick as the bundle's default, so the
    engine's own overhead can be told apart from the layout gain.
    """
    from bundle.model.losses import MSSSIMLoss

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    network = network.to(memory_format=memory_format)
    loss_fn = MSSSIMLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    stamps = []
    for item in loader:
        images = torch.as_tensor(item["image"]).as_subclass(torch.Tensor).float()
        images = images.contiguous(memory_format=memory_format)
        masks = torch.as_tensor(item["roi_mask"]).as_subclass(torch.Tensor).float()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), torch.cat([images, masks], 1))
        loss.backward()
        optimizer.step()
        stamps.append((time.perf_counter(), len(images)))
    return _rate(stamps, warmup)


def benchmark_training(quick: bool = False) -> list[dict]:
    """Training images/s through the bundle's engine vs a plain loop, at the quick and paper canvas sizes.

    Both iterate the same ``train#dataloader`` (same data, augmentation and batch size) with a copy of
    the same initial network; the bundle side is the config's phase-1 ``SupervisedTrainer`` with its
    handlers (validation switched off in both).
    """
    rows = []
    for canvas, widths, batch, per_site in training_settings(quick):
        with tempfile.TemporaryDirectory() as tmp:
            parser = _parser(Path(tmp), canvas, widths, batch, per_site)
            parser.parse()
            loader = parser.get_parsed_content("train#dataloader")
            network = copy.deepcopy(parser.get_parsed_content("network_def"))
            sides = ("bundle", "plain", "plain NHWC")
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for rep in range(1 if quick else 4):  # the order turns each time: drift and position hit all alike
                parser.update({"output_dir": str(Path(tmp) / f"run{rep}")})  # no resume from the last rep
                parser.parse()
                for side in sides[rep % 3 :] + sides[: rep % 3]:
                    if side == "bundle":
                        rates[side].append(_time_bundle_epoch(parser, warmup=1))
                    else:
                        nhwc = side == "plain NHWC"
                        rates[side].append(_time_plain_epoch(copy.deepcopy(network), loader, 1, nhwc))
            b, p, q = (statistics.median(rates[side]) for side in sides)
            spread = [x / y for x, y in zip(rates["bundle"], rates["plain"], strict=True)]
            label = f"train {canvas} px"
            rows.append(_row(f"{label}, bundle engine (batch {batch})", b, "img/s"))
            rows.append(_row(f"{label}, plain PyTorch loop (batch {batch})", p, "img/s"))
            rows.append(_row(f"{label}, plain PyTorch loop with channels_last (batch {batch})", q, "img/s"))
            rows.append(_row(f"{label}, bundle / plain", b / p, "ratio", ">= 0.95", b / p >= 0.95))
            rows.append(_row(f"{label}, bundle / plain, lowest of {len(spread)} pairs", min(spread), "ratio"))
            rows.append(_row(f"{label}, bundle / plain, highest of {len(spread)} pairs", max(spread), "ratio"))
            rows.append(_row(f"{label}, bundle / plain with channels_last (engine overhead)", b / q, "ratio"))
    return rows


def _items_per_second(dataset) -> float:
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def benchmark_pipeline(quick: bool = False) -> list[dict]:
    """Loading + letterbox + mask throughput: no cache, in-memory cache, on-disk cache.

    Measured for the deterministic chain alone and for the training chain (plus the per-item random
    augmentation, which no cache can skip). The on-disk cache (``cache_dir``) is read by a fresh
    dataset object, as a second run or a resumed run would.
    """
    from bundle.data.datasets import cached_dataset
    from bundle.training.workflow import prepare_datalist
    from monai.data import Dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        per_site = 4 if quick else 40
        entries = prepare_datalist(
            Path(tmp) / "data",
            {"per_site": per_site, "sites": 3, "seed": 0, "size": None, "workers": 2, "generate": True},
        )
        n = len(entries)
        parser = load_config(TRAIN_CONFIG)
        chains = {
            "letterbox": parser.get_parsed_content("preprocessing"),
            "training": parser.get_parsed_content("train#transform"),
        }
        for chain_name, chain in chains.items():
            disk = Path(tmp) / f"cache_{chain_name}"
            start = time.perf_counter()
            memory = cached_dataset(entries, chain, num_workers=0)
            build = time.perf_counter() - start
            start = time.perf_counter()
            _items_per_second(cached_dataset(entries, chain, cache_dir=disk))  # first pass writes the files
            disk_build = time.perf_counter() - start
            datasets = {
                "no cache": lambda chain=chain: Dataset(entries, chain),
                "in memory": lambda memory=memory: memory,
                "on disk": lambda chain=chain, disk=disk: cached_dataset(entries, chain, cache_dir=disk),
            }
            rates: dict[str, list[float]] = {name: [] for name in datasets}
            for _ in range(1 if quick else 3):
                for name, make in datasets.items():
                    rates[name].append(_items_per_second(make()))
            r = {name: statistics.median(values) for name, values in rates.items()}
            label = f"pipeline ({chain_name} chain, {n} native PNGs)"
            rows.append(_row(f"{label}, no cache", r["no cache"], "img/s"))
            rows.append(_row(f"{label}, in-memory cache", r["in memory"], "img/s"))
            rows.append(_row(f"{label}, on-disk cache (fresh dataset)", r["on disk"], "img/s"))
            rows.append(_row(f"{label}, building the in-memory cache", n / build, "img/s"))
            rows.append(_row(f"{label}, building the on-disk cache", n / disk_build, "img/s"))
            for name in ("in memory", "on disk"):
                ratio = r[name] / r["no cache"]
                rows.append(_row(f"{label}, {name} / no cache", ratio, "ratio", ">= 3", ratio >= 3))
    return rows


def _latency_ms(fn, images, repeats: int) -> float:
    fn(images)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def benchmark_encoder(quick: bool = False) -> list[dict]:
    """Encoder latency (batch 1) and throughput (batch 32): eager, TorchScript and ONNX Runtime."""
    import warnings

    import onnxruntime
    from bundle.deploy.export import export_onnx
    from bundle.model.network import CAEEncoder

    encoder = CAEEncoder(widths=PRESETS[128]).eval()
    repeats = 3 if quick else 30
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(copy.deepcopy(encoder))
        onnx_path = export_onnx(encoder, Path(tmp) / "encoder.onnx", 128)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        runners = {
            "eager": lambda x: encoder(torch.from_numpy(x)),
            "TorchScript": lambda x: scripted(torch.from_numpy(x)),
            "ONNX Runtime": lambda x: session.run(["latent"], {"image": x})[0],
        }
        with torch.inference_mode():
            for batch in (1, 32):
                images = np.random.default_rng(0).random((batch, 1, 128, 128), dtype=np.float32)
                times = {name: [] for name in runners}
                for _ in range(2):  # alternate runners
                    for name, fn in runners.items():
                        times[name].append(_latency_ms(fn, images, repeats))
                eager = statistics.median(times["eager"])
                for name in runners:
                    ms = statistics.median(times[name])
                    if batch == 1:
                        rows.append(_row(f"encoder 128 px, {name}, batch 1 latency", ms, "ms"))
                    else:
                        rows.append(_row(f"encoder 128 px, {name}, batch 32", 1000 * batch / ms, "img/s"))
                if batch == 32:
                    best = min(statistics.median(times[name]) for name in runners if name != "eager")
                    ratio = eager / best
                    name = "encoder 128 px, batch 32, fastest export / eager"
                    rows.append(_row(name, ratio, "ratio", ">= 1", ratio >= 1))
    return rows


def measured_peak_gflops(quick: bool = False) -> dict[str, float]:
    """Dense fp32 matmul and 3x3 convolution GFLOP/s of this machine (all threads)."""
    n = 1024 if quick else 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    repeats = 2 if quick else 5
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    matmul = repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.rand(4, 64, 128, 128)
    with torch.no_grad():
        conv(x)
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
        seconds = time.perf_counter() - start
    conv_flops = 2 * 64 * 64 * 9 * 4 * 128 * 128
    return {"matmul": matmul, "conv": repeats * conv_flops / seconds / 1e9}


def training_flops_per_image(canvas: int, widths: list[int]) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by ``torch.utils.flop_counter``."""
    from bundle.model.network import ROIAwareCAE
    from torch.utils.flop_counter import FlopCounterMode

    network = ROIAwareCAE(canvas_size=canvas, widths=widths)
    images = torch.rand(2, 1, canvas, canvas)
    with FlopCounterMode(display=False) as counter:
        network(images).mean().backward()
    return counter.get_total_flops() / 2


def benchmark_flops(quick: bool = False) -> list[dict]:
    """FLOPs per image of the CAE and the machine's measured dense peak."""
    peak = measured_peak_gflops(quick)
    rows = [
        _row("measured peak, fp32 matmul", peak["matmul"], "GFLOP/s"),
        _row("measured peak, fp32 3x3 conv (64 ch)", peak["conv"], "GFLOP/s"),
    ]
    for canvas, widths, _, _ in training_settings(quick):
        gflops = training_flops_per_image(canvas, widths) / 1e9
        rows.append(_row(f"CAE training step, {canvas} px", gflops, "GFLOP/img"))
    return rows


def _scaling_point(canvas: int, batch: int, per_site: int) -> tuple[float, float, int]:
    """One scaling measurement (run in its own process): training images/s, cache build s, images."""
    with tempfile.TemporaryDirectory() as tmp:
        parser = _parser(Path(tmp), canvas, PRESETS[128], batch, per_site)
        parser.parse()
        start = time.perf_counter()
        n_train = len(parser.get_parsed_content("train#dataset"))  # builds the cache
        cache_seconds = time.perf_counter() - start
        return _time_bundle_epoch(parser, warmup=1), cache_seconds, n_train


def benchmark_scaling(quick: bool = False) -> list[dict]:
    """Training time and memory against canvas size, batch size and dataset size (3 points each).

    Every point runs in a fresh process (its own peak memory) with the quick preset's widths, so
    only the varied setting changes.
    """
    from bundle.benchmarks.common import run_isolated

    if quick:
        points = [("canvas", 64, 4, 8)]  # a smoke run: one point shows the suite works
    else:
        points = [("canvas", c, 8, 30) for c in (64, 128, 256)]
        points += [("batch", 128, b, 60) for b in (4, 16, 32)]
        points += [("dataset", 128, 16, n) for n in (30, 90, 270)]
    rows = []
    for kind, canvas, batch, per_site in points:
        (rate, cache_seconds, n_train), peak = run_isolated(_scaling_point, canvas, batch, per_site)
        label = f"scaling {kind}: {canvas} px, batch {batch}, {n_train} training images"
        rows.append(_row(f"{label}, training", rate, "img/s"))
        rows.append(_row(f"{label}, cache build", cache_seconds, "s"))
        rows.append(_row(f"{label}, peak memory", peak, "MB"))
    return rows


TRAINING_OPTIONS = {
    "default": {},
    "default again": {},  # the same settings twice: the spread between them is the noise floor
    "channels_last off": {"channels_last": False},
    "1 loader worker": {"train_workers": 1},
    "2 loader workers": {"train_workers": 2},
    "torch.compile": {"compile": True},
}


def benchmark_options(quick: bool = False) -> list[dict]:
    """Training images/s of the bundle engine under each speed option of ``configs/train.json``.

    The options (``channels_last`` off, loader workers, ``torch.compile``) run one epoch each at the
    quick preset, in alternating order over the repetitions; each is reported against the default
    settings of the same run, and the default runs twice so the noise floor shows. ``--quick`` runs
    the default, ``channels_last`` off and one loader worker only (``torch.compile`` takes a minute to
    compile on a CPU); the compilation happens in the untimed warm-up iterations.
    """
    canvas, widths, batch, per_site = training_settings(quick)[0]
    # --quick (a smoke run) leaves out torch.compile (a minute to compile), the repeat and the second worker
    quick_only = ("default", "channels_last off", "1 loader worker")
    options = {k: v for k, v in TRAINING_OPTIONS.items() if not quick or k in quick_only}
    rates: dict[str, list[float]] = {name: [] for name in options}
    with tempfile.TemporaryDirectory() as tmp:
        warm = _parser(Path(tmp), canvas, widths, batch, per_site)
        warm.update({"output_dir": str(Path(tmp) / "warm_up")})
        _time_bundle_epoch(warm, warmup=1)  # untimed: first-use costs of the process go here
        for rep in range(1 if quick else 3):
            for name, overrides in options.items() if rep % 2 == 0 else reversed(options.items()):
                parser = _parser(Path(tmp), canvas, widths, batch, per_site)
                parser.update({"output_dir": str(Path(tmp) / f"run_{rep}_{len(rates[name])}_{name}"), **overrides})
                parser.parse()
                rates[name].append(_time_bundle_epoch(parser, warmup=3 if "compile" in overrides else 1))
    default = statistics.median(rates["default"])
    rows = []
    for name in options:
        rate = statistics.median(rates[name])
        rows.append(_row(f"train {canvas} px option: {name}", rate, "img/s"))
        if name != "default":
            rows.append(_row(f"train {canvas} px option: {name} / default", rate / default, "ratio"))
    return rows

"""Command-line utilities that are not bundle workflows: ``python -m bundle <command> --help``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: sub-command name -> (help, arguments, function); filled by :func:`command` beside each function
COMMANDS: dict[str, tuple[str, tuple[tuple[tuple, dict], ...], Callable[[argparse.Namespace], int]]] = {}


def arg(*flags: str, **options: Any) -> tuple[tuple, dict]:
    """One ``add_argument`` call of a command, declared beside it (see :func:`command`)."""
    return flags, options


def command(name: str, summary: str, *arguments: tuple[tuple, dict]) -> Callable:
    """Register the decorated function as ``python -m bundle <name>`` with its arguments.

    Args:
        name: the sub-command.
        summary: its one line in ``python -m bundle --help``.
        arguments: :func:`arg` per option.

    Returns:
        a decorator that registers the function and returns it unchanged.
    """

    def register(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (summary, arguments, function)
        return function

    return register


@command(
    "synth",
    "write a synthetic multi-site NT dataset and its datalist",
    arg("--output", required=True, help="dataset folder (datalist.json goes there)"),
    arg("--per-site", type=int, required=True, help="images per site"),
    arg("--sites", type=int, default=3, help="number of sites (default 3)"),
    arg("--seed", type=int, default=0, help="dataset seed (default 0)"),
    arg("--size", default="native", help="'native' or WxH bound, aspect ratio kept per site (e.g. 128x128)"),
    arg("--workers", type=int, default=1, help="worker processes; output is identical for any count"),
    arg("--formats", default="png", help="comma list of png, dcm, nii (first one is the datalist image)"),
    arg("--masks", action="store_true", help="also write tissue label maps (datalist key 'label')"),
    arg("--standard-only", action="store_true", help="only standard planes (measurement studies)"),
    arg("--no-calipers", action="store_true", help="never burn NT calipers into the images"),
    arg("--quiet", action="store_true", help="no progress bar"),
)
def _cmd_synth(args: argparse.Namespace) -> int:
    from bundle.data.datalist import load_validated_datalist
    from bundle.data.synthetic.dataset import parse_size, write_synthetic_dataset

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    path = write_synthetic_dataset(
        args.output,
        per_site=args.per_site,
        sites=args.sites,
        seed=args.seed,
        size=parse_size(args.size),
        workers=args.workers,
        formats=formats,
        masks=args.masks,
        progress=not args.quiet,
        standard_only=args.standard_only,
        calipers=False if args.no_calipers else None,
    )
    entries = load_validated_datalist(path)
    print(f"synth: wrote {len(entries)} images from {args.sites} site(s); datalist: {path}")
    return 0


@command(
    "validate",
    "check every datalist entry and report all problems at once",
    arg("datalist", help="datalist JSON"),
    arg("--skip-images", action="store_true", help="don't decode images (faster; box-in-image not checked)"),
    arg("--frame", type=int, default=None, help="frame index for multi-frame DICOM"),
    arg(
        "--leakage",
        choices=("warn", "error", "off"),
        default="warn",
        help="patients in several sites or copied images across patients: warn (default), error or off",
    ),
    arg("--max-pixels", type=int, default=None, help="refuse images whose header claims more pixels (default 4096^2)"),
    arg("--quiet", action="store_true", help="no progress bar"),
)
def _cmd_validate(args: argparse.Namespace) -> int:
    from bundle.data.datalist import DatalistError, load_validated_datalist
    from bundle.data.readers import set_max_pixels

    set_max_pixels(args.max_pixels)

    try:
        entries = load_validated_datalist(
            args.datalist, check_images=not args.skip_images, frame=args.frame, progress=not args.quiet
        )
    except DatalistError as error:
        print(str(error), file=sys.stderr)
        print(f"validate: {len(error.problems)} problem(s); the datalist is NOT usable", file=sys.stderr)
        return 1
    from bundle.data.leakage import LeakageError, check_leakage

    try:
        warnings = check_leakage(entries, args.leakage, compare_images=not args.skip_images, warn=_warn)
    except LeakageError as error:
        print(f"validate: {error}", file=sys.stderr)
        print("validate: the datalist is NOT usable with --leakage error", file=sys.stderr)
        return 1
    sites = sorted({e["site"] for e in entries})
    note = f" ({len(warnings)} leakage warning(s) above)" if warnings else ""
    print(f"validate: {args.datalist} is clean: {len(entries)} entries, sites {sites}{note}")
    return 0


def _warn(message: str) -> None:
    print(f"validate: {message}", file=sys.stderr)


@command(
    "convert-shenzhen",
    "datalist from the Shenzhen first-trimester dataset",
    arg("root", help="dataset folder (image folders and ObjectDetection.xlsx/.csv)"),
    arg("--output", required=True, help="datalist JSON to write"),
    arg("--annotations", default=None, help="annotation sheet if not under ROOT (.xlsx needs the xlsx extra, or .csv)"),
    arg("--ambiguous", choices=("skip", "error"), default="skip", help="file names matching several different images"),
)
def _cmd_convert_shenzhen(args: argparse.Namespace) -> int:
    from bundle.data.shenzhen import convert_shenzhen

    report = convert_shenzhen(args.root, args.output, annotations=args.annotations, ambiguous=args.ambiguous)
    print(report.summary())
    print(
        f"convert-shenzhen: datalist written to {args.output}; check it with: python -m bundle validate {args.output}"
    )
    return 0


@command(
    "montage",
    "PNG montage of a datalist: a row per site with NT boxes and crops",
    arg("datalist", help="datalist JSON"),
    arg("--output", default="docs/images/synthetic_montage.png", help="PNG to write"),
    arg("--per-site", type=int, default=4, help="images per site"),
)
def _cmd_montage(args: argparse.Namespace) -> int:
    from bundle.data.montage import write_montage

    path = write_montage(args.datalist, args.output, per_site=args.per_site)
    print(f"montage: written to {path}")
    return 0


@command(
    "zoom-floor",
    "NT fidelity the ROI-zoom view allows (no network), plain and blurred: any model's ceiling",
    arg("datalist", help="datalist JSON (entries with roi and pixel_spacing_mm)"),
    arg("--roi-canvas-size", type=int, default=64, help="zoom-view side R (config key roi_canvas_size)"),
    arg("--roi-margin", type=float, default=0.5, help="zoom-view margin (config key roi_margin)"),
    arg("--sites", type=int, nargs="*", default=None, help="only these sites (default all)"),
    arg("--blur", type=float, nargs="*", default=[0.5, 0.75, 1.0, 1.25], help="Gaussian blurs to test, zoom-view px"),
    arg(
        "--ideal",
        type=int,
        default=0,
        metavar="K",
        help="also measure the speckle-free ideal (the scene averaged over K speckle draws; datalists written by "
        "`synth` only): what a perfect denoising reconstruction allows (default 0: off; 8 is plenty)",
    ),
    arg("--output", default=None, help="also write the figures as JSON here"),
)
def _cmd_zoom_floor(args: argparse.Namespace) -> int:
    from bundle.data.datalist import load_validated_datalist
    from bundle.evaluation.zoom_floor import zoom_floor, zoom_floor_markdown
    from bundle.utils.atomic import atomic_write_json

    entries = load_validated_datalist(args.datalist, check_images=False)
    if args.sites is not None:
        entries = [e for e in entries if int(e["site"]) in args.sites]
    ideal = None
    if args.ideal > 0:
        from bundle.data.datalist import read_datalist_json
        from bundle.data.synthetic.ideal import ideal_reader

        ideal = ideal_reader(read_datalist_json(args.datalist), args.ideal)
    result = zoom_floor(
        entries, args.roi_canvas_size, args.roi_margin, args.blur, ideal_reader=ideal, progress=sys.stderr.isatty()
    )
    print(zoom_floor_markdown(result), end="")
    if args.output:
        atomic_write_json(args.output, result)
        print(f"zoom-floor: figures in {args.output}")
    return 0


@command(
    "benchmark",
    "speed and memory benchmarks (JSON + Markdown)",
    arg("--quick", action="store_true", help="small counts, seconds (smoke run)"),
    arg("--suites", nargs="*", default=None, help="suites to run (default all)"),
    arg("--output", default="runs/benchmark", help="results folder"),
)
def _cmd_benchmark(args: argparse.Namespace) -> int:
    from bundle.benchmarks.runner import run_benchmarks

    table = run_benchmarks(args.output, suites=args.suites, quick=args.quick)
    print(table.read_text())
    print(f"benchmark: results in {table} and {table.with_suffix('.json')}")
    return 0


def _parse_settings(items: list[str] | None) -> dict:
    """``KEY=VALUE`` strings as a dict; values are JSON when they parse as JSON, else strings."""
    import json

    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"setting {item!r} is not KEY=VALUE (e.g. canvas_size=256)")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


@command(
    "protocol",
    "train and evaluate all site rotations, seeds and ablations; one report",
    arg("--output", default="runs/protocol", help="protocol folder (runs/ and report/)"),
    arg("--dataset-dir", default=None, help="dataset folder (default data/synthetic, generated there when missing)"),
    arg("--sites", type=int, nargs="+", default=[0, 1, 2], help="held-out sites, one rotation each"),
    arg("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds"),
    arg("--variants", nargs="+", default=["all"], help="methods: all, or names from bundle.protocol.variants.VARIANTS"),
    arg("--ablation-sites", type=int, nargs="*", default=[2], help="rotations that also run the ablations"),
    arg("--phase1-epochs", type=int, default=60, help="phase-1 epochs per run"),
    arg("--phase2-epochs", type=int, default=30, help="phase-2 epochs per run"),
    arg(
        "--fidelity-per-site",
        type=int,
        default=None,
        help="ignored since 0.7.0: every run's report measures the NT on its own native images",
    ),
    arg("--set", nargs="*", metavar="KEY=VALUE", help="extra training settings, e.g. batch_size=32"),
    arg("--report-only", action="store_true", help="only aggregate finished runs"),
)
def _cmd_protocol(args: argparse.Namespace) -> int:
    from bundle.protocol.runner import run_protocol
    from bundle.protocol.variants import VARIANTS, ProtocolSettings

    overrides = _parse_settings(args.set)
    settings = ProtocolSettings(
        output_dir=Path(args.output),
        dataset_dir=Path(args.dataset_dir or "data/synthetic"),
        generate_synthetic=args.dataset_dir is None,
        sites=args.sites,
        seeds=args.seeds,
        variants=list(VARIANTS) if args.variants == ["all"] else args.variants,
        ablation_sites=args.ablation_sites,
        phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs,
        overrides=overrides,
    )
    markdown = run_protocol(settings, report_only=args.report_only)
    print(f"protocol: read {markdown} first")
    return 0


@command(
    "export",
    "export the frozen encoder as TorchScript (with metadata) and ONNX",
    arg("--output-dir", default="models", help="folder for encoder.ts / encoder.onnx (default models)"),
    arg("--ckpt", default=None, help="encoder checkpoint (default OUTPUT_DIR/encoder.pt)"),
    arg("--config-file", nargs="+", default=None, help="config file(s) defining encoder_def (default train.json)"),
    arg("--meta-file", default=None, help="metadata.json to embed (default configs/metadata.json)"),
    arg(
        "--formats",
        nargs="+",
        default=["ts", "onnx", "image", "image_onnx"],
        help="ts, onnx (needs the export extra), image / image_onnx (image_encoder.ts / .onnx: raw image -> NT box "
        "-> latent)",
    ),
    arg("--set", nargs="*", metavar="KEY=VALUE", help="settings the encoder was trained with, e.g. canvas_size=256"),
)
def _cmd_export(args: argparse.Namespace) -> int:
    from bundle.deploy.export import export_encoder

    overrides = _parse_settings(args.set)
    from bundle.deploy.export import DEFAULT_CONFIG, DEFAULT_META

    config_file = args.config_file or DEFAULT_CONFIG
    results = export_encoder(
        args.output_dir, args.ckpt, config_file, args.meta_file or DEFAULT_META, args.formats, **overrides
    )
    for fmt, result in results.items():
        if result is None:
            print(f"export: {fmt} skipped (it needs the dual-view model and a trained localiser: train_localizer)")
            continue
        diff = result["max_abs_diff"]
        print(f"export: {result['path']} ({fmt}; max latent difference to the in-bundle encoder {diff:.1e})")
    return 0


@command(
    "score",
    "OOD score and predicted ROI quality per image, from an exported encoder",
    arg("datalist", help="datalist JSON or a folder of images"),
    arg("--encoder", default="models/encoder.ts", help="exported encoder (.ts or .onnx)"),
    arg("--scorer", default=None, help="fitted scorer (default: scorer.npz beside the encoder)"),
    arg("--output", default="scores.csv", help="CSV table to write (default scores.csv)"),
    arg("--latents", default=None, help="also save the latents to this .npz"),
    arg("--localizer", default=None, help="NT localiser for images without a box (default: beside encoder)"),
    arg("--batch-size", type=int, default=16, help="images per encoder call"),
    arg("--quiet", action="store_true", help="no progress bar"),
    arg("--max-pixels", type=int, default=None, help="refuse images whose header claims more pixels (default 4096^2)"),
)
def _cmd_score(args: argparse.Namespace) -> int:
    from bundle.data.readers import set_max_pixels
    from bundle.deploy.embed import score_images, write_rows_csv

    set_max_pixels(args.max_pixels)

    rows = score_images(
        args.datalist, args.encoder, args.scorer, args.batch_size, args.latents, not args.quiet, args.localizer
    )
    write_rows_csv(args.output, rows)
    failed = sum(1 for r in rows if r["error"])
    no_nt = sum(1 for r in rows if r.get("note"))
    predicted = sum(1 for r in rows if r.get("roi_source") == "predicted" and not r["error"] and not r.get("note"))
    flagged = sum(1 for r in rows if r.get("ood_flag") is True)
    print(
        f"score: {len(rows)} images, {len(rows) - failed - no_nt} scored ({predicted} with a predicted NT box), "
        f"{flagged} flagged as unfamiliar, {no_nt} without a visible NT, {failed} not scored (unreadable, or no "
        f"NT box and no localiser); table: {args.output}"
    )
    return 0


@command(
    "package",
    "the zoo package: a reproducible zip, or a Hugging Face Hub folder",
    arg("--output-dir", default="dist", help="folder for the package (default dist)"),
    arg("--models-dir", default=None, help="trained files to ship as models/ (default models)"),
    arg(
        "--format",
        choices=("zip", "hf"),
        default="zip",
        help="zip: fetal_nt_roi_cae_v<version>.zip; hf: folder fetal_nt_roi_cae_hf/ for the Hugging Face Hub",
    ),
    arg(
        "--weights-url",
        default=None,
        help="base URL of the hosted files, written into large_files.yml (default: the zoo's Hub repository)",
    ),
    arg(
        "--include-per-case",
        action="store_true",
        help="also ship models/train_latents.npz (a row per training case with its case id; off by default: with "
        "real data those ids identify patients or studies)",
    ),
)
def _cmd_package(args: argparse.Namespace) -> int:
    from bundle.deploy.package import package_bundle

    url = {"weights_url": args.weights_url} if args.weights_url else {}
    path = package_bundle(
        args.output_dir, args.models_dir, package_format=args.format, include_per_case=args.include_per_case, **url
    )
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"package: {path} ({size / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per registered utility (:data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="python -m bundle", description="fetal_nt_roi_cae utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_line, arguments, function) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(func=function)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; errors with a message for the user exit 2 without a traceback."""
    from bundle.data.datalist import DatalistError
    from bundle.data.readers import ImageReadError
    from bundle.data.shenzhen import ConversionError
    from bundle.utils.checkpoints import CheckpointError, UnsafeCheckpointError

    args = build_parser().parse_args(argv)
    user_errors = (DatalistError, ImageReadError, ConversionError, CheckpointError, UnsafeCheckpointError)
    try:
        return args.func(args)
    except (*user_errors, ValueError, OSError) as error:
        hint = {NotADirectoryError: "; part of this path is a file: give a folder"}.get(type(error), "")
        prog = Path(sys.argv[0]).name if argv is None else "bundle"
        print(f"{prog} {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2

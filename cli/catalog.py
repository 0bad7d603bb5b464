"""``geocloud catalog``: a cloud-cover catalogue of many scenes, in parallel, resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from geocloud.catalog import CATALOG_FORMATS, CatalogConfig, build_catalog, usable_cores
from geocloud.config import OutputConfig
from geocloud.products import PRODUCTS

from .logs import setup_logging
from .options import model_options, process_config, scene_options
from .process import parse_products

_DEFAULTS = CatalogConfig()

#: exit status when the catalogue was written but some scenes failed (error rows).
EXIT_SOME_FAILED = 3


class WorkersType(click.ParamType):
    """``auto`` or a whole number of worker processes, 0..cores."""

    name = "auto|N"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither auto nor a number of worker processes (0..{usable_cores()})", param, ctx)
        if n < 0:
            self.fail(f"{n} is negative; pass auto, 0 (serial) or 1..{usable_cores()}", param, ctx)
        return n


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    "catalog",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Catalogue file: {', '.join('*' + s for s in CATALOG_FORMATS)} (gpkg footprints in WGS84; "
    ".json: a STAC ItemCollection).",
)
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only scene files matching GLOB (file name, or path end when it has a '/'); repeatable.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out files matching GLOB (e.g. 'labels/*', '*_QA.tif'); repeatable.",
)
@click.option(
    "--stac",
    "stac_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Also write a static STAC catalogue (DIR/catalog.json, one Item per scene).",
)
@click.option(
    "--workers",
    type=WorkersType(),
    default="auto",
    show_default=True,
    help="Worker processes of a local dask cluster: auto (what measures fastest here: serial "
    f"below 8 cores), 0 (serial, in this process) or 1..{usable_cores()} (the cores of this machine).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Use an existing dask scheduler (e.g. tcp://host:8786) instead of a local cluster.",
)
@click.option(
    "--products",
    default=",".join(_DEFAULTS.process.output.products),
    show_default=True,
    help=f"Per-scene products (mask is required): {', '.join(PRODUCTS)}; or all.",
)
@click.option(
    "--outputs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the per-scene products (default: <catalogue stem>_scenes beside it).",
)
@click.option(
    "--hash",
    "use_hash",
    is_flag=True,
    help="Judge 'unchanged' by SHA-256 instead of size + mtime when resuming.",
)
@click.option("--no-resume", is_flag=True, help="Reprocess every scene, ignoring the journal.")
@click.option("--retry-errors", is_flag=True, help="Reprocess scenes whose previous row is an error.")
@click.option(
    "--thumb-size",
    type=click.IntRange(16),
    default=_DEFAULTS.thumb_size,
    show_default=True,
    help="Long side of the thumbnails in the HTML page (pixels).",
)
@click.option("--no-html", is_flag=True, help="Do not write <catalogue>.html.")
@model_options
@scene_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@click.option("--json", "as_json", is_flag=True, help="Write the summary as JSON to stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
def catalog(inputs: tuple[str, ...], catalog: Path, patterns: tuple[str, ...], excludes: tuple[str, ...],
            stac_dir: Path | None, workers: int | str, scheduler: str | None, products: str,
            outputs: Path | None, use_hash: bool, no_resume: bool, retry_errors: bool, thumb_size: int,
            no_html: bool, model: str, block_size: int, halo: int | None, feather: int, device: str,
            batch_size: int | None, threads: int | None, predictors: int | None, autocast: str, threshold: float | None, k: float | None, grow: bool, sensor: str | None,
            bands: str | None, scale: float | None, offset: float, sun_elevation: float | None, quiet: bool, as_json: bool, debug: bool) -> None:  # fmt: skip
    """Catalogue the cloud cover of every scene under INPUT (files, folders, globs).

    One row per scene (id, path, sensor, acquisition time, valid-data footprint, cloud %,
    threshold, model, status, error...).  Finished rows go to <catalogue>.journal.jsonl at
    once, so an interrupted run resumes where it stopped; a bad scene gives an error row.
    Also writes <catalogue>.html with thumbnails and a cloud-cover histogram.
    Rasters that cannot be scenes (fewer than 4 bands: masks, label files) get a
    'skipped' row.  Paths in the rows are absolute.

    \b
    Exit status:
      0  every scene catalogued (ok or skipped)
      3  some scenes failed (error rows); the catalogue was written
      2  nothing to do (no scene file matched) or a bad option; nothing written
      130 interrupted (^C): the finished rows are kept; rerun to resume
    """
    setup_logging(quiet, debug)
    process = process_config(
        model=model, block_size=block_size, halo=halo, feather=feather, device=device, batch_size=batch_size,
        threads=threads, predictors=predictors, autocast=autocast, threshold=threshold, k=k, grow=grow, sensor=sensor, bands=bands,
        output=OutputConfig(products=parse_products(products), overwrite=True),
    )  # fmt: skip
    kwargs = {"scale": scale, "offset": offset, "sun_elevation": sun_elevation}
    cfg = CatalogConfig(
        process=process, workers=workers, scheduler=scheduler, fingerprint="hash" if use_hash else "stat",
        resume=not no_resume, retry_errors=retry_errors, outputs_dir=outputs, thumb_size=thumb_size,
        html=not no_html, scene_kwargs=kwargs, patterns=patterns, excludes=excludes, stac_dir=stac_dir,
    )  # fmt: skip
    bar = (
        None if quiet else tqdm(desc="catalogue", unit="scene", leave=False, dynamic_ncols=True, disable=None)
    )

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        result = build_catalog(inputs, catalog, cfg, progress)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        journal = catalog.with_name(catalog.name + ".journal.jsonl")
        click.echo(
            f"geocloud: interrupted; the finished rows are kept in {catalog} and {journal.name}, "
            "the scene in progress was dropped; rerun the same command to resume",
            err=True,
        )
        sys.exit(130)
    finally:
        if bar is not None:
            bar.close()
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        click.echo(
            f"catalogue {result.path}: {summary['scenes']} rows, {result.processed} processed, "
            f"{result.unchanged} unchanged, {result.skipped} skipped (not scenes), {result.failed} failed "
            f"in {result.seconds:.1f} s ({result.workers_reason})",
            err=True,
        )
    if result.failed:
        bad = [r for r in result.rows if r.get("status") == "error"]
        for r in bad[:10]:
            click.echo(f"geocloud: error: {r['path']}: {r.get('error')}", err=True)
        if len(bad) > 10:
            click.echo(f"geocloud: ... and {len(bad) - 10} more error rows in {result.path}", err=True)
        sys.exit(EXIT_SOME_FAILED)

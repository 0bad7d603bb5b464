"""``geocloud process``: detect clouds in scenes and write products."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from geocloud.config import OutputConfig
from geocloud.declouding import DecloudConfig
from geocloud.errors import ConfigError, GeocloudError
from geocloud.pipeline import process_scene
from geocloud.plan import load_model_for
from geocloud.products import PRODUCTS, resolve_products
from geocloud.vectorize import VectorizeConfig
from geocloud.vendor.delivery import delivery_scene, delivery_stem, is_delivery

from .logs import setup_logging
from .options import model_options, process_config, scene_options, shadow_options
from .progress import ProgressBar


def parse_products(text: str) -> tuple[str, ...]:
    """The product names of ``--products``: a comma-separated list, or ``all``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names == ("all",):
        return tuple(PRODUCTS)
    if "all" in names:
        raise ConfigError(
            f"--products {text!r}: 'all' already means every product and cannot be combined with others; "
            "pass --products all, or a list without it"
        )
    resolve_products(names)  # raises with the list of choices
    return names


@click.command()
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")  # files or vendor deliveries
@click.option(
    "-o",
    "--outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (created if needed).",
)
@click.option(
    "--products",
    default=",".join(OutputConfig.products),
    show_default=True,
    help=f"Comma-separated products: {', '.join(PRODUCTS)}; or all.",
)
@model_options
@scene_options
@shadow_options
@click.option(
    "--refine",
    is_flag=True,
    help="Refine alpha and the cloud reflectance of the clear product (local smoothness; slower).",
)
@click.option(
    "--alpha-max",
    type=click.FloatRange(0, 1, max_open=True),
    default=DecloudConfig.alpha_max,
    show_default=True,
    help="Largest cloud opacity at which the clear product recovers the ground.",
)
@click.option(
    "--min-area",
    type=click.FloatRange(0),
    default=VectorizeConfig.min_area_m2,
    show_default=True,
    help="vector product: drop cloud polygons smaller than this (square metres).",
)
@click.option(
    "--simplify",
    type=click.FloatRange(0),
    default=VectorizeConfig.simplify_px,
    show_default=True,
    help="vector product: Douglas-Peucker tolerance in pixels (0 keeps the pixel edges).",
)
@click.option("--no-range-check", "no_range_check", is_flag=True,
              help="Process a scene even when most of its reflectances are outside -0.05..1.6 "
              "(by default such a scene is refused: its scaling is probably wrong).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option(
    "--ortho",
    is_flag=True,
    help="Warp the raster outputs of RPC-only (L1A) scenes onto a UTM grid with their RPCs.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
def process(scenes: tuple[str, ...], outdir: Path, products: str, model: str, block_size: int,
            halo: int | None, feather: int, device: str, batch_size: int | None, threads: int | None, predictors: int | None, autocast: str, threshold: float | None,
            k: float | None, grow: bool, sensor: str | None, bands: str | None, scale: float | None, offset: float,
            sun_elevation: float | None, no_shadow: bool, sun_azimuth: float | None, refine: bool, alpha_max: float, min_area: float, simplify: float,
            no_range_check: bool, overwrite: bool, ortho: bool,
            quiet: bool, debug: bool) -> None:  # fmt: skip
    """Find the clouds in each SCENE and write its products to OUTDIR.

    Outputs are named from each scene's file stem: <stem>_mask.tif (0 clear, 1 cloud,
    2 cloud shadow, 255 nodata), <stem>_score.tif, <stem>_stats.json, ... as Cloud-Optimised GeoTIFFs.
    A SCENE may also be a vendor delivery (a folder, or a .tar/.tar.gz/.tgz archive, extracted
    into a temporary folder): its raster is processed with its XML and RPCs, and the outputs
    are named after the delivery.
    """
    setup_logging(quiet, debug)
    config = process_config(
        model=model, block_size=block_size, halo=halo, feather=feather, device=device, batch_size=batch_size,
        threads=threads, predictors=predictors, autocast=autocast, threshold=threshold, k=k, grow=grow, sensor=sensor, bands=bands,
        output=OutputConfig(products=parse_products(products), overwrite=overwrite),
        decloud=DecloudConfig(alpha_max=alpha_max, refine=refine),
        vector=VectorizeConfig(min_area_m2=min_area, simplify_px=simplify),
        range_check=not no_range_check,
        shadow=not no_shadow,
    )  # fmt: skip
    stems = [delivery_stem(s) if is_delivery(s) else Path(s).stem for s in scenes]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise ConfigError(f"several scenes share the file stem {sorted(dup)[0]!r}, so their outputs would collide; "
                          "process them into different -o directories")  # fmt: skip
    config.validate()
    loaded = None
    failures = 0
    for scene in scenes:
        bar = ProgressBar(Path(scene).name, disable=quiet)
        try:
            with delivery_scene(scene, outdir) as (path, stem, source):
                if loaded is None:
                    loaded = load_model_for(config)
                result = process_scene(path, outdir, config, model=loaded, progress=bar.update,
                                       scale=scale, offset=offset, sun_elevation=sun_elevation,
                                       sun_azimuth=sun_azimuth, stem=stem, source=source)  # fmt: skip
                if ortho:
                    from geocloud.vendor import orthorectify_outputs

                    orthorectify_outputs(result.outputs)
        except GeocloudError as exc:
            bar.close()
            if len(scenes) == 1:
                raise
            failures += 1
            click.echo(f"geocloud: error: {scene}: {exc}", err=True)
            continue
        bar.close()
        if not quiet:
            s = result.stats
            frac = s.cloud_fraction or 0.0
            click.echo(
                f"{Path(scene).name}: cloud {100 * frac:.2f}% of {s.pixels.valid} valid px, "
                f"threshold {s.threshold.value:.3f}, {s.throughput_mpx_s} Mpx/s -> {outdir}",
                err=True,
            )
    if failures:
        click.echo(f"geocloud: error: {failures} of {len(scenes)} scenes failed", err=True)
        sys.exit(2)

"""``geocloud info``: what geocloud sees in a scene and what processing would do."""

from __future__ import annotations

import json

import click

from geocloud.config import ProcessConfig
from geocloud.pipeline import describe_scene

from .logs import setup_logging
from .options import parse_band_numbers, scene_options, shadow_options


@click.command()
@click.argument("scene")
@scene_options
@shadow_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(scene: str, sensor: str | None, bands: str | None, scale: float | None, offset: float,
         sun_elevation: float | None, no_shadow: bool, sun_azimuth: float | None, as_json: bool) -> None:  # fmt: skip
    """Show SCENE's sensor, bands, scaling, size and CRS, and what processing would do."""
    setup_logging(False, False)
    config = ProcessConfig(sensor=sensor, bands=parse_band_numbers(bands), shadow=not no_shadow)
    d = describe_scene(scene, config, scale=scale, offset=offset, sun_elevation=sun_elevation,
                       sun_azimuth=sun_azimuth)  # fmt: skip
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    width = max(len(k) for k in d)
    for k, v in d.items():
        if isinstance(v, dict):
            click.echo(k.replace("_", " "))
            for kk, vv in v.items():
                shown = ", ".join(map(str, vv)) if isinstance(vv, list) else vv
                click.echo(f"  {kk.replace('_', ' '):<{width - 2}}  {shown}")
        else:
            click.echo(f"{k.replace('_', ' '):<{width}}  {v}")

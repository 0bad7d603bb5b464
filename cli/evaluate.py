"""``geocloud evaluate``: pixel accuracy of cloud masks against truth labels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geocloud.evaluate import evaluate as evaluate_masks
from geocloud.evaluate import pair_inputs
from geocloud.outputs import atomic_write_text

from .logs import setup_logging


@click.command()
@click.argument("preds", nargs=-1, required=True, metavar="PRED...")
@click.option(
    "--truth",
    "truths",
    multiple=True,
    required=True,
    help="A folder of truth rasters matched by name (scene_mask.tif <-> scene.tif), "
    "or one truth file per PRED, in order (repeat --truth).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics as JSON to this file.",
)
@click.option("-q", "--quiet", is_flag=True, help="No table on stdout.")
def evaluate(preds: tuple[str, ...], truths: tuple[str, ...], json_path: Path | None, quiet: bool) -> None:  # fmt: skip
    """OA, precision, recall, F1 and IoU of cloud for each PRED mask (file or folder), and pooled.

    Codes: 0 clear, 1 cloud, 2 thin cloud, 3 shadow, 255 nodata. Thin and thick cloud are
    cloud, shadow is not cloud, 255 (in the prediction or the truth) is ignored.
    """
    setup_logging(quiet, False)
    if json_path is not None:  # before the work: a path that cannot be written is a user error
        from geocloud.outputs import check_writable_dir

        check_writable_dir(json_path.parent if str(json_path.parent) else Path("."), "--json")
    report = evaluate_masks(pair_inputs(preds, truths))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_json(), indent=2) + "\n")
    if not quiet:
        click.echo(report.table())

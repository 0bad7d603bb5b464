"""``geocloud train matting``: train the cloud-matting networks (G, D, F); see docs/matting.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .logs import setup_logging
from .train import data_out_options, given, train, training_steps

if TYPE_CHECKING:
    from geocloud.training.matting import MattingTrainConfig


def _defaults() -> MattingTrainConfig:
    from geocloud.training.matting import MattingTrainConfig

    return MattingTrainConfig()


@train.command("matting")
@data_out_options("matting")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generators and weights.")
@click.option(
    "--gan-steps",
    type=click.IntRange(0),
    default=None,
    help="GAN (G, D) steps (default: MattingTrainConfig).",
)
@click.option("--f-steps", type=click.IntRange(1), default=None, help="Matting-net (F) steps.")
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Blocks per batch.")
@click.option(
    "--arch",
    type=click.Choice(["cells", "unet"]),
    default=None,
    help="F's architecture: 'unet' (alpha at 1/2 resolution) or 'cells' (alpha from 8x8 cells by a "
    "local linear model). Default: MattingTrainConfig.",
)
@click.option(
    "--layer-scales",
    default=None,
    metavar="LIST",
    help="Draw the procedural cloud layers over these multiples of the block side and crop them, "
    "e.g. 1,2,4 (default: 1, the layers are block-sized).",
)
@click.option(
    "--partial-clear",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Also use partly cloudy blocks of the labelled chips as backgrounds when at least this share "
    "of their pixels is labelled clear (8 px from cloud); F is scored on those pixels only "
    "(default 0: wholly clear blocks only).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads (default 1).")
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Measure the held-out validation figures and store them in the sidecar.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_matting(data_dir: Path, out_dir: Path, seed: int, gan_steps: int | None, f_steps: int | None,
                  batch_size: int | None, arch: str | None, layer_scales: str | None,
                  partial_clear: float | None, threads: int | None, evaluate: bool,
                  quiet: bool) -> None:  # fmt: skip
    """Train the matting model; writes OUT/matting.safetensors + OUT/matting.json."""
    from geocloud.models.matting import MattingModel
    from geocloud.training.matting import save_result
    from geocloud.training.matting import train_matting as run
    from geocloud.training.matting_eval import evaluate_real, evaluate_synthetic

    setup_logging(quiet, False)
    scales = None
    if layer_scales is not None:
        try:
            scales = tuple(int(v) for v in layer_scales.split(","))
        except ValueError:
            scales = ()
        if not scales or min(scales) < 1:
            raise click.BadParameter(
                f"{layer_scales!r} is not a list of whole numbers >= 1; pass e.g. --layer-scales 1,2,4",
                param_hint="--layer-scales",
            )
    changes = given(
        gan_steps=gan_steps, f_steps=f_steps, batch=batch_size, arch=arch, layer_scales=scales,
        partial_clear=partial_clear, threads=threads,
    )
    cfg = dataclasses.replace(_defaults(), seed=seed, **changes)
    with training_steps("train matting", out_dir, quiet) as progress:
        result = run(data_dir, cfg, progress=progress)
    metrics = None
    if evaluate:
        model = MattingModel(result.net)
        metrics = {
            "synthetic": evaluate_synthetic(model, data_dir),
            "real": evaluate_real(model, data_dir),
        }
    path = save_result(result, out_dir, metrics)
    click.echo(f"wrote {path} and {path.with_suffix('.json').name}")
    if metrics is not None:
        syn, real = metrics["synthetic"], metrics["real"]["all"]
        click.echo(
            json.dumps(
                {
                    "alpha_mae": round(syn["alpha_mae"], 4),
                    "psnr_alpha_le_0.5_db": round(syn["psnr_le05"], 2),
                    "auc_cloud_vs_clear": round(real["auc_cloud_vs_clear"], 4),
                }
            )
        )

"""``geocloud train``: train models.  ``train cam`` trains the weakly supervised CAM detector.

Other trainers add a subcommand to the ``train`` group (``train.add_command(...)``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .logs import setup_logging
from .progress import ProgressBar

if TYPE_CHECKING:
    from geocloud.training.cam import CamTrainConfig

#: --data of the trainers that read labelled chips.
CHIPS_HELP = "A folder with catalog.csv of labelled 4-band chips (like ../shared/data)."


@click.group()
def train() -> None:
    """Train a model on your own data (see docs/cam.md)."""


def data_out_options(model: str, data_help: str = CHIPS_HELP) -> Callable[[Any], Any]:
    """--data DIR (``data_dir``) and --out DIR (``out_dir``, for ``<model>.safetensors`` and
    its ``<model>.json`` sidecar) of a ``train`` subcommand."""

    def deco(f: Any) -> Any:
        f = click.option(
            "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
            help=f"Output folder for {model}.safetensors and its {model}.json sidecar.",
        )(f)  # fmt: skip
        return click.option(
            "--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
            help=data_help,
        )(f)  # fmt: skip

    return deco


def given(**values: Any) -> dict[str, Any]:
    """The options the user gave (not None): the changes to a trainer's default config."""
    return {k: v for k, v in values.items() if v is not None}


@contextmanager
def training_steps(label: str, out_dir: Path, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """Check ``out_dir`` before training (not after it), then yield the trainer's
    ``progress(done, total)`` callback: a progress bar drawn at the first step, so data
    errors come first, and closed however training ends."""
    from geocloud.outputs import check_writable_dir

    check_writable_dir(out_dir, "--out")
    bar = ProgressBar(label, disable=quiet)
    try:
        yield lambda done, total: bar.update("steps", done, total)
    finally:
        bar.close()


def _defaults() -> CamTrainConfig:
    from geocloud.training.cam import CamTrainConfig

    return CamTrainConfig()


@train.command("cam")
@data_out_options(
    "cam",
    "A folder with catalog.csv (labelled chips, like ../shared/data) or tags.csv "
    "(your own scenes with cloudy/clear block tags: scene,row,col,size,label[,scale]).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the split, generator and weights."
)
@click.option(
    "--epochs", type=click.IntRange(1), default=None, help="Epochs (default: CamTrainConfig.epochs)."
)
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None, help="Batches per epoch.")
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Blocks per batch.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="Peak learning rate.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Share of labelled chips held out for validation (per stratum).",
)
@click.option(
    "--lpp",
    "lpp_mode",
    type=click.Choice(["dilate", "dilate_last", "remove", "none"]),
    default=None,
    help="Local pooling pruning at inference (stored in the sidecar).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda.")
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also measure the spectral baseline on the validation chips.",
)
@click.option(
    "--recalibrate",
    "recalibrate_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Skip training: calibrate and validate these cam.safetensors again (e.g. the shipped ones).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_cam(data_dir: Path, out_dir: Path, seed: int, epochs: int | None, steps_per_epoch: int | None,
              batch_size: int | None, lr: float | None, threads: int | None, val_fraction: float | None,
              lpp_mode: str | None, device: str, baseline: bool, recalibrate_from: Path | None,
              quiet: bool) -> None:  # fmt: skip
    """Train the CAM cloud detector on block labels; writes OUT/cam.safetensors + OUT/cam.json."""
    from geocloud.training.cam import run_training

    setup_logging(quiet, False)
    changes = given(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, threads=threads,
                    val_fraction=val_fraction, lpp_mode=lpp_mode)  # fmt: skip
    cfg = dataclasses.replace(_defaults(), seed=seed, device=device, **changes)
    base = None
    if baseline:
        from geocloud.models import load_model

        base = load_model("spectral")
    with training_steps("train cam", out_dir, quiet) as progress:
        if recalibrate_from is not None:
            from geocloud.training.cam import recalibrate

            side = recalibrate(data_dir, recalibrate_from, out_dir, cfg, baseline=base)
        else:
            side = run_training(data_dir, out_dir, cfg, progress=progress, baseline=base)
    if quiet:
        return
    click.echo(f"wrote {out_dir / 'cam.safetensors'} and cam.json")
    val = side.get("validation", {})
    for name in ("cam", "baseline"):
        if name in val:
            g = val[name]["groups"]["pooled"]
            click.echo(
                f"{val.get('baseline_name', 'spectral') if name == 'baseline' else 'cam':>9}: "
                f"pooled OA {g['oa']:.4f}  F1 {g['f1']:.4f}  IoU {g['iou']:.4f}  (threshold {val[name]['threshold']:.3f})"
            )
    click.echo(json.dumps(side["training"]["seconds"]))

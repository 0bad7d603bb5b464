"""``geocloud train restore``: train the attentive restoration generator; see docs/restore.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from .logs import setup_logging
from .train import data_out_options, given, train, training_steps


@train.command("restore")
@data_out_options("restore")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the composites and weights.")
@click.option(
    "--steps", type=click.IntRange(1), default=None, help="Training steps (default: RestoreTrainConfig)."
)
@click.option("--batch-size", type=click.IntRange(2), default=None, help="Blocks per batch.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads (default 1).")
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Measure the held-out figures (benchmarks/eval_restore.py's) and store them in the sidecar.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_restore(data_dir: Path, out_dir: Path, seed: int, steps: int | None, batch_size: int | None,
                  threads: int | None, evaluate: bool, quiet: bool) -> None:  # fmt: skip
    """Train the restoration generator; writes OUT/restore.safetensors + OUT/restore.json."""
    from geocloud.training.restore import RestoreTrainConfig, save_result
    from geocloud.training.restore import train_restore as run

    setup_logging(quiet, False)
    cfg = dataclasses.replace(
        RestoreTrainConfig(), seed=seed, **given(steps=steps, batch=batch_size, threads=threads)
    )
    with training_steps("train restore", out_dir, quiet) as progress:
        result = run(data_dir, cfg, progress=progress)
    metrics = None
    if evaluate:
        from geocloud.training.restore_eval import evaluate_restore

        metrics = evaluate_restore(result.net, data_dir, split_seed=cfg.split_seed,
                                   val_fraction=cfg.val_fraction)["summary"]  # fmt: skip
    path = save_result(result, out_dir, metrics)
    click.echo(f"wrote {path} and {path.with_suffix('.json').name}")
    if metrics is not None:
        click.echo(json.dumps(metrics, indent=1))

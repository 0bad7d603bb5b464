"""``geocloud train restore``: train the attentive restoration generator; see docs/restore.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from .logs import setup_logging
from .progress import ProgressBar
from .train import train


@train.command("restore")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder with catalog.csv of labelled 4-band chips (like ../shared/data).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder for restore.safetensors and its restore.json sidecar.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the composites and weights.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Training steps (default: RestoreTrainConfig).")
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
    from geocloud.outputs import check_writable_dir
    from geocloud.training.restore import RestoreTrainConfig, save_result
    from geocloud.training.restore import train_restore as run

    setup_logging(quiet, False)
    changes: dict[str, Any] = {
        k: v for k, v in {"steps": steps, "batch": batch_size, "threads": threads}.items() if v is not None
    }
    cfg = dataclasses.replace(RestoreTrainConfig(), seed=seed, **changes)
    check_writable_dir(out_dir, "--out")  # before training, not after it
    bar = ProgressBar("train restore", disable=quiet)

    def progress(done: int, total: int) -> None:
        bar.update("steps", done, total)

    try:
        result = run(data_dir, cfg, progress=progress)
    finally:
        bar.close()
    metrics = None
    if evaluate:
        from geocloud.training.restore_eval import evaluate_restore

        metrics = evaluate_restore(result.net, data_dir, split_seed=cfg.split_seed,
                                   val_fraction=cfg.val_fraction)["summary"]  # fmt: skip
    path = save_result(result, out_dir, metrics)
    click.echo(f"wrote {path} and {path.with_suffix('.json').name}")
    if metrics is not None:
        click.echo(json.dumps(metrics, indent=1))

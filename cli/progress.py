"""A tqdm progress bar on stderr fed by the library's ``progress(stage, done, total)`` callback."""

from __future__ import annotations

from tqdm import tqdm

STAGES = {"infer": "detect", "classify": "classify", "write": "write COGs"}


class ProgressBar:
    def __init__(self, label: str, disable: bool = False):
        self.label = label
        self.disable = disable
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def update(self, stage: str, done: int, total: int) -> None:
        if self.disable:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=total,
                desc=f"{self.label}: {STAGES.get(stage, stage)}",
                unit="blk" if stage == "infer" else "step",
                leave=False,
                dynamic_ncols=True,
                disable=None,
            )  # fmt: skip  (None: off when stderr is not a terminal)
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""Real labelled chips: catalog, reading, block labels and the train/validation split.

The shared data folder (``../shared/data``) holds chips with a ``catalog.csv``; see its
README.  This module turns it into:

* :func:`load_catalog`: one :class:`Chip` per row;
* :func:`read_chip`: TOA-ish reflectance float32 (4, H, W) in canonical band order
  (blue, green, red, nir) and a uint8 label (0 clear, 1 cloud, 2 thin, 3 shadow, 255 none);
* :func:`extract_blocks`: block-level labels with the documented rule (:class:`BlockRule`);
* :func:`split_chips`: a seeded, stratified, chip-level train/validation split.

Label-quality policy (from the catalog's ``label_quality`` column):

* ``good``: labels are truth, for block labels and for pixel validation;
* ``coarse``: labels are blobby; used for block labels with a stricter rule (a higher
  cloudy fraction, and "clear" only when no cloud lies within a margin), and reported
  separately in validation;
* ``unreliable``: labels are **never** used.  :func:`read_chip` returns an all-255 label
  for these chips.  Their imagery may serve as clear backgrounds only when
  :func:`looks_clear` (a conservative spectral check of our own) says so.

The 3-band ``gf1_quicklook`` RGB chips are not 4-band reflectance and are excluded from
4-band training and validation (:attr:`Chip.is_4band`); read them with ``allow_rgb=True``
for side checks only.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..models.base import CANONICAL_BANDS

#: label codes of the shared data (and of ``geocloud evaluate``'s truth rasters).
CLEAR, CLOUD, THIN, SHADOW, NODATA = 0, 1, 2, 3, 255

#: block labels.
BLOCK_CLEAR, BLOCK_CLOUDY = 0, 1

QUALITIES = ("good", "coarse", "unreliable")


@dataclass(frozen=True)
class Chip:
    """One row of ``catalog.csv``, with absolute paths."""

    set: str
    id: str
    scene: Path
    label: Path
    sensor: str
    bands: tuple[str, ...]
    dtype: str
    #: multiply stored values by this to get reflectance; ``None`` when already reflectance
    #: (or, for the RGB quicklooks, display values).
    scale: float | None
    georeferenced: bool
    height: int
    width: int
    cloud_frac: float
    thin_frac: float
    shadow_frac: float
    label_quality: str
    source: str = ""
    licence: str = ""

    @property
    def key(self) -> str:
        """``set/id``: unique, used in training-list hashes and reports."""
        return f"{self.set}/{self.id}"

    @property
    def is_4band(self) -> bool:
        """True when the chip has blue, green, red and nir (usable as model input)."""
        return set(CANONICAL_BANDS) <= set(self.bands)

    @property
    def surface(self) -> str:
        """Surface type for reporting: the L8 Biome biome (``snowice``, ``urban``...).

        Other sets carry no surface type; they report as ``mixed``.
        """
        if self.set == "l8_biome":
            return self.id.split("_")[0].lower()
        return "mixed"

    @property
    def labels_usable(self) -> bool:
        """False for ``unreliable`` labels, which are never used as truth."""
        return self.label_quality in ("good", "coarse")


def _float_or_none(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


def load_catalog(data_dir: str | Path, *, four_band_only: bool = False) -> list[Chip]:
    """Read ``data_dir/catalog.csv`` into chips (in catalog order)."""
    data_dir = Path(data_dir)
    path = data_dir / "catalog.csv"
    if not path.is_file():
        raise InputError(
            f"no catalog.csv in {str(data_dir)!r}; pass --data with the shared data folder "
            "(the one holding catalog.csv, e.g. ../shared/data)"
        )
    chips: list[Chip] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            quality = row.get("label_quality", "good").strip() or "good"
            if quality not in QUALITIES:
                raise InputError(
                    f"label_quality {quality!r} of chip {row['id']!r} is unknown; "
                    f"use one of {', '.join(QUALITIES)} in {path}"
                )
            chip = Chip(
                set=row["set"],
                id=row["id"],
                scene=data_dir / row["scene"],
                label=data_dir / row["label"],
                sensor=row.get("sensor", ""),
                bands=tuple(b.strip() for b in row["bands"].split(",")),
                dtype=row.get("dtype", ""),
                scale=_float_or_none(row.get("scale", "")),
                georeferenced=row.get("georeferenced", "0").strip() in ("1", "true", "True"),
                height=int(row["height"]),
                width=int(row["width"]),
                cloud_frac=float(row.get("cloud_frac") or 0.0),
                thin_frac=float(row.get("thin_frac") or 0.0),
                shadow_frac=float(row.get("shadow_frac") or 0.0),
                label_quality=quality,
                source=row.get("source", ""),
                licence=row.get("licence", ""),
            )
            if four_band_only and not chip.is_4band:
                continue
            chips.append(chip)
    return chips


def read_chip(
    chip: Chip, *, allow_rgb: bool = False, raw_label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a chip as ``(refl, label)``.

    ``refl`` is float32 (4, H, W) reflectance in blue, green, red, nir order (0..~1.5):
    integer scenes are multiplied by the catalog ``scale``; nodata (stored 0 in all
    bands of integer scenes, or non-finite values) becomes 0 and label 255.  ``label``
    is uint8 (H, W).  Labels of ``unreliable`` chips come back all 255 unless
    ``raw_label=True`` (for inspection only, never as truth).

    3-band RGB chips raise :class:`InputError` unless ``allow_rgb=True``; then ``refl``
    is (3, H, W) red, green, blue display values scaled to 0..1 (not reflectance).
    """
    import rasterio

    from ..scene import without_georef_warning

    if not chip.is_4band and not allow_rgb:
        raise InputError(
            f"chip {chip.key} has bands {','.join(chip.bands)}, not blue,green,red,nir; "
            "it cannot be model input (filter with four_band_only=True)"
        )
    # the L8 Biome patches carry no georeferencing (catalog.csv: georeferenced 0)
    with without_georef_warning():
        with rasterio.open(chip.scene) as src:
            raw = src.read()
            descriptions = tuple((d or "").lower() for d in src.descriptions)
        with rasterio.open(chip.label) as src:
            label = src.read(1).astype(np.uint8)
    bands = chip.bands if all(not d for d in descriptions) else descriptions
    if raw.shape[0] != len(bands):
        raise InputError(f"chip {chip.key} has {raw.shape[0]} bands but the catalog names {len(bands)}")

    if chip.is_4band:
        order = [bands.index(b) for b in CANONICAL_BANDS]
        data = raw[order]
        if np.issubdtype(data.dtype, np.integer):
            nodata = (data == 0).all(axis=0)
            scale = chip.scale if chip.scale is not None else 1.0
            refl = data.astype(np.float32) * np.float32(scale)
        else:
            refl = data.astype(np.float32)
            if chip.scale is not None and chip.scale != 1.0:
                refl *= np.float32(chip.scale)
            nodata = np.zeros(refl.shape[1:], dtype=bool)
        nodata |= ~np.isfinite(refl).all(axis=0)
        refl = np.where(np.isfinite(refl), refl, np.float32(0.0)).astype(np.float32)
        refl[:, nodata] = 0.0
    else:
        refl = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
        nodata = np.zeros(refl.shape[1:], dtype=bool)

    if not chip.labels_usable and not raw_label:
        label = np.full(label.shape, NODATA, dtype=np.uint8)
    label = label.copy()
    label[nodata] = NODATA
    return refl, label


# --------------------------------------------------------------------------- block labels


@dataclass(frozen=True)
class BlockRule:
    """How pixel labels become block labels.

    A block's cloud fraction is (cloud + thin) pixels over its labelled pixels.

    * ``good`` labels: cloudy if the fraction >= ``min_cloud`` (5 %), clear if it is
      exactly 0; anything in between is ambiguous and dropped.
    * ``coarse`` labels: cloudy if >= ``coarse_min_cloud`` (25 %); clear only if there is
      no cloud pixel within ``coarse_clear_margin`` pixels of the block.
    * ``unreliable`` labels are never used (the label is all 255, so every block drops).
    * blocks with more than ``max_nodata`` of unlabelled/nodata pixels are dropped.

    Shadow counts as not cloud.
    """

    size: int = 128
    stride: int = 64
    min_cloud: float = 0.05
    coarse_min_cloud: float = 0.25
    coarse_clear_margin: int = 16
    max_nodata: float = 0.1


@dataclass
class Blocks:
    """Labelled blocks cut from one or more chips."""

    x: np.ndarray  # float32 (N, 4, S, S) reflectance
    y: np.ndarray  # int64 (N,) 0 clear, 1 cloudy
    cloud_frac: np.ndarray  # float32 (N,)
    source: list[str] = field(default_factory=list)  # chip key per block

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def empty(size: int) -> Blocks:
        return Blocks(
            np.zeros((0, 4, size, size), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), []
        )

    @staticmethod
    def concat(parts: Sequence[Blocks], size: int) -> Blocks:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Blocks.empty(size)
        return Blocks(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.cloud_frac for p in parts]),
            [s for p in parts for s in p.source],
        )

    def select(self, index: np.ndarray) -> Blocks:
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return Blocks(self.x[index], self.y[index], self.cloud_frac[index], [self.source[i] for i in index])


def _origins(n: int, size: int, stride: int) -> list[int]:
    if n < size:
        return []
    last = n - size
    out = list(range(0, last + 1, stride))
    if out[-1] != last:
        out.append(last)
    return out


def extract_blocks(
    refl: np.ndarray,
    label: np.ndarray,
    *,
    quality: str = "good",
    rule: BlockRule | None = None,
    source: str = "",
) -> Blocks:
    """Cut ``refl`` (4, H, W) into blocks and label them with ``rule`` (see :class:`BlockRule`)."""
    rule = rule or BlockRule()
    s = rule.size
    if quality == "unreliable":
        return Blocks.empty(s)
    cloud = (label == CLOUD) | (label == THIN)
    unknown = label == NODATA
    if quality == "coarse" and rule.coarse_clear_margin > 0:
        from scipy.ndimage import maximum_filter

        near_cloud = maximum_filter(cloud, size=2 * rule.coarse_clear_margin + 1)
    else:
        near_cloud = cloud
    min_cloud = rule.coarse_min_cloud if quality == "coarse" else rule.min_cloud
    xs, ys, fs = [], [], []
    for r in _origins(label.shape[0], s, rule.stride):
        for c in _origins(label.shape[1], s, rule.stride):
            win = (slice(r, r + s), slice(c, c + s))
            n_unknown = int(unknown[win].sum())
            if n_unknown > rule.max_nodata * s * s:
                continue
            n_cloud = int(cloud[win].sum())
            frac = n_cloud / max(1, s * s - n_unknown)
            if frac >= min_cloud:
                y = BLOCK_CLOUDY
            elif n_cloud == 0 and not near_cloud[win].any():
                y = BLOCK_CLEAR
            else:
                continue
            xs.append(refl[:, win[0], win[1]])
            ys.append(y)
            fs.append(frac)
    if not xs:
        return Blocks.empty(s)
    return Blocks(
        np.stack(xs).astype(np.float32),
        np.asarray(ys, np.int64),
        np.asarray(fs, np.float32),
        [source] * len(ys),
    )


def looks_clear(refl: np.ndarray, *, max_bright: float = 0.02, blue_thresh: float = 0.22) -> bool:
    """A conservative check that a block of unlabelled imagery holds no cloud.

    A pixel is "possibly cloud" when its blue reflectance exceeds ``blue_thresh`` and its
    visible bands are flat (max/min of blue, green, red < 1.4, i.e. white-grey).  The block
    passes when at most ``max_bright`` of its valid pixels are possibly cloud and its
    visible brightness is low overall (mean blue < 0.15).  It misses haze on purpose: a
    block it passes is used only as a *clear background* for synthetic clouds.
    """
    valid = (refl != 0).any(axis=0)
    if valid.mean() < 0.9:
        return False
    b, g, r = refl[0][valid], refl[1][valid], refl[2][valid]
    vis = np.stack([b, g, r])
    flat = vis.max(0) / np.maximum(vis.min(0), 1e-4) < 1.4
    possibly = (b > blue_thresh) & flat
    return bool(possibly.mean() <= max_bright and float(b.mean()) < 0.15)


def unlabelled_clear_blocks(refl: np.ndarray, *, rule: BlockRule | None = None, source: str = "") -> Blocks:
    """Blocks of unlabelled imagery that :func:`looks_clear` accepts, labelled clear."""
    rule = rule or BlockRule()
    s = rule.size
    xs = []
    for r in _origins(refl.shape[1], s, rule.stride):
        for c in _origins(refl.shape[2], s, rule.stride):
            blk = refl[:, r : r + s, c : c + s]
            if looks_clear(blk):
                xs.append(blk)
    if not xs:
        return Blocks.empty(s)
    n = len(xs)
    return Blocks(
        np.stack(xs).astype(np.float32), np.zeros(n, np.int64), np.zeros(n, np.float32), [source] * n
    )


# --------------------------------------------------------------------------- split


def stratum(chip: Chip) -> str:
    """The group a chip is stratified by in :func:`split_chips`."""
    if chip.set == "l8_biome":
        return f"l8_biome/{chip.surface}"
    return f"{chip.set}/{chip.label_quality}"


@dataclass(frozen=True)
class Split:
    """A chip-level split.  ``unlabelled`` chips (unreliable labels) are train-only imagery."""

    train: tuple[Chip, ...]
    val: tuple[Chip, ...]
    unlabelled: tuple[Chip, ...]
    seed: int
    val_fraction: float

    def describe(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train": [c.key for c in self.train],
            "val": [c.key for c in self.val],
            "unlabelled_imagery": [c.key for c in self.unlabelled],
        }


def split_chips(chips: Iterable[Chip], *, val_fraction: float = 0.5, seed: int = 0) -> Split:
    """Hold out whole chips for validation, stratified by :func:`stratum`.

    Only 4-band chips take part.  In each stratum of n chips, ``round(n * val_fraction)``
    chips (at least 1 when n >= 2, and never all of them) go to validation, chosen by a
    ``random.Random(seed)`` shuffle of the sorted chip keys, so the split is reproducible.
    Chips with ``unreliable`` labels never enter validation; they are returned apart.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction {val_fraction} must be in [0, 1); pass e.g. 0.5")
    rng = random.Random(seed)
    chips = [c for c in chips if c.is_4band]
    unlabelled = tuple(sorted((c for c in chips if not c.labels_usable), key=lambda c: c.key))
    groups: dict[str, list[Chip]] = {}
    for c in chips:
        if c.labels_usable:
            groups.setdefault(stratum(c), []).append(c)
    train: list[Chip] = []
    val: list[Chip] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda c: c.key)
        rng.shuffle(members)
        n = len(members)
        k = int(math.floor(n * val_fraction + 0.5)) if val_fraction > 0 else 0
        if n >= 2 and val_fraction > 0:
            k = min(max(k, 1), n - 1)
        elif n < 2:
            k = 0
        val.extend(members[:k])
        train.extend(members[k:])
    order = {c.key: i for i, c in enumerate(chips)}
    train.sort(key=lambda c: order[c.key])
    val.sort(key=lambda c: order[c.key])
    return Split(tuple(train), tuple(val), unlabelled, seed, val_fraction)


def kfold_chips(chips: Iterable[Chip], k: int = 5, *, seed: int = 0) -> list[tuple[Chip, ...]]:
    """``k`` disjoint folds of the 4-band chips with usable labels, stratified by :func:`stratum`.

    Each stratum's chips (sorted, then shuffled by ``random.Random(seed)``) are dealt to the
    folds in turn, starting where the previous stratum stopped, so every fold gets about
    the same number of chips and each surface type and sensor is spread over the folds.
    Chips with ``unreliable`` labels are in no fold (they are never truth).
    """
    if k < 2:
        raise InputError(f"k-fold cross-validation needs k >= 2 folds, got {k}; pass --folds 5")
    rng = random.Random(seed)
    groups: dict[str, list[Chip]] = {}
    for c in chips:
        if c.is_4band and c.labels_usable:
            groups.setdefault(stratum(c), []).append(c)
    folds: list[list[Chip]] = [[] for _ in range(k)]
    turn = 0
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda c: c.key)
        rng.shuffle(members)
        for c in members:
            folds[turn % k].append(c)
            turn += 1
    return [tuple(sorted(f, key=lambda c: c.key)) for f in folds]


def chip_list_hash(chips: Iterable[Chip]) -> str:
    """sha256 (first 16 hex digits) of the sorted chip keys: identifies a training list."""
    text = "\n".join(sorted(c.key for c in chips))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "BLOCK_CLEAR",
    "BLOCK_CLOUDY",
    "CLEAR",
    "CLOUD",
    "NODATA",
    "SHADOW",
    "THIN",
    "BlockRule",
    "Blocks",
    "Chip",
    "Split",
    "chip_list_hash",
    "extract_blocks",
    "kfold_chips",
    "load_catalog",
    "looks_clear",
    "read_chip",
    "split_chips",
    "stratum",
    "unlabelled_clear_blocks",
]

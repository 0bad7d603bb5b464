"""Pixel accuracy of cloud masks against truth labels (``geocloud evaluate``).

Codes (the shared-data convention, also geocloud's own masks):

* ``0`` clear, ``1`` cloud (thick), ``2`` thin cloud, ``3`` cloud shadow, ``255`` no data.
* Thin and thick cloud count as **cloud**; shadow counts as **not cloud**; ``255`` in either
  the prediction or the truth is ignored.  Any other value is an error.

Metrics for the cloud class, per scene and pooled over all pixels: overall accuracy (OA),
precision, recall, F1 and IoU.  A metric whose denominator is zero is NaN (written as
``null`` in JSON).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SceneNotFoundError

#: label code -> is cloud (None: ignored).
CODES: dict[int, bool | None] = {0: False, 1: True, 2: True, 3: False, 255: None}

RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")
#: suffixes stripped from prediction file stems when matching truth by name.
PRED_SUFFIXES = ("_mask", "_cloudmask", "_pred")


#: a geocloud mask's codes (output format 2): 2 is cloud shadow, not cloud.
GEOCLOUD_CODES: dict[int, bool | None] = {0: False, 1: True, 2: False, 255: None}


#: codes kind -> (code table, how the refusal names the codes, the fix it suggests).
_CODE_KINDS: dict[str, tuple[dict[int, bool | None], str, str]] = {
    "label": (CODES, "the codes 0 clear, 1 cloud, 2 thin, 3 shadow, 255 nodata",
              "pass a geocloud mask (or a label raster with those codes)"),
    "geocloud": (GEOCLOUD_CODES, "a geocloud mask's codes 0 clear, 1 cloud, 2 cloud shadow, 255 nodata",
                 "pass a geocloud *_mask.tif"),
}  # fmt: skip


def to_cloud(mask: np.ndarray, what: str, codes: str = "label") -> np.ndarray:
    """uint8 (H, W) codes -> uint8 with 1 cloud, 0 not cloud, 255 ignored.

    ``codes="label"``: the label codes (:data:`CODES`: 1 thick and 2 thin cloud are cloud,
    3 shadow is not); ``codes="geocloud"``: a geocloud mask (1 cloud; 2 cloud shadow is not
    cloud)."""
    table, names, hint = _CODE_KINDS[codes]
    values = np.unique(mask)
    bad = [v for v in values.tolist() if not (float(v).is_integer() and int(v) in table)]  # NaN too
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise InputError(f"{what} holds values [{shown}] outside {names}; {hint}")
    out = np.zeros(mask.shape, np.uint8)
    for code, cloud in table.items():
        if cloud is not False:
            out[mask == code] = 1 if cloud else 255
    return out


def confusion(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """TP/FP/FN/TN of cloud for 0/1/255 arrays (255 in either ignored)."""
    ok = (truth != 255) & (pred != 255)
    p, t = pred[ok] == 1, truth[ok] == 1
    return {
        "tp": int((p & t).sum()),
        "fp": int((p & ~t).sum()),
        "fn": int((~p & t).sum()),
        "tn": int((~p & ~t).sum()),
    }


def metrics(c: dict[str, int]) -> dict[str, float]:
    """OA, precision, recall, F1, IoU (cloud) and counts from a confusion dict."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    n = tp + fp + fn + tn

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "oa": div(tp + tn, n),
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "iou": div(tp, tp + fp + fn),
        "cloud_frac_true": div(tp + fn, n),
        "cloud_frac_pred": div(tp + fp, n),
        "pixels": n,
        **c,
    }


@dataclass
class EvalReport:
    """Per-scene and pooled metrics."""

    scenes: dict[str, dict[str, float]] = field(default_factory=dict)
    pooled: dict[str, float] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def clean(d: dict[str, float]) -> dict[str, Any]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

        return {
            "convention": "cloud = codes 1,2; not cloud = 0,3; 255 ignored in prediction or truth",
            "pooled": clean(self.pooled),
            "scenes": {k: clean(v) for k, v in self.scenes.items()},
            "pairs": [{"pred": p, "truth": t} for p, t in self.pairs],
        }

    def table(self) -> str:
        cols = ("oa", "precision", "recall", "f1", "iou")
        names = list(self.scenes) + ["POOLED"]
        width = max([5] + [len(n) for n in names])
        lines = [f"{'scene':<{width}}  " + "  ".join(f"{c:>9}" for c in cols) + f"  {'pixels':>10}"]
        for name, m in list(self.scenes.items()) + [("POOLED", self.pooled)]:
            vals = "  ".join("      nan" if math.isnan(m[c]) else f"{m[c]:9.4f}" for c in cols)
            lines.append(f"{name:<{width}}  {vals}  {int(m['pixels']):>10d}")
        return "\n".join(lines)


def mask_codes(tags: dict[str, str]) -> str:
    """"geocloud" for a raster geocloud wrote as a mask (its 2 is cloud shadow), else "label"."""
    return "geocloud" if "GEOCLOUD_MASK_CLASSES" in tags or tags.get("GEOCLOUD_PRODUCT") == "mask" else "label"


def _read_mask(path: Path) -> tuple[np.ndarray, Any, str]:
    """The first band of ``path``, its grid ``(crs, transform)`` (None for a raster without
    georeferencing) and its codes (:func:`mask_codes`)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from .scene import without_georef_warning

    if not path.exists():
        raise SceneNotFoundError(f"mask {str(path)!r} does not exist; check the path")
    try:
        with without_georef_warning(), rasterio.open(path) as src:
            grid = (src.crs, src.transform) if src.crs is not None and not src.transform.is_identity else None
            return src.read(1), grid, mask_codes(src.tags())
    except RasterioIOError as e:
        from .errors import NotARasterError

        raise NotARasterError(
            f"{str(path)!r} is not a raster GDAL can read ({e}); pass a GeoTIFF mask"
        ) from e


def check_same_grid(pred: Path, truth: Path, pred_grid: Any, truth_grid: Any) -> None:
    """Raise when both rasters are georeferenced but not on the same grid (CRS, pixel size
    and origin, to a thousandth of a pixel): their pixels would be compared at different
    places.  Rasters without georeferencing cannot be checked and pass."""
    if pred_grid is None or truth_grid is None:
        return
    (pc, pt), (tc, tt) = pred_grid, truth_grid
    if pc == tc and pt.almost_equals(tt, precision=1e-3 * max(abs(pt.a), abs(pt.e))):
        return

    def show(crs: Any, t: Any) -> str:
        return f"{crs.to_string()}, {abs(t.a):g} x {abs(t.e):g} px from ({t.c:.3f}, {t.f:.3f})"

    raise InputError(
        f"prediction {str(pred)!r} ({show(pc, pt)}) and its truth {str(truth)!r} ({show(tc, tt)}) "
        "are not on the same grid; warp the truth onto the prediction's grid first (gdalwarp -te/-tr/-t_srs)"
    )


def _rasters(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in RASTER_SUFFIXES and p.is_file())


def _stem(path: Path, suffixes: Sequence[str] = PRED_SUFFIXES) -> str:
    s = path.stem
    for suf in suffixes:
        if s.endswith(suf):
            return s[: -len(suf)]
    return s


def pair_inputs(
    preds: Sequence[str | os.PathLike[str]], truths: Sequence[str | os.PathLike[str]]
) -> list[tuple[Path, Path]]:
    """Match predictions with truths.

    * one truth **folder**: each prediction file (or every raster in each prediction
      folder) is matched to the truth raster of the same stem, after dropping a
      ``_mask``/``_cloudmask``/``_pred`` suffix (``scene_mask.tif`` <-> ``scene.tif``);
    * as many truth **files** as prediction files: paired in order.
    """
    pred_paths = [Path(p) for p in preds]
    truth_paths = [Path(t) for t in truths]
    if not pred_paths or not truth_paths:
        raise InputError(
            "give at least one prediction and one --truth (a folder, or one file per prediction)"
        )
    for p in pred_paths + truth_paths:
        if not p.exists():
            raise SceneNotFoundError(f"{str(p)!r} does not exist; check the path")
    if len(truth_paths) == 1 and truth_paths[0].is_dir():
        by_stem = {p.stem: p for p in _rasters(truth_paths[0])}
        files: list[Path] = []
        for p in pred_paths:
            if not p.is_dir():
                files.append(p)
                continue
            # a folder of geocloud outputs: its masks, not its score or alpha rasters
            found = _rasters(p)
            masks = [q for q in found if _stem(q) != q.stem] or found
            files.extend(q for q in masks if _stem(q) in by_stem or q.stem in by_stem)
        pairs = []
        for f in files:
            t = by_stem.get(_stem(f)) or by_stem.get(f.stem)
            if t is None:
                raise InputError(
                    f"no truth raster named {_stem(f)}.tif in {str(truth_paths[0])!r} for {str(f)!r}; "
                    "name truths after the scenes, or pass one --truth file per prediction"
                )
            pairs.append((f, t))
        if not pairs:
            raise InputError(
                f"no prediction in {', '.join(map(str, pred_paths))} matches a truth raster in "
                f"{str(truth_paths[0])!r} by name; pass files and one --truth per file instead"
            )
        return pairs
    if any(p.is_dir() for p in pred_paths + truth_paths):
        raise InputError("with prediction folders, pass exactly one --truth folder")
    if len(truth_paths) != len(pred_paths):
        raise InputError(
            f"{len(pred_paths)} predictions but {len(truth_paths)} truths; pass one --truth per prediction "
            "(in the same order) or a single --truth folder"
        )
    return list(zip(pred_paths, truth_paths, strict=True))


def evaluate_arrays(pred: np.ndarray, truth: np.ndarray, *, name: str = "pred", pred_codes: str = "geocloud",
                    truth_codes: str = "label") -> dict[str, int]:  # fmt: skip
    """Confusion counts of cloud for two code arrays of the same shape: by default a
    geocloud mask (2 = cloud shadow) against a label raster (2 = thin cloud), see :func:`to_cloud`."""
    if pred.shape != truth.shape:
        raise InputError(
            f"prediction {name} has shape {pred.shape} but its truth has {truth.shape}; "
            "masks must be on the same grid as their truth"
        )
    return confusion(to_cloud(pred, f"prediction {name}", pred_codes), to_cloud(truth, f"truth of {name}", truth_codes))


def evaluate(
    pairs: Sequence[tuple[Path, Path]], progress: Callable[[int, int], None] | None = None
) -> EvalReport:
    """Metrics of each (prediction, truth) pair and pooled over all of them."""
    report = EvalReport()
    pooled = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for i, (p, t) in enumerate(pairs):
        (pred, pred_grid, pred_codes), (truth, truth_grid, truth_codes) = _read_mask(p), _read_mask(t)
        check_same_grid(p, t, pred_grid, truth_grid)
        c = evaluate_arrays(pred, truth, name=str(p), pred_codes=pred_codes, truth_codes=truth_codes)
        name = _stem(p)
        while name in report.scenes:
            name += "'"
        report.scenes[name] = metrics(c)
        report.pairs.append((str(p), str(t)))
        for k in pooled:
            pooled[k] += c[k]
        if progress is not None:
            progress(i + 1, len(pairs))
    report.pooled = metrics(pooled)
    return report


__all__ = [
    "CODES",
    "GEOCLOUD_CODES",
    "mask_codes",
    "EvalReport",
    "check_same_grid",
    "confusion",
    "evaluate",
    "evaluate_arrays",
    "metrics",
    "pair_inputs",
    "to_cloud",
]

"""Held-out figures and pictures of the ``restored`` product (docs/restore.md).

    python benchmarks/eval_restore.py --data ../shared/data [--weights W] [--json OUT.json]
        [--pictures docs/img] [--sidecar geocloud/models/weights/restore.json]

1. Figures (:func:`geocloud.training.restore_eval.evaluate_restore`): thick clouds composited
   over clear blocks of the held-out chips (the validation chips of the shared split, never
   trained on); PSNR / SSIM of the generator against the matte inversion with alpha clamped
   to 0.97 and rasterio.fill.fillnodata, where 0.8 < alpha < 0.97 and alpha >= 0.97, by the
   matte's alpha (the pixels the product fills) and by the true alpha (every pixel of the
   band); per chip, with the worst chips.
2. Pictures: real cloudy held-out chips through the engine (``process_scene`` with the
   products clear, restored, restored_quality), each as one PNG: the input, the clear
   product (holes magenta), the restored product, the quality (green original, yellow
   inverted, red synthesised).  One composite too (input, truth, the three methods).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geocloud.models.restore import load_generator
from geocloud.preview import write_png
from geocloud.restoration import use_generator
from geocloud.training.restore_eval import BANDS, METHODS, evaluate_restore

#: real cloudy held-out chips drawn in docs/img (catalog keys).
PICTURE_CHIPS = ("l8_biome/Shrubland_00_0614", "l8_biome/Wetlands_00_1426", "s2_oncloudn/jaag",
                 "ukis_samples/ukis_sentinel2")  # fmt: skip


def _rgb(x: np.ndarray, hi: float) -> np.ndarray:
    rgb = np.nan_to_num(x[[2, 1, 0]].astype(np.float32), nan=0.0).transpose(1, 2, 0)
    return (np.clip(rgb / hi, 0, 1) ** 0.8 * 255).astype(np.uint8)


def _holes(img: np.ndarray, holes: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[holes] = (255, 0, 255)
    return out


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    f = size / max(h, w)
    if f >= 1:
        return img
    ri = (np.arange(int(h * f)) / f).astype(int)
    ci = (np.arange(int(w * f)) / f).astype(int)
    return img[ri][:, ci]


def _row(panels: list[np.ndarray], size: int = 256) -> np.ndarray:
    ps = [_fit(p, size) for p in panels]
    h = max(p.shape[0] for p in ps)
    gap = np.full((h, 4, 3), 255, np.uint8)
    out = []
    for p in ps:
        pad = np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)
        out += [np.concatenate([p, pad]), gap]
    return np.concatenate(out[:-1], axis=1)


def picture(scene: Path, outdir: Path, name: str, scale: float | None = None) -> str:
    """One scene through the engine (mask, clear, restored, restored_quality, stats) as a PNG:
    the input, the clear product (holes magenta), the restored product, the quality."""
    import rasterio

    from geocloud.config import OutputConfig, ProcessConfig
    from geocloud.pipeline import process_scene
    from geocloud.scene import without_georef_warning

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ProcessConfig(output=OutputConfig(products=("mask", "clear", "restored", "restored_quality", "stats")))
        res = process_scene(scene, tmp, cfg, scale=scale)
        stats = json.loads(res.outputs["stats"][0].read_text())
        sensor = stats["sensor"]
        with without_georef_warning():
            with rasterio.open(res.outputs["clear"][0]) as c:
                clear = c.read().astype(np.float32)
            with rasterio.open(res.outputs["restored"][0]) as r:
                rest = r.read().astype(np.float32)
            with rasterio.open(res.outputs["restored_quality"][0]) as q:
                qa = q.read(1)
            with rasterio.open(scene) as s:
                y = s.read(sensor["band_indexes"]).astype(np.float32)
    gain = np.asarray(sensor["gain"], np.float32)[:, None, None]
    off = np.asarray(sensor["offset"], np.float32)[:, None, None]
    y, clear, rest = (v * gain + off for v in (y, clear, rest))
    hi = float(np.quantile(rest[:3][:, qa > 0], 0.98)) if (qa > 0).any() else 0.35
    col = np.zeros((*qa.shape, 3), np.uint8)
    for code, rgb in ((1, (40, 160, 40)), (2, (230, 200, 40)), (3, (220, 40, 40))):
        col[qa == code] = rgb
    panels = [_rgb(y, hi), _holes(_rgb(clear, hi), qa == 3), _rgb(rest, hi), col]
    write_png(_row(panels, 192), outdir / name)
    n = stats["restoration"]
    return f"{name}: {scene.name}, {n['restored_pixels']} px synthesised ({100 * (n['restored_fraction'] or 0):.1f} %)"


def real_pictures(data: Path, outdir: Path, chips: tuple[str, ...]) -> list[str]:
    from geocloud.training.data import load_catalog

    cat = {c.key: c for c in load_catalog(data, four_band_only=True)}
    return [picture(Path(c.scene), outdir, f"restore_{c.id}.png", c.scale if c.dtype != "float32" else None)
            for key in chips if (c := cat.get(key)) is not None]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--weights", type=Path, default=None, help="restore.safetensors (default: the shipped ones)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--pictures", type=Path, default=None, help="write the PNGs to this folder (docs/img)")
    ap.add_argument("--sidecar", type=Path, default=None, help="store the summary as `validation` in this sidecar")
    ap.add_argument("--worst", type=int, default=3)
    ap.add_argument("--scene", type=Path, action="append", default=[],
                    help="also picture this scene through the engine (e.g. sample_scenes/gf1_wfv_sample.tif)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = load_generator(args.weights)
    use_generator(net)  # the engine's pictures use these weights too
    t0 = time.perf_counter()
    composites: list[tuple[str, dict[str, np.ndarray]]] = []

    def keep(key: str, arrays: dict[str, np.ndarray]) -> None:
        if len(composites) < 40:
            composites.append((key, arrays))

    res = evaluate_restore(net, args.data, keep=keep)
    s = res["summary"]
    print(f"held-out chips: {', '.join(s['setup']['chips'])}  ({time.perf_counter() - t0:.0f} s)")
    for kind in ("matte_alpha", "true_alpha"):
        print(f"\nregions by the {kind.replace('_', ' ')}")
        print(f"{'band':<12} {'method':<11} {'PSNR dB':>8} {'SSIM':>7} {'pixels':>9}")
        for band, *_ in BANDS:
            for m in (*METHODS, "oracle"):
                f = s[kind][band][m]
                if f["psnr_db"] is None:
                    continue
                print(f"{band:<12} {m:<11} {f['psnr_db']:8.2f} {f['ssim']:7.4f} {f['pixels']:9d}")
            best = max((s[kind][band][m]["psnr_db"] or -1e9) for m in ("clamp", "fillnodata"))
            r = s[kind][band]["restore"]["psnr_db"]
            if r is not None:
                print(f"{band:<12} restore - better baseline: {r - best:+.2f} dB")
    print("\nworst chips (matte-alpha 0.8<a<0.97, restore PSNR):")
    rows = [(c["chip"], c["matte_alpha"]["0.8<a<0.97"]) for c in res["chips"]]
    rows = [(k, f) for k, f in rows if f["restore"]["psnr_db"] is not None]
    rows.sort(key=lambda kf: kf[1]["restore"]["psnr_db"])
    for k, f in rows[: args.worst]:
        print(f"  {k:<32} restore {f['restore']['psnr_db']:6.2f}  clamp {f['clamp']['psnr_db']:6.2f}  "
              f"fillnodata {f['fillnodata']['psnr_db']:6.2f} dB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    if args.sidecar:
        doc = json.loads(args.sidecar.read_text())
        doc["validation"] = {**s, "command": "python benchmarks/eval_restore.py --data ../shared/data"}
        args.sidecar.write_text(json.dumps(doc, indent=2) + "\n")
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
        # a composite: input, truth, clamp, fillnodata, restore
        key, a = max(composites, key=lambda ka: int(((ka[1]["alpha_hat"] > 0.8)).sum()))
        hi = float(np.quantile(a["x"][:3], 0.98))
        holes = a["alpha_hat"] > 0.8
        panels = [_rgb(a["y"], hi), _rgb(a["x"], hi),
                  _holes(_rgb(a["restore"], hi), np.zeros_like(holes)), _rgb(a["clamp"], hi), _rgb(a["fillnodata"], hi)]  # fmt: skip
        write_png(_row(panels, 160), args.pictures / "restore_composite.png")
        print(f"\nrestore_composite.png: {key} (input, truth, restore, clamp, fillnodata)")
        for line in real_pictures(args.data, args.pictures, PICTURE_CHIPS):
            print(line)
        for scene in args.scene:
            print(picture(scene, args.pictures, f"restore_{scene.stem}.png"))


if __name__ == "__main__":
    main()

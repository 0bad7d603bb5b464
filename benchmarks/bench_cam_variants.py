"""Parameters and CPU speed of the CAM variants compared in docs/cam.md.

    python benchmarks/bench_cam_variants.py [--threads 1] [--repeat 5]

Each variant is built with random weights (speed does not depend on them) and timed with
:meth:`CamModel.predict_region` on the block the engine uses by default (656 px: a 512 px
step, 56 px halos and a 16 px feather; region 528 px), torch at ``--threads``.  Prints
parameters, milliseconds per block and the model's Mpx/s of scene (step pixels per second).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from geocloud.models.cam import CamConfig, CamModel, CamNet, CamSidecar

VARIANTS: dict[str, dict[str, object]] = {
    "16/32/32 (the earlier default)": {"channels": (16, 32, 32)},
    "32/64/64 + spectral shape": {"channels": (32, 64, 64), "spectral_features": True},
    "32/64/64 + spectral shape + head 16": {"channels": (32, 64, 64), "spectral_features": True, "head_hidden": 16},
    "48/96/96 + spectral shape": {"channels": (48, 96, 96), "spectral_features": True},
    "32/64/64 + spectral shape, stem 2": {"channels": (32, 64, 64), "spectral_features": True, "stem": 2},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", default="dilate_last")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    block, step, halo = 656, 512, 64
    x = (rng.random((1, 4, block, block), dtype=np.float32) * 0.4).astype(np.float32)
    valid = np.ones((1, block, block), bool)
    region = (halo, block - halo, halo, block - halo)
    print(f"| variant | parameters | ms per {block} px block | Mpx/s of scene (1 model thread, {args.threads} torch thread) |")
    print("|---|---|---|---|")
    for name, kw in VARIANTS.items():
        cfg = CamConfig(**kw)  # type: ignore[arg-type]
        net = CamNet(cfg).eval()
        model = CamModel(net, CamSidecar(config=cfg, lpp_mode=args.mode))
        n_par = sum(p.numel() for p in net.parameters())
        model.predict_region(x, valid, region)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model.predict_region(x, valid, region)
            times.append(time.perf_counter() - t0)
        t = min(times)
        print(f"| {name} | {n_par} | {1000 * t:.1f} | {step * step / t / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Attentive restoration under thick cloud (after Qian et al., CVPR 2018).

Qian et al. remove raindrops, semi-transparent degradations through which part of the
background is still visible, with a generator guided by an *attention map* of the degraded
region and a discriminator that judges *local consistency* inside that region.  Thick but
not opaque cloud is the same kind of degradation; in geocloud the matte's opacity alpha
(:mod:`geocloud.compositing`: ``y = r_c + (1 - alpha) x``) is the physical prior of that
attention map.

* :class:`AttentionModule`: ``A = sigmoid(ATT_GAIN (alpha - alpha_max + ATT_SHIFT) + d)``,
  the prior from alpha plus a correction ``d`` from three 3x3 convolutions (initialised to
  zero, so training starts from the prior).
* :class:`SmoothFill`: the stable inversion spread into the holes, and the least-squares
  background of the cloud model beyond its reach (no parameters).
* :class:`RestoreGenerator`: a small encoder / dilated-context / decoder network that
  corrects the smooth fill (its output layer starts at zero).  Inputs
  (all TOA reflectance): the cloudy block ``y`` (4), alpha (1), ``r_c`` (4), the matte
  inversion where it is stable (alpha <= alpha_max, else 0) (4) and its mask (1), the
  inversion with alpha clamped to :data:`CLAMP_ALPHA` (4, clipped), and the attention map
  (1).  It returns the background ``x`` (4) and ``A``; the engine uses ``x`` only where
  the clear product is nodata (alpha > alpha_max).
* :class:`AttentiveDiscriminator`: a patch discriminator on ``(x, A)`` whose per-patch
  scores are averaged with the attention map as weights (the adversarial loss looks at
  the attended region, where generated and measured pixels meet).

Receptive field: :data:`RECEPTIVE_RADIUS` px on each side (computed by
:func:`receptive_radius` from the layer list, checked by the tests); the engine reads
:data:`HALO` px around each window.  Fully convolutional: any block size that is a
multiple of :data:`BLOCK_MULTIPLE` (smaller windows are padded).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..compositing import ALPHA_MAX

#: the inversion fed as a feature clamps alpha here (the first baseline of the benchmark).
CLAMP_ALPHA = 0.97
#: attention prior: sigmoid(ATT_GAIN * (alpha - alpha_max + ATT_SHIFT)).
ATT_GAIN = 20.0
ATT_SHIFT = 0.05
#: reflectance inputs are clipped to [0, X_CLIP].
X_CLIP = 1.6
#: the network's strides: block sides are padded to a multiple of this.
BLOCK_MULTIPLE = 4
#: dilations of the context blocks at 1/4 resolution.
DILATIONS = (1, 2, 4, 8)
#: the smooth fill the generator corrects: normalised convolution of the stable inversion at
#: 1/4 resolution with Gaussians of these sigmas (cells of 4 px), each cut at 3 sigma.
FILL_SIGMAS = (1.0, 3.0, 8.0)
#: the fill blends from the stable pixels to the least-squares background as the weight
#: of stable pixels in reach falls through this value.
FILL_REACH = 1e-3
#: the least-squares background's weak prior (reflectance) where the cloud is opaque.
FILL_PRIOR = 0.1
FILL_PRIOR_WEIGHT = 1e-2
IN_CHANNELS = 4 + 1 + 4 + 4 + 1 + 4  # y, alpha, r_c, stable inversion, its mask, clamped inversion

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "restore.safetensors"
SIDECAR_FILE = WEIGHTS_DIR / "restore.json"


def receptive_radius(dilations: tuple[int, ...] = DILATIONS) -> int:
    """Radius (px) of the generator's receptive field, from its layer list.

    Each 3x3 convolution of dilation d at stride j adds d * j; a 2x bilinear upsampling at
    output stride j adds j (one coarse pixel).  Attention module: three 3x3 at stride 1.
    Generator: e1 (j1), e2 (stride 2, j1), e3 (stride 2, j2), the context blocks (two
    convolutions each, j4), up (j4 -> 2), d2 (j2), up (j2 -> 1), d1, out (j1).
    """
    att = 3
    r = att + 1 + 1 + 2  # e1, e2, e3
    r += sum(2 * d * 4 for d in dilations)  # context blocks: two 3x3 per block
    r += 4 + 2  # upsample from 1/4 to 1/2, d2 conv at j2
    r += 2 + 1 + 1  # upsample from 1/2 to 1, d1, out
    # the smooth fill: 4 px pooling, the widest Gaussian (3 sigma cells of 4 px), the 4x
    # upsampling, then d1 and out
    fill = 3 + 4 * math.ceil(3 * max(FILL_SIGMAS)) + 4 + 1 + 1
    return max(r, fill)


RECEPTIVE_RADIUS = receptive_radius()
#: context the engine reads around each window (>= the receptive radius, a multiple of 8).
HALO = -(-RECEPTIVE_RADIUS // 8) * 8


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, padding_mode="replicate")


def prepare_inputs(
    y: torch.Tensor, alpha: torch.Tensor, r_c: torch.Tensor, alpha_max: float = ALPHA_MAX
) -> torch.Tensor:
    """The generator's 18 input channels from y (B,4,H,W), alpha (B,1,H,W), r_c (B,4,H,W)."""
    a = alpha.clamp(0.0, 1.0)
    stable = (a <= alpha_max).to(y.dtype)
    diff = y - r_c
    x_inv = (diff / (1.0 - a.clamp(max=alpha_max))).clamp(0.0, X_CLIP) * stable
    x_clamp = (diff / (1.0 - a.clamp(max=CLAMP_ALPHA))).clamp(0.0, X_CLIP)
    return torch.cat([y.clamp(0.0, X_CLIP), a, r_c.clamp(0.0, X_CLIP), x_inv, stable, x_clamp], dim=1)


class AttentionModule(nn.Module):
    """The attention map: the alpha prior refined by three small convolutions."""

    def __init__(self, width: int = 16, alpha_max: float = ALPHA_MAX) -> None:
        super().__init__()
        self.alpha_max = alpha_max
        self.net = nn.Sequential(
            _conv(IN_CHANNELS, width), nn.ReLU(inplace=True),
            _conv(width, width), nn.ReLU(inplace=True),
            _conv(width, 1),
        )  # fmt: skip
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def prior(self, alpha: torch.Tensor) -> torch.Tensor:
        return ATT_GAIN * (alpha - self.alpha_max + ATT_SHIFT)

    def forward(self, feats: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.prior(alpha) + self.net(feats))


class _Context(nn.Module):
    """Residual block of two dilated 3x3 convolutions."""

    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.c1 = _conv(ch, ch, dilation=dilation)
        self.c2 = _conv(ch, ch, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(nnf.relu(self.c1(x)))


class SmoothFill(nn.Module):
    """The stable inversion spread into the holes (no parameters), at 1/4 resolution,
    upsampled bilinearly to the pixels.

    * Near stable pixels: a normalised convolution of the stable inversion with the sum of
      Gaussians of :data:`FILL_SIGMAS` (peak 1, tapered smoothly to zero at 3 sigma), so the
      nearest stable pixels weigh most, as in an inverse-distance fill.
    * Farther than its reach: the least-squares background of the widest Gaussian's
      neighbourhood under the cloud model, ``sum w (1 - a)(y - r_c) / sum w (1 - a)^2``
      (a constant x seen through the cloud), with a weak prior towards
      :data:`FILL_PRIOR` where the cloud is opaque throughout.
    * The two blend by the weight of stable pixels in reach, ``d / (d + FILL_REACH)``.
    """

    def __init__(self) -> None:
        super().__init__()
        kernels = []
        for s in FILL_SIGMAS:
            r = math.ceil(3 * s)
            t = torch.arange(-r, r + 1, dtype=torch.float32)
            taper = 0.5 * (1 + torch.cos(math.pi * t / (r + 1)))  # smooth to zero at the cut
            kernels.append(torch.exp(-0.5 * (t / s) ** 2) * taper)
        self.kernels = kernels

    @staticmethod
    def _blur(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        c, r = v.shape[1], (k.numel() - 1) // 2
        kx = k.to(v).view(1, 1, 1, -1).expand(c, 1, 1, -1)
        ky = k.to(v).view(1, 1, -1, 1).expand(c, 1, -1, 1)
        return nnf.conv2d(nnf.conv2d(v, kx, padding=(0, r), groups=c), ky, padding=(r, 0), groups=c)

    def forward(self, x_inv: torch.Tensor, stable: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                r_c: torch.Tensor) -> torch.Tensor:  # fmt: skip
        h, w = x_inv.shape[-2:]
        t = (1.0 - alpha).clamp(0.0, 1.0)
        v = nnf.avg_pool2d(torch.cat([x_inv * stable, stable, t * (y - r_c), t * t], dim=1), 4)
        acc = torch.zeros_like(v[:, :5])
        for k in self.kernels:
            acc = acc + self._blur(v[:, :5], k)
        wide = self._blur(v[:, 5:], self.kernels[-1])
        near = acc[:, :4] / acc[:, 4:5].clamp_min(1e-6)
        ls = (wide[:, :4] + FILL_PRIOR_WEIGHT * FILL_PRIOR) / (wide[:, 4:5] + FILL_PRIOR_WEIGHT)
        b = acc[:, 4:5] / (acc[:, 4:5] + FILL_REACH)
        lo = b * near + (1 - b) * ls.clamp(0.0, X_CLIP)
        up = nnf.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False)
        return stable * x_inv + (1 - stable) * up


class RestoreGenerator(nn.Module):
    """Attention-guided generator: (y, alpha, r_c) -> (x, A).  See the module docs.

    x = the smooth fill (:class:`SmoothFill`) + a learned correction (the output layer
    starts at zero, so an untrained generator is the smooth fill).
    """

    def __init__(self, width: int = 24, alpha_max: float = ALPHA_MAX, dilations: tuple[int, ...] = DILATIONS) -> None:
        super().__init__()
        w = width
        self.width, self.alpha_max, self.dilations = width, alpha_max, tuple(dilations)
        self.attention = AttentionModule(16, alpha_max)
        self.e1 = _conv(IN_CHANNELS + 1, w)
        self.e2 = _conv(w, 2 * w, stride=2)
        self.e3 = _conv(2 * w, 3 * w, stride=2)
        self.context = nn.Sequential(*[_Context(3 * w, d) for d in dilations])
        self.d2 = _conv(3 * w + 2 * w, 2 * w)
        self.fill = SmoothFill()
        self.d1 = _conv(2 * w + w + 4, w)
        self.out = _conv(w, 4)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, y: torch.Tensor, alpha: torch.Tensor, r_c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = y.shape[-2:]
        ph, pw = (-h) % BLOCK_MULTIPLE, (-w) % BLOCK_MULTIPLE
        if ph or pw:
            y, alpha, r_c = (nnf.pad(t, (0, pw, 0, ph), mode="replicate") for t in (y, alpha, r_c))
        feats = prepare_inputs(y, alpha, r_c, self.alpha_max)
        att = self.attention(feats, alpha.clamp(0.0, 1.0))
        f1 = nnf.relu(self.e1(torch.cat([feats, att], dim=1)))
        f2 = nnf.relu(self.e2(f1))
        f3 = self.context(nnf.relu(self.e3(f2)))
        u2 = nnf.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        g2 = nnf.relu(self.d2(torch.cat([u2, f2], dim=1)))
        u1 = nnf.interpolate(g2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        base = self.fill(feats[:, 9:13], feats[:, 13:14], feats[:, :4], feats[:, 4:5], feats[:, 5:9])
        g1 = nnf.relu(self.d1(torch.cat([u1, f1, base], dim=1)))
        x = base + self.out(g1)
        return x[..., :h, :w], att[..., :h, :w]


class AttentiveDiscriminator(nn.Module):
    """Patch discriminator on (x, A); :meth:`score` weights the patches by attention."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(5, w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 1, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, att: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch scores (B,1,H/4,W/4) and the attention pooled to the same grid."""
        s = self.net(torch.cat([x, att], dim=1))
        return s, nnf.adaptive_avg_pool2d(att, s.shape[-2:])


# --------------------------------------------------------------------------- weights
def save_weights(net: RestoreGenerator, meta: dict[str, Any], weights: Path, sidecar: Path) -> None:
    """Write the generator's weights and its sidecar (``spec``, ``normalisation``, ``meta``)."""
    from safetensors.torch import save_file

    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(weights))
    doc = {
        "spec": {
            "name": "restore",
            "bands": ["blue", "green", "red", "nir"],
            "halo": HALO,
            "block_multiple": BLOCK_MULTIPLE,
            "block_size": int(meta.get("block_size", 128)),
            "receptive_radius": RECEPTIVE_RADIUS,
        },
        "width": net.width,
        "dilations": list(net.dilations),
        "alpha_max": net.alpha_max,
        "normalisation": {
            "input": "TOA reflectance, bands blue,green,red,nir; y, r_c and the inversions clipped to "
            f"[0, {X_CLIP}]; alpha in [0, 1]",
            "output": "background x, TOA reflectance",
        },
        **{k: v for k, v in meta.items() if k != "block_size"},
    }
    sidecar.write_text(json.dumps(doc, indent=2) + "\n")


def load_generator(weights: Path | None = None, verify: bool = True) -> RestoreGenerator:
    """The generator of ``weights`` (default: the shipped ones), its SHA-256 checked."""
    from safetensors.torch import load_file

    from .weights import WeightsMeta

    meta = WeightsMeta.read("restore", weights)
    if verify:
        meta.verify()
    raw = meta.raw
    net = RestoreGenerator(width=int(raw.get("width", 24)), alpha_max=float(raw.get("alpha_max", ALPHA_MAX)),
                           dilations=tuple(raw.get("dilations", DILATIONS)))  # fmt: skip
    net.load_state_dict(load_file(str(meta.path)))
    return net.eval()


@torch.inference_mode()
def restore_background(
    net: RestoreGenerator, y: np.ndarray, alpha: np.ndarray, r_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The generator on one window: y (4,H,W), alpha (H,W), r_c (4,H,W) reflectance ->
    (x (4,H,W), attention (H,W)) float32.  Non-finite inputs are taken as 0 (the caller
    uses x only on valid pixels)."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.nan_to_num(np.ascontiguousarray(a, np.float32), nan=0.0))[None]

    x, att = net(t(y), t(alpha)[:, None] if alpha.ndim == 2 else t(alpha), t(r_c))
    return x[0].numpy(), att[0, 0].numpy()


__all__ = [
    "HALO",
    "RECEPTIVE_RADIUS",
    "AttentionModule",
    "AttentiveDiscriminator",
    "RestoreGenerator",
    "load_generator",
    "prepare_inputs",
    "restore_background",
    "save_weights",
]

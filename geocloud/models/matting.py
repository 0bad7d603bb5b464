"""Cloud matting: predict cloud opacity ``alpha`` and cloud reflectance ``r_c``.

After Zou et al., "Generative Adversarial Training for Weakly Supervised Cloud Matting"
(ICCV 2019), with the imaging model of :mod:`geocloud.compositing`:
``y = r_c + (1 - alpha) * x``.  Three networks:

* :class:`CloudGenerator` (G): conditioned on a *real* cloudy block (plus noise), it
  paints a cloud layer (alpha, cloud colour) that is composited over a real clear block;
* :class:`CloudDiscriminator` (D): an LSGAN critic telling those composites from real
  cloudy blocks;
* :class:`MattingNet` (F): predicts (alpha, r_c) from a (synthetic) cloudy block; trained
  with L1 on alpha, r_c and the recomposed y (:mod:`geocloud.training.matting`).

All three work at reduced resolution: the block is average-pooled by :data:`POOL`
(alpha and r_c are smooth fields), per cell we keep the band means and the band
standard deviations (sub-cell texture).  F's low-resolution maps are brought back to
pixel resolution inside :meth:`MattingModel.predict` by a learned local linear model
(alpha follows the pixel's bands within a cell, coefficients interpolated bilinearly),
which keeps inference at a few hundredths of a second per megapixel on a CPU.

The cloud reflectance is parameterised as ``r_c = alpha * c`` with a per-band cloud
colour ``c`` (so ``r_c = 0`` wherever ``alpha = 0``, and a thick cloud shows its own
colour); a spectral-flatness prior during training keeps ``c`` grey-white.

Locality (see :mod:`geocloud.models.base`): the pooling grid is anchored at the block
origin, which the engine aligns to ``spec.block_multiple`` (= :data:`POOL`), so a pixel's
cells are the same in every block; F's receptive field is :data:`NET_RADIUS` cells and
bilinear interpolation of its coefficients reaches one cell further, so the output at a pixel depends on input
within ``(NET_RADIUS + 2) * POOL`` = :data:`HALO` pixels.  No per-block normalisation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..errors import ModelError
from .base import CANONICAL_BANDS, CloudModel, ModelSpec, Prediction, Region
from .upsample import upsample_region

#: average-pooling factor between the input block and the networks' grid.
POOL = 8
#: receptive-field radius of :class:`MattingNet`, in pooled cells.
NET_RADIUS = 6
#: pixels of context the model needs on each side (cells of the net + cell + bilinear).
HALO = (NET_RADIUS + 2) * POOL
#: fixed input normalisation of the pooled features (TOA reflectance): band means ...
FEATURE_OFFSET = 0.25
FEATURE_SCALE = 0.25
#: ... and the sub-cell standard deviations, as log(sqrt(var + eps**2)).
STD_EPS = 0.005
#: largest cloud colour (reflectance) the networks can produce.
C_MAX = 1.6

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "matting.safetensors"
SIDECAR_FILE = WEIGHTS_DIR / "matting.json"


# --------------------------------------------------------------------------- features
def pooled_features(x: torch.Tensor, valid: torch.Tensor | None = None, pool: int = POOL) -> torch.Tensor:
    """(B, C, H, W) reflectance -> (B, 2C, H/pool, W/pool) normalised cell features.

    Per cell: the mean of each band over valid pixels, normalised with the fixed
    :data:`FEATURE_OFFSET` / :data:`FEATURE_SCALE`, and ``log(sqrt(var + STD_EPS**2))``.
    ``H`` and ``W`` must be multiples of ``pool``.  Cells with no valid pixel get the
    features of a black cell (the engine ignores their outputs).
    """
    if valid is None:
        mean = nnf.avg_pool2d(x, pool)
        sq = nnf.avg_pool2d(x * x, pool)
    else:
        v = valid.unsqueeze(1).to(x.dtype)
        frac = nnf.avg_pool2d(v, pool).clamp_min(1e-6)
        xv = x * v
        mean = nnf.avg_pool2d(xv, pool) / frac
        sq = nnf.avg_pool2d(xv * x, pool) / frac
    var = (sq - mean * mean).clamp_min(0)
    log_std = 0.5 * torch.log(var + STD_EPS * STD_EPS)  # log of a softened std (smooth at 0)
    return torch.cat([(mean - FEATURE_OFFSET) / FEATURE_SCALE, log_std], dim=1)


def visible_extremes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) reflectance -> per pixel the darkest and the brightest visible value
    (min and max of blue, green, red), each (B, 1, H, W); elementwise, so exact."""
    lo = torch.minimum(torch.minimum(x[:, 0:1], x[:, 1:2]), x[:, 2:3])
    hi = torch.maximum(torch.maximum(x[:, 0:1], x[:, 1:2]), x[:, 2:3])
    return lo, hi


#: number of extra cell features :class:`MattingNet` takes with ``extremes=True``.
N_EXTREMES = 2


def cell_extremes(x: torch.Tensor, valid: torch.Tensor | None = None, pool: int = POOL) -> torch.Tensor:
    """(B, C, H, W) reflectance -> (B, 2, H/pool, W/pool): per cell, the darkest and the
    brightest visible value (min of min(blue, green, red), max of max), normalised like the
    band means.

    The darkest value is the cell's *dark channel* (He et al. 2009): cloud adds its own
    reflectance to every band, so a cell with one dark pixel can only be under thin cloud,
    whatever its mean.  Cells with no valid pixel get 0 (the engine ignores their outputs).
    """
    # elementwise minima and maxima, then rows before columns within a cell: the same
    # values as amin/amax over (channel) and (cell rows, cell columns) at once, which
    # torch computes about 3x slower on the CPU (min and max are exact in any order)
    lo, hi = visible_extremes(x)
    if valid is not None:
        v = valid.unsqueeze(1)
        lo = torch.where(v, lo, torch.full_like(lo, float("inf")))
        hi = torch.where(v, hi, torch.full_like(hi, float("-inf")))
    b, _, h, w = lo.shape
    rows = (b, 1, h // pool, pool, w)
    cols = (b, 1, h // pool, w // pool, pool)
    dark = lo.reshape(rows).amin(dim=3).reshape(cols).amin(dim=4)
    bright = hi.reshape(rows).amax(dim=3).reshape(cols).amax(dim=4)
    out = torch.cat([dark, bright], dim=1)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    return (out - FEATURE_OFFSET) / FEATURE_SCALE


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, padding_mode="replicate"),
        nn.LeakyReLU(0.1),
    )


# --------------------------------------------------------------------------- networks
class MattingNet(nn.Module):
    """F: pooled features (B, 2C, h, w) -> per cell (alpha, cloud colour c, slopes a).

    Four 3x3 convolutions with dilations 1, 1, 2, 2: a receptive-field radius of
    :data:`NET_RADIUS` cells.  Replicate padding, so block edges look like more of the same.

    Full-resolution alpha uses a learned *local linear model* (a deep guided filter,
    after the colour-line assumption of closed-form matting): within a cell
    ``alpha(p) = alpha_cell + a . (y(p) - mean_cell(y))``, with ``a`` and the offset
    interpolated bilinearly between cells (see :func:`matte`), so cloud edges and
    texture regain pixel resolution at the cost of upsampling 9 channels.
    """

    def __init__(
        self, bands: int = 4, width: int = 32, extremes: bool = False, guide: int = 0, hidden: int = 16
    ) -> None:
        super().__init__()
        self.bands = bands
        #: whether the net also takes the cells' darkest/brightest values (:func:`cell_extremes`).
        self.extremes = extremes
        #: channels of the context features brought to full resolution for the per-pixel head
        #: (0: no head, alpha is the local linear model alone, as before version 0.3).
        self.guide = guide
        self.body = nn.Sequential(
            _block(2 * bands + (N_EXTREMES if extremes else 0), width, 1),
            _block(width, width, 1),
            _block(width, width, 2),
            _block(width, width, 2),
        )
        self.head = nn.Conv2d(width, 1 + 2 * bands + guide, 1)
        with torch.no_grad():  # slopes start at 0: plain bilinear upsampling of alpha
            self.head.weight[1 + bands : 1 + 2 * bands].zero_()
            assert self.head.bias is not None
            self.head.bias[1 + bands : 1 + 2 * bands].zero_()
        self.pixel: nn.Sequential | None = None
        if guide:
            # the full-resolution head: per pixel, the upsampled context features, the
            # pixel's own 4 bands and its dark/bright visible value -> a correction of alpha
            self.pixel = nn.Sequential(
                nn.Conv2d(guide + bands + N_EXTREMES, hidden, 1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(hidden, hidden, 1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(hidden, 1, 1),
            )
            with torch.no_grad():  # starts as the local linear model alone
                self.pixel[-1].weight.zero_()
                self.pixel[-1].bias.zero_()

    def features(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The net's input for reflectance ``x``: :func:`pooled_features` (band means first)
        and, with ``extremes``, :func:`cell_extremes`."""
        feats = pooled_features(x, valid)
        if self.extremes:
            feats = torch.cat([feats, cell_extremes(x, valid)], dim=1)
        return feats

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per cell: alpha, cloud colour c, and the coefficients upsampled to full resolution
        (the 4 slopes of the local linear model, then the ``guide`` context features)."""
        out = self.head(self.body(feats))
        nb = self.bands
        alpha = torch.sigmoid(out[:, :1])
        colour = C_MAX * torch.sigmoid(out[:, 1 : 1 + nb])
        slope = out[:, 1 + nb :]
        return alpha, colour, slope

    def pixel_correction(self, guide_up: torch.Tensor, mean_up: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The full-resolution head: (B, guide, H, W) upsampled context, (B, 4, H, W) upsampled
        cell means and (B, 4, H, W) reflectance -> (B, 1, H, W) correction added to the local
        linear alpha.

        The pixel enters only *relative to its cells* (its bands, darkest and brightest visible
        value minus those of the interpolated cell means): the opacity level comes from the
        context, as in the local linear model, and a bright pixel alone does not read as cloud.
        """
        assert self.pixel is not None
        (lo, hi), (mlo, mhi) = visible_extremes(x), visible_extremes(mean_up)
        own = torch.cat([x - mean_up, lo - mlo, hi - mhi], dim=1).mul_(1.0 / FEATURE_SCALE)
        return self.pixel(torch.cat([guide_up, own], dim=1))


#: resolution of the U-Net's alpha: one value per FINE x FINE pixels, upsampled bilinearly.
#: (True alpha pooled by 2 and upsampled loses little: 42.7 dB for x_hat where alpha <= 0.5 on
#: the evaluation composites, against 27.7 dB pooled by 8.)
FINE = 2
#: the U-Net's context layers at 1/8: dilations (cells).
UNET_DILATIONS = (1, 2, 4, 1)
#: pixels of context :class:`MattingUNet` needs on each side: its receptive-field radius
#: (97 px, measured in tests/test_matting.py, ``test_unet_receptive_field_within_halo``), rounded up
#: to a multiple of POOL.
UNET_HALO = 104


def fine_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) reflectance -> (B, 7, H/2, W/2) features of each 2 x 2 cell, normalised
    like the band means: the 4 band means, the darkest value of any band, the darkest and
    the brightest visible value.

    The darkest value over all four bands is the dark channel of water (dark in nir) as well
    as of vegetation (dark in red and blue): cloud adds to every band, so it bounds alpha.
    """
    mean = nnf.avg_pool2d(x, FINE)
    lo_vis, hi_vis = visible_extremes(x)
    lo_all = torch.minimum(lo_vis, x[:, 3:4])
    dark = -nnf.max_pool2d(-torch.cat([lo_all, lo_vis], dim=1), FINE)
    bright = nnf.max_pool2d(hi_vis, FINE)
    return (torch.cat([mean, dark, bright], dim=1) - FEATURE_OFFSET) / FEATURE_SCALE


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.1)
    )


def _up2(t: torch.Tensor) -> torch.Tensor:
    return nnf.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)


class MattingUNet(nn.Module):
    """F as a U-Net: alpha at 1/:data:`FINE` of the pixel grid, the cloud colour per 8 x 8 cell.

    Encoder: :func:`fine_features` at 1/2 (two convolutions), a strided convolution to 1/4
    (two), another to 1/8, where the cell features of :class:`MattingNet`
    (:func:`pooled_features` and :func:`cell_extremes`) join and dilated convolutions
    (:data:`UNET_DILATIONS`) gather context.  The cloud colour is read there, per cell.
    Decoder: up to 1/4 and 1/2 with skip connections; alpha at 1/2 is upsampled bilinearly
    (:func:`matte_cells`).  No per-block normalisation; replicate padding; the block origin
    is on the 8-px grid, so every cell is the same in every block.  Nodata pixels enter the
    2 x 2 features as they are (the engine fills them inside the scene when the CAM runs
    beside the matte); the 8 x 8 cell features leave them out, as in :class:`MattingNet`.
    """

    def __init__(self, bands: int = 4, widths: tuple[int, int, int] = (16, 32, 48)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.bands = bands
        self.widths = tuple(widths)
        self.enc1 = nn.Sequential(_block(bands + 3, c1), _block(c1, c1))
        self.enc2 = nn.Sequential(_down(c1, c2), _block(c2, c2))
        self.enc3 = _down(c2, c3)
        self.ctx = nn.Sequential(
            _block(c3 + 2 * bands + N_EXTREMES, c3, UNET_DILATIONS[0]),
            *[_block(c3, c3, d) for d in UNET_DILATIONS[1:]],
        )
        self.colour_head = nn.Conv2d(c3, bands, 1)
        self.dec2 = _block(c3 + c2, c2)
        self.dec1 = _block(c2 + c1, c1)
        self.alpha_head = nn.Conv2d(c1, 1, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reflectance (B, 4, H, W), H and W multiples of 8 -> alpha (B, 1, H/2, W/2) and the
        cloud colour (B, 4, H/8, W/8)."""
        e1 = self.enc1(fine_features(x))
        e2 = self.enc2(e1)
        cells = torch.cat([self.enc3(e2), pooled_features(x, valid), cell_extremes(x, valid)], dim=1)
        z = self.ctx(cells)
        colour = C_MAX * torch.sigmoid(self.colour_head(z))
        d2 = self.dec2(torch.cat([_up2(z), e2], dim=1))
        d1 = self.dec1(torch.cat([_up2(d2), e1], dim=1))
        return torch.sigmoid(self.alpha_head(d1)), colour


class CloudGenerator(nn.Module):
    """G: a real cloudy block's pooled features + noise -> a cloud layer (alpha, colour).

    Conditioning on real cloudy blocks lets G copy the shapes, opacities and colours of
    real clouds; the noise channels let it vary them.  Works on the pooled grid; the
    layer is upsampled bilinearly before being composited over a full-resolution
    clear block.
    """

    def __init__(self, bands: int = 4, width: int = 32, noise: int = 4) -> None:
        super().__init__()
        self.noise = noise
        self.body = nn.Sequential(
            _block(2 * bands + noise, width, 1),
            _block(width, width, 2),
            _block(width, width, 4),
            _block(width, width, 1),
        )
        self.head = nn.Conv2d(width, 1 + bands, 1)

    def forward(
        self, feats: torch.Tensor, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if z is None:
            b, _, h, w = feats.shape
            z = torch.randn(b, self.noise, h, w, device=feats.device, dtype=feats.dtype)
        out = self.head(self.body(torch.cat([feats, z], dim=1)))
        alpha = torch.sigmoid(out[:, :1])
        colour = C_MAX * torch.sigmoid(out[:, 1:])
        return alpha, colour


class CloudDiscriminator(nn.Module):
    """D: pooled features of a block -> a patch map of LSGAN scores (real 1, fake 0)."""

    def __init__(self, bands: int = 4, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * bands, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


def upsample(t: torch.Tensor, pool: int = POOL) -> torch.Tensor:
    """Bilinear upsampling of a pooled map back to the pixel grid (cell centres)."""
    return upsample_region(t, pool)


def matte_cells(
    net: MattingNet | MattingUNet, x: torch.Tensor, valid: torch.Tensor | None = None, region: Region | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-resolution alpha (B,1,H,W) and the per-cell cloud colour c (B,C,H/POOL,W/POOL).

    The network sees the whole block (H, W multiples of POOL); with ``region`` (block pixel
    rows r0:r1, columns c0:c1) alpha is computed for the region only (equal to the crop).
    The cloud reflectance is ``r_c = alpha * upsample(c)`` (:func:`matte`).
    """
    if isinstance(net, MattingUNet):
        if not bool(torch.isfinite(x).all()):  # NaN/inf in the input: treat as 0
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        alpha_fine, colour_lo = net(x, valid)
        return _unit(upsample_region(alpha_fine, FINE, region)), colour_lo
    feats = net.features(x, valid)
    if not bool(torch.isfinite(feats).all()):  # NaN/inf in the input: treat as 0 (cheap check at low res)
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        feats = net.features(x, valid)
    alpha_lo, colour_lo, coef_lo = net(feats)
    nb = colour_lo.shape[1]
    slope_lo = coef_lo[:, :nb]
    cell_mean = feats[:, :nb] * FEATURE_SCALE + FEATURE_OFFSET
    offset_lo = alpha_lo - (slope_lo * cell_mean).sum(dim=1, keepdim=True)
    lo_maps = [offset_lo, coef_lo] + ([cell_mean] if net.guide else [])
    up = upsample_region(torch.cat(lo_maps, dim=1), POOL, region)
    if region is not None:
        r0, r1, c0, c1 = region
        x = x[..., r0:r1, c0:c1]
    alpha = (up[:, 1 : 1 + nb] * x).sum(dim=1, keepdim=True).add_(up[:, :1])
    if net.guide:
        # the guide features and cell means were upsampled with the slopes (one interpolation)
        g = 1 + nb + net.guide
        alpha = alpha + net.pixel_correction(up[:, 1 + nb : g], up[:, g:], x)
    return _unit(alpha), colour_lo


def _unit(alpha: torch.Tensor) -> torch.Tensor:
    """``alpha`` clamped to [0, 1]: in place at inference, out of place when training."""
    return alpha.clamp_(0.0, 1.0) if not alpha.requires_grad else alpha.clamp(0.0, 1.0)


def matte(
    net: MattingNet | MattingUNet, x: torch.Tensor, valid: torch.Tensor | None = None, region: Region | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-resolution (alpha (B,1,H,W), r_c (B,C,H,W)) for reflectance ``x`` (H, W multiples of POOL).

    With ``region`` (block pixel rows r0:r1, columns c0:c1) the network still sees the
    whole block, but alpha and r_c are computed for the region only (equal to the crop).
    """
    alpha, colour_lo = matte_cells(net, x, valid, region)
    return alpha, alpha * upsample_region(colour_lo, POOL, region)


# --------------------------------------------------------------------------- the model
def matting_spec(halo: int = HALO, **extra: Any) -> ModelSpec:
    """The :class:`ModelSpec` of the matting model (``extra`` goes into ``spec.extra``);
    ``halo``: :data:`HALO` for :class:`MattingNet`, :data:`UNET_HALO` for :class:`MattingUNet`."""
    return ModelSpec(
        name="matting",
        bands=CANONICAL_BANDS,
        halo=halo,
        block_multiple=POOL,
        block_size=512,
        outputs={"score": 1, "alpha": 1, "reflectance": len(CANONICAL_BANDS)},
        cells={"colour": len(CANONICAL_BANDS)},
        cell_size=POOL,
        derived=("reflectance",),
        derived_from={"reflectance": ("alpha",)},
        clear_mu=0.0,
        clear_sigma=0.1,
        threshold_k=3.0,
        default_threshold=0.5,
        extra=dict(extra),
    )


class MattingModel(CloudModel):
    """F wrapped in the :class:`CloudModel` contract.

    ``predict`` returns the maps ``alpha`` (B,1,H,W) in [0, 1], ``reflectance`` (B,4,H,W)
    = r_c in TOA reflectance, and ``score`` = alpha (so the model can also run alone).
    """

    def __init__(self, net: MattingNet | MattingUNet, spec: ModelSpec | None = None, device: str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.spec = spec if spec is not None else matting_spec(net_halo(net))

    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        """alpha, score (= alpha) and the cloud reflectance r_c of whole blocks, plus the
        cells; ``reflectance`` is formed here with :meth:`derive`, as the engine does."""
        pred = self.predict_region(x, valid, None)
        colour = self._upsampled_colour(pred.cells["colour"], x.shape[2], x.shape[3])
        pred.maps["reflectance"] = self.derive("reflectance", pred.maps, {"colour": colour})
        return pred

    @torch.inference_mode()
    def _upsampled_colour(self, colour_lo: np.ndarray, h: int, w: int) -> np.ndarray:
        up = upsample_region(torch.from_numpy(colour_lo), POOL, (0, h, 0, w))
        return up.numpy()

    @torch.inference_mode()
    def predict_region(self, x: np.ndarray, valid: np.ndarray, region: Region | None = None) -> Prediction:
        """alpha and score for ``region`` and the cloud colour cells of the whole block
        (``reflectance`` is derived later, see :meth:`derive`)."""
        if x.ndim != 4 or x.shape[1] != len(self.spec.bands):
            raise ModelError(
                f"matting model got an array of shape {x.shape}; expected (B, {len(self.spec.bands)}, H, W) "
                f"reflectance in band order {','.join(self.spec.bands)}"
            )
        b, _, h, w = x.shape
        region = region if region is not None else (0, h, 0, w)
        ph, pw = (-h) % POOL, (-w) % POOL
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        vt = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(self.device)
        all_valid = bool(vt.all())
        if ph or pw:  # the engine pads to block_multiple; be safe when called directly
            xt = nnf.pad(xt, (0, pw, 0, ph), mode="replicate")
            vt = nnf.pad(vt[:, None].float(), (0, pw, 0, ph), mode="replicate")[:, 0] > 0.5
        alpha, colour_lo = matte_cells(self.net, xt, None if all_valid else vt, region)
        a = alpha.float().cpu().numpy()
        # block_prob: a per-block summary only (mean opacity over the region, cheap: 1/64 of the pixels).
        block_prob = a[:, 0, POOL // 2 :: POOL, POOL // 2 :: POOL].reshape(b, -1).mean(axis=1)
        return Prediction(
            maps={"score": a, "alpha": a},
            block_prob=block_prob.astype(np.float32),
            cells={"colour": colour_lo.float().cpu().numpy()},
        )

    def derive(self, name: str, maps: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> np.ndarray:
        """``reflectance`` = r_c = alpha x the upsampled cloud colour (k, h, w) or (B, k, h, w)."""
        if name != "reflectance":
            return super().derive(name, maps, cells)
        alpha = maps["alpha"]
        return np.multiply(
            alpha, cells["colour"][..., : alpha.shape[-2], : alpha.shape[-1]], dtype=np.float32
        )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"pool": POOL, "alpha_max_default": self.spec.extra.get("alpha_max")})
        return d


# --------------------------------------------------------------------------- weights
def save_weights(
    net: MattingNet, meta: dict[str, Any], weights: Path = WEIGHTS_FILE, sidecar: Path | None = None
) -> None:
    """Write ``net`` as safetensors plus a JSON sidecar (``meta`` + the spec)."""
    from safetensors.torch import save_file

    from ..outputs import atomic_output, atomic_write_text

    weights = Path(weights)
    sidecar = Path(sidecar) if sidecar is not None else weights.with_suffix(".json")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # both through temporary names: an interrupted save never leaves a half-written file
    with atomic_output(weights, keep_suffix=True, what="weights ") as tmp:
        save_file(state, str(tmp))
        sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    spec = matting_spec(net_halo(net))
    if isinstance(net, MattingUNet):
        arch: dict[str, Any] = {
            "arch": "unet",
            "widths": list(net.widths),
            "fine": FINE,
            "dilations": list(UNET_DILATIONS),
            "extremes": True,
        }
        fine = (
            f"; per {FINE}x{FINE} cell: band means, min of all bands, min and max of blue,green,red, "
            f"(value - {FEATURE_OFFSET}) / {FEATURE_SCALE}"
        )
    else:
        arch = {
            "arch": "cells",
            "width": net.head.in_channels,
            "extremes": net.extremes,
            "guide": net.guide,
            "hidden": net.pixel[0].out_channels if net.pixel is not None else 0,
            "head_inputs": "pixel relative to the interpolated cell means" if net.guide else None,
        }
        fine = ""
    doc = {
        "spec": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items() if k != "extra"
        },
        "pool": POOL,
        **arch,
        "normalisation": {
            "input": "TOA reflectance, bands " + ",".join(spec.bands),
            "features": f"per {POOL}x{POOL} cell: (band mean - {FEATURE_OFFSET}) / {FEATURE_SCALE}, "
            f"0.5*log(band variance + {STD_EPS}**2)"
            + (
                f"; min of min(blue,green,red) and max of max(blue,green,red), "
                f"(value - {FEATURE_OFFSET}) / {FEATURE_SCALE}"
                if arch["extremes"]
                else ""
            )
            + fine,
        },
        **meta,
        "weights_sha256": sha,
    }
    atomic_write_text(sidecar, json.dumps(doc, indent=2, sort_keys=False) + "\n")


def load_net(
    weights: Path = WEIGHTS_FILE, sidecar: Path | None = None, device: str = "cpu"
) -> tuple[MattingNet | MattingUNet, dict[str, Any]]:
    """Load F and its sidecar metadata (safetensors: no pickle)."""
    from .weights import WeightsMeta

    weights = Path(weights)
    sidecar = Path(sidecar) if sidecar is not None else weights.with_suffix(".json")
    if not weights.exists() or not sidecar.exists():
        raise ModelError(
            f"matting weights {weights} (or sidecar {sidecar.name}) are missing; reinstall geocloud "
            f"or train them with 'geocloud train matting --data DIR --out {weights.parent}'"
        )
    from safetensors.torch import load_file

    if sidecar == weights.with_suffix(".json"):
        WeightsMeta.read("matting", weights).verify()  # the weights are the ones the sidecar describes
    meta = json.loads(sidecar.read_text())
    bands = meta.get("spec", {}).get("bands", list(CANONICAL_BANDS))
    if tuple(bands) != CANONICAL_BANDS or meta.get("pool", POOL) != POOL:
        raise ModelError(
            f"matting sidecar {sidecar} describes bands {bands} / pool {meta.get('pool')}; this geocloud "
            f"expects {list(CANONICAL_BANDS)} / {POOL}; retrain with 'geocloud train matting'"
        )
    net: MattingNet | MattingUNet
    arch = meta.get("arch", "cells")
    if arch == "unet":
        net = MattingUNet(bands=len(bands), widths=tuple(int(w) for w in meta["widths"]))  # type: ignore[arg-type]
    elif arch == "cells":
        net = MattingNet(
            bands=len(bands),
            width=int(meta.get("width", 32)),
            extremes=bool(meta.get("extremes", False)),
            guide=int(meta.get("guide", 0)),
            hidden=int(meta.get("hidden", 0)) or 16,
        )
    else:
        raise ModelError(
            f"matting sidecar {sidecar} names architecture {arch!r}; this geocloud knows 'cells' and "
            f"'unet'; upgrade geocloud or retrain with 'geocloud train matting'"
        )
    net.load_state_dict(load_file(str(weights), device="cpu"))
    return net.to(device), meta


def net_halo(net: MattingNet | MattingUNet) -> int:
    """The context a net needs on each side of a pixel (its spec's halo)."""
    return UNET_HALO if isinstance(net, MattingUNet) else HALO


def load(device: str = "cpu", weights: Path | None = None) -> MattingModel:
    """Registry factory: the shipped matting model on ``device``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net, meta = load_net(weights or WEIGHTS_FILE, device=device)
    extra = {k: v for k, v in meta.items() if k not in ("spec",)}
    return MattingModel(net, matting_spec(net_halo(net), **extra), device=device)

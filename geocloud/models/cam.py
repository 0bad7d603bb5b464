"""WDCD-style weakly supervised cloud activation maps (Li et al., RSE 250:112045, 2020).

Training network (:class:`CamNet`), on blocks of ``train_block`` pixels::

    x (B,4,S,S) reflectance
    -> fixed per-band affine normalisation  (x - band_mean) / band_std   [sidecar]
    -> stem: AvgPool 4x4 / 4                       (fixed, kept at inference)
    -> conv3x3 4->c1, BN, ReLU                     "stage 1"   at 1/4
    -> MaxPool 2x2 / 2                             "pool 1"    <- pruned by LPP
    -> conv3x3 c1->c2, BN, ReLU                    "stage 2"   at 1/8
    -> MaxPool 2x2 / 2                             "pool 2"    <- pruned by LPP
    -> conv3x3 c2->c3, BN, ReLU                    "stage 3"   at 1/16  -> F (B,c3,h,w)
    -> global convolutional pooling  delta_k = sum_ij W_k(i,j) F_k(i,j)   (W: c3 x h x w, learned)
    -> linear c3 -> 2 (clear, cloudy) -> softmax, cross-entropy on block labels

Local pooling pruning (LPP, inference): both MaxPool layers are removed (``mode="remove"``,
as in WDCD) or replaced by stride-1 max pools with the following convolutions dilated
(``mode="dilate"``, a trous: exactly the training network evaluated at every shift).
The stem is kept, so F comes out at 1/4 of the input resolution instead of 1/16.
The dense, class-weighted, delta-normalised CAM is::

    z(p) = sum_k (w_cloudy,k - w_clear,k) * (sum_ij W_k(i,j)) * F_k(p) + (b_cloudy - b_clear)

i.e. each feature is scaled by the total weight its GCP map gives it, so z(p) is the
logit the block classifier would give a block that looks everywhere like the
neighbourhood of p.  It is mapped to the score with FIXED constants from the sidecar,
``score = clip((z - z_lo) / (z_hi - z_lo), 0, 1)``, and upsampled bilinearly (x4) to the
input grid.  Nothing depends on block statistics, so the engine's mosaic is exact.
A confidently clear neighbourhood has a strongly negative z, hence score ~ 0: that is
the (dense, local) form of "a confidently clear block contributes no cloud".
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .base import CANONICAL_BANDS, CloudModel, ModelSpec, Prediction, Region
from .upsample import upsample_region

#: where the shipped weights live (package data).
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "cam.safetensors"

LPP_MODES = ("dilate", "dilate_last", "remove", "none")


@dataclass(frozen=True)
class CamConfig:
    """Architecture of :class:`CamNet` (stored in the sidecar)."""

    channels: tuple[int, int, int] = (16, 32, 32)
    stem: int = 4
    train_block: int = 64
    band_mean: tuple[float, ...] = (0.15, 0.15, 0.15, 0.2)
    band_std: tuple[float, ...] = (0.15, 0.15, 0.15, 0.15)
    #: hidden units of the optional full-resolution pixel branch (1x1 convolutions); 0: pure CAM.
    pixel_hidden: int = 0
    #: share of a block's pixels whose mean logit is the block's MIL logit (the 5 % block rule).
    topk_fraction: float = 0.05
    #: add the brightness-free spectral shape to the input (:func:`spectral_shape`):
    #: 5 more channels at the stem's resolution.
    spectral_features: bool = False
    #: hidden channels of the full-resolution refinement head (stage 2, trained by
    #: self-training after the CAM; :class:`RefineHead`); 0: none, the score is the CAM's.
    head_hidden: int = 0
    #: the head also sees the spectral baseline's per-pixel score (models.spectral).
    head_spectral: bool = False

    @property
    def in_channels(self) -> int:
        return 4 + (SHAPE_CHANNELS if self.spectral_features else 0)

    @property
    def gcp_size(self) -> int:
        return self.train_block // (self.stem * 4)


#: channels :func:`spectral_shape` adds.
SHAPE_CHANNELS = 5
#: reflectance floor of the logarithms in :func:`spectral_shape`.
SHAPE_FLOOR = 0.01


def spectral_shape(x: torch.Tensor) -> torch.Tensor:
    """Brightness-free spectral shape of reflectance ``x`` (B, 4, H, W): (B, 5, H, W).

    ``l = log(max(x, 0.01))``; the channels are ``l_i - mean(l)`` for the four bands (the
    shape of the spectrum: flat for cloud and snow-free haze, rising to the NIR for soil
    and vegetation, falling for snow and water) and ``mean(l)`` (log brightness).  A gain
    that scales every band alike moves only the last channel, so bright land is told from
    cloud by its shape rather than by how bright it is.  Per pixel, no context.
    """
    lg = torch.log(x.clamp(min=SHAPE_FLOOR))
    m = lg.mean(dim=1, keepdim=True)
    return torch.cat([lg - m, m], dim=1)


#: context of :class:`RefineHead` in pixels (two 3x3 convolutions).
HEAD_RADIUS = 2


class RefineHead(nn.Module):
    """Stage 2: a full-resolution cloud logit from each pixel's neighbourhood and the CAM.

    Input, per pixel: the 4 normalised bands, their spectral shape
    (:func:`spectral_shape`), the CAM score s in [0, 1] upsampled to full resolution and,
    with ``spectral``, the spectral baseline's score (:func:`geocloud.models.spectral.spectral_score`);
    two 3x3 convolutions and a 1x1 give the logit u, and the score is sigmoid(u).  The
    CAM says where cloud is (its context tells snow, water and bright land from cloud);
    the head says which pixels there are cloud, at the input's resolution (small
    cumulus, sharp edges).  It is trained after the CAM, whose weights stay fixed, on
    targets made without pixel labels (:func:`geocloud.training.cam.train_head`).
    """

    def __init__(self, hidden: int, spectral: bool = False) -> None:
        super().__init__()
        self.spectral = spectral
        self.conv1 = nn.Conv2d(4 + SHAPE_CHANNELS + 1 + int(spectral), hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 1, 1)

    def forward(self, xn: torch.Tensor, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Logit (B, 1, H, W) from normalised bands ``xn``, reflectance ``x`` and CAM score ``s``."""
        parts = [xn, spectral_shape(x), s]
        if self.spectral:
            from .spectral import spectral_score_torch

            parts.append(spectral_score_torch(x))
        f = torch.cat(parts, dim=1)
        return self.out(F.relu(self.conv2(F.relu(self.conv1(f)))))


class CamNet(nn.Module):
    """The block classifier with global convolutional pooling (see module docstring)."""

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, config: CamConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CamConfig()
        c1, c2, c3 = cfg.channels
        self.register_buffer("mean", torch.tensor(cfg.band_mean, dtype=torch.float32).view(1, 4, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.band_std, dtype=torch.float32).view(1, 4, 1, 1))
        self.conv1 = nn.Conv2d(cfg.in_channels, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        g = cfg.gcp_size
        #: GCP spatial weights W_k(i, j), one map per channel; start as a plain mean.
        self.gcp = nn.Parameter(torch.full((c3, g, g), 1.0 / (g * g)))
        self.fc = nn.Linear(c3, 2)
        if cfg.pixel_hidden:
            self.pix1 = nn.Conv2d(4, cfg.pixel_hidden, 1)
            self.pix2 = nn.Conv2d(cfg.pixel_hidden, 1, 1)
            #: weight of the (upsampled) CAM in the pixel logit u = g + mix * z.
            self.mix = nn.Parameter(torch.tensor(1.0))
        self.head = RefineHead(cfg.head_hidden, cfg.head_spectral) if cfg.head_hidden else None

    def head_logits(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Stage-2 logit (B, 1, H, W) of reflectance ``x`` given the upsampled CAM score ``s``."""
        if self.head is None:
            raise ModelError("this CAM has no refinement head (head_hidden = 0)")
        return self.head((x - self.mean) / self.std, x, s)

    def pixel_logits(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Training path of the pixel logit u = g(x) + mix * upsample(z): (B, H, W)."""
        g = self.pix2(F.relu(self.pix1((x - self.mean) / self.std)))[:, 0]
        up = F.interpolate(cells[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return g + self.mix * up

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Training path: F (B, c3, S/16, S/16)."""
        x = F.avg_pool2d(x, self.config.stem)
        if self.config.spectral_features:
            x = torch.cat([(x - self.mean) / self.std, spectral_shape(x)], dim=1)
        else:
            x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.relu(self.bn3(self.conv3(x)))

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        """Global convolutional pooling: delta (B, c3)."""
        if f.shape[-2:] != self.gcp.shape[-2:]:
            raise ModelError(
                f"GCP expects {tuple(self.gcp.shape[-2:])} feature cells, got {tuple(f.shape[-2:])}; "
                f"train on blocks of {self.config.train_block} px"
            )
        return (f * self.gcp.unsqueeze(0)).sum(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block logits (B, 2)."""
        return self.fc(self.pool(self.features(x)))

    def cam_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-weighted, delta-normalised CAM weights: v_k = (w_cloudy,k - w_clear,k) * sum_ij W_k(i,j), and bias."""
        v = (self.fc.weight[1] - self.fc.weight[0]) * self.gcp.sum(dim=(-2, -1))
        return v, self.fc.bias[1] - self.fc.bias[0]

    def cell_logits(self, f: torch.Tensor) -> torch.Tensor:
        """The CAM z at the feature cells of the training path: (B, h, w)."""
        v, b = self.cam_weights()
        return torch.einsum("bkhw,k->bhw", f, v) + b

    def logits_and_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block logits (B, 2) and cell CAM (B, h, w) from one pass."""
        f = self.features(x)
        return self.fc(self.pool(f)), self.cell_logits(f)


# --------------------------------------------------------------------------- LPP


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _max2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (stride 2, odd edges dropped), as two elementwise maxima of
    strided views: the same values, about 10x faster than torch's CPU pooling kernel."""
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    x = torch.maximum(x[..., 0::2], x[..., 1::2])
    return torch.maximum(x[..., 0::2, :], x[..., 1::2, :])


def _max2_dense(x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """A 2x2 max pool at stride 1 (the pruned form of a stride-2 pool), same size out.

    ``dilation=1``: ``max_pool2d(pad(x, (0, 1, 0, 1), replicate), 2, stride=1)``;
    ``dilation=2``: ``max_pool2d(pad(x, (1, 1, 1, 1), replicate), 2, stride=1, dilation=2)``.
    Computed as elementwise maxima of shifted views (replicate padding), which gives the
    same values as torch's pooling kernel, much faster on CPU.
    """
    lo, hi = (0, 1) if dilation == 1 else (1, 1)
    x = F.pad(x, (lo, hi, lo, hi), mode="replicate")
    d = dilation
    x = torch.maximum(x[..., :-d], x[..., d:])
    return torch.maximum(x[..., :-d, :], x[..., d:, :])


class DenseCam(nn.Module):
    """The pruned network: z map (B, 1, H/stem, W/stem) from the weights of a trained :class:`CamNet`.

    ``mode``: ``"remove"`` (WDCD: pooling layers removed), ``"dilate"`` (stride-1 pools and
    dilated convolutions: exact dense evaluation), or ``"none"`` (no pruning: z at 1/16,
    upsampled x4 to 1/4).  BatchNorm is folded into the convolutions.
    """

    # buffers, declared for the type checker
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    cam_w: torch.Tensor
    cam_b: torch.Tensor
    pw1: torch.Tensor
    pb1: torch.Tensor
    pw2: torch.Tensor
    pb2: torch.Tensor
    mix: torch.Tensor

    def __init__(self, net: CamNet, mode: str = "remove") -> None:
        super().__init__()
        if mode not in LPP_MODES:
            raise ModelError(f"LPP mode {mode!r} is unknown; use one of {', '.join(LPP_MODES)}")
        self.mode = mode
        self.stem = net.config.stem
        with torch.no_grad():
            net = net.eval()
            w1, b1 = _fold(net.conv1, net.bn1)
            w2, b2 = _fold(net.conv2, net.bn2)
            w3, b3 = _fold(net.conv3, net.bn3)
            # fold the fixed input normalisation into conv1: conv((x - m)/s) = conv'(x) + b'
            # (exact in the interior; zero padding at block edges differs, and lies in the halo)
            # (the spectral-shape channels, if any, follow the 4 bands and are not normalised)
            m, s = net.mean.view(1, 4, 1, 1), net.std.view(1, 4, 1, 1)
            self.shape = bool(net.config.spectral_features)
            w1n = w1.clone()
            w1n[:, :4] = w1[:, :4] / s
            b1n = b1 - (w1[:, :4] * (m / s)).sum(dim=(1, 2, 3))
            cam_w, cam_b = net.cam_weights()
            self.pixel = bool(net.config.pixel_hidden)
            if self.pixel:
                m4, s4 = net.mean.view(4), net.std.view(4)
                assert net.pix1.bias is not None and net.pix2.bias is not None
                pw1 = net.pix1.weight[:, :, 0, 0] / s4  # (h, 4)
                pb1 = net.pix1.bias - (net.pix1.weight[:, :, 0, 0] * (m4 / s4)).sum(dim=1)
                self.register_buffer("pw1", pw1.detach().clone().view(-1, 4, 1, 1))
                self.register_buffer("pb1", pb1.detach().clone())
                self.register_buffer("pw2", net.pix2.weight.detach().clone())
                self.register_buffer("pb2", net.pix2.bias.detach().clone())
                self.register_buffer("mix", net.mix.detach().clone().view(1))
        #: the refinement head, if any, with the input normalisation it needs.
        self.head = copy.deepcopy(net.head) if net.head is not None else None
        self.register_buffer("mean", net.mean.detach().clone())
        self.register_buffer("std", net.std.detach().clone())
        self.register_buffer("w1", w1n.detach().clone())
        self.register_buffer("b1", b1n.detach().clone())
        self.register_buffer("w2", w2.detach().clone())
        self.register_buffer("b2", b2.detach().clone())
        self.register_buffer("w3", w3.detach().clone())
        self.register_buffer("b3", b3.detach().clone())
        self.register_buffer("cam_w", cam_w.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("cam_b", cam_b.detach().clone().view(1))

    #: context cells (at 1/stem) added around the block by replicate padding before the
    #: convolutions, so the block's own edge sees no zero padding; cropped afterwards.
    PAD_CELLS = {"remove": 4, "dilate": 10, "dilate_last": 10, "none": 16}
    #: output stride of z, in stem cells.
    STRIDE = {"remove": 1, "dilate": 1, "dilate_last": 2, "none": 4}

    @property
    def stride(self) -> int:
        """Output stride of z in input pixels (4, 8 or 16)."""
        return self.stem * self.STRIDE[self.mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z (B, 1, H / stride, W / stride)."""
        x = F.avg_pool2d(x, self.stem)
        if self.shape:
            x = torch.cat([x, spectral_shape(x)], dim=1)
        r = self.PAD_CELLS[self.mode]
        h, w = x.shape[-2:]
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        if self.mode == "remove":
            x = F.relu(F.conv2d(x, self.w2, self.b2, padding=1))
            x = F.relu(F.conv2d(x, self.w3, self.b3, padding=1))
        elif self.mode == "dilate":
            x = _max2_dense(x)
            x = F.relu(F.conv2d(x, self.w2, self.b2, padding=2, dilation=2))
            x = _max2_dense(x, dilation=2)
            x = F.relu(F.conv2d(x, self.w3, self.b3, padding=4, dilation=4))
        elif self.mode == "dilate_last":
            x = _max2(x)
            x = F.relu(F.conv2d(x, self.w2, self.b2, padding=1))
            x = _max2_dense(x)
            x = F.relu(F.conv2d(x, self.w3, self.b3, padding=2, dilation=2))
        else:
            x = _max2(x)
            x = F.relu(F.conv2d(x, self.w2, self.b2, padding=1))
            x = _max2(x)
            x = F.relu(F.conv2d(x, self.w3, self.b3, padding=1))
        z = (x * self.cam_w).sum(dim=1, keepdim=True) + self.cam_b
        k = self.STRIDE[self.mode]
        return z[..., r // k : (r + h) // k, r // k : (r + w) // k]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution logit u (B, 1, H, W): upsampled z, plus the pixel branch if any."""
        z = F.interpolate(self(x), scale_factor=self.stride, mode="bilinear", align_corners=False)
        if not self.pixel:
            return z
        g = F.conv2d(F.relu(F.conv2d(x, self.pw1, self.pb1)), self.pw2, self.pb2)
        return g + self.mix * z

    def head_logits(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Stage-2 logit of reflectance ``x`` given the upsampled CAM score ``s`` (same size)."""
        assert self.head is not None
        return self.head((x - self.mean) / self.std, x, s)

    def receptive_radius(self) -> int:
        """Receptive-field radius of the score, in input pixels (upper bound, incl. the stem)."""
        # in stem cells: conv1 + pool1 + conv2 + pool2 + conv3 (+ their dilations), plus the
        # bilinear upsampling (one output cell) and one cell of slack for the stem's extent
        cells = {"remove": 3, "dilate": 10, "dilate_last": 10, "none": 10}[self.mode]
        return self.stem * (cells + self.STRIDE[self.mode] + 1) + (HEAD_RADIUS if self.head is not None else 0)


# --------------------------------------------------------------------------- wrapper


@dataclass
class CamSidecar:
    """The JSON sidecar of a CAM weight file."""

    config: CamConfig
    lpp_mode: str = "remove"
    z_lo: float = -8.0
    z_hi: float = 4.0
    #: per-pixel brightness gate of the score: {"method": "vis_min_ramp", "lo": .., "hi": ..}; {} = off.
    refine: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["config"].items()}
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> CamSidecar:
        cfg = d["config"]
        config = CamConfig(
            channels=tuple(cfg["channels"]),
            stem=int(cfg["stem"]),
            train_block=int(cfg["train_block"]),
            band_mean=tuple(cfg["band_mean"]),
            band_std=tuple(cfg["band_std"]),
            pixel_hidden=int(cfg.get("pixel_hidden", 0)),
            topk_fraction=float(cfg.get("topk_fraction", 0.05)),
            spectral_features=bool(cfg.get("spectral_features", False)),
            head_hidden=int(cfg.get("head_hidden", 0)),
            head_spectral=bool(cfg.get("head_spectral", False)),
        )
        return CamSidecar(
            config=config,
            lpp_mode=d.get("lpp_mode", "remove"),
            z_lo=float(d["z_lo"]),
            z_hi=float(d["z_hi"]),
            refine=d.get("refine", {}),
            spec=d.get("spec", {}),
            training=d.get("training", {}),
            validation=d.get("validation", {}),
        )


def build_spec(sidecar: CamSidecar, dense: DenseCam) -> ModelSpec:
    s = sidecar.spec
    # twice the receptive radius: the engine's nodata fill (geocloud.models.fill) that a pixel
    # reads comes from valid pixels up to that far away, which must lie in every block weighing it
    need = int(np.ceil((2 * dense.receptive_radius() + dense.stem) / 8) * 8)
    halo = need if dense.mode != sidecar.lpp_mode else max(int(s.get("halo", 0)), need)
    return ModelSpec(
        name=s.get("name", "cam"),
        bands=tuple(s.get("bands", CANONICAL_BANDS)),
        halo=halo,
        fill_nodata=True,
        block_multiple=max(int(s.get("block_multiple", 1)), dense.stride),
        block_size=int(s.get("block_size", 512)),
        outputs={"score": 1},
        clear_mu=float(s.get("clear_mu", 0.1)),
        clear_sigma=float(s.get("clear_sigma", 0.1)),
        threshold_k=float(s.get("threshold_k", 3.0)),
        default_threshold=float(s.get("default_threshold", 0.5)),
        grow_ratio=float(s.get("grow_ratio", 1.0)),
        grow_radius=int(s.get("grow_radius", 0)),
        extra={
            "lpp_mode": sidecar.lpp_mode,
            "z_lo": sidecar.z_lo,
            "z_hi": sidecar.z_hi,
            "training": sidecar.training,
            "validation": sidecar.validation,
        },
    )


class CamModel(CloudModel):
    """A trained :class:`CamNet`, served through LPP as a dense cloud score (see module docstring)."""

    def __init__(self, net: CamNet, sidecar: CamSidecar, device: str = "cpu", *, lpp_mode: str | None = None):
        self.net = net
        self.sidecar = sidecar
        self.device = torch.device(device)
        self.dense = DenseCam(net, lpp_mode or sidecar.lpp_mode).to(self.device).eval()
        self.spec = build_spec(sidecar, self.dense)
        self.z_lo = float(sidecar.z_lo)
        self.z_hi = float(sidecar.z_hi)
        self.refine = dict(sidecar.refine)

    def check_bands(self, bands: tuple[str, ...] | list[str]) -> None:
        """Raise :class:`ModelError` unless ``bands`` are the sidecar's bands, in order."""
        bands = tuple(b.lower() for b in bands)
        if bands != tuple(self.spec.bands):
            raise ModelError(
                f"model {self.spec.name!r} expects bands {','.join(self.spec.bands)} but the input has "
                f"{','.join(bands) or 'none'}; pass --bands to name the scene's bands in order "
                f"(a 3-band RGB scene cannot be used: use a 4-band blue,green,red,nir scene)"
            )

    @torch.no_grad()
    def score_tensor(self, x: torch.Tensor, gate: bool = True, region: Region | None = None) -> torch.Tensor:
        """Score (B, 1, H, W) in [0, 1] for reflectance ``x`` (B, 4, H, W) on the model's device.

        ``gate=False`` leaves out the brightness gate (``predict`` applies it in numpy on CPU).
        With ``region`` (block pixel rows r0:r1, columns c0:c1) only that part of the score
        is upsampled and returned; it equals the crop of the whole score.
        """
        h, w = x.shape[-2:]
        r0, r1, c0, c1 = region if region is not None else (0, h, 0, w)
        m = self.spec.block_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if self.dense.pixel:
            u = self.dense.logits(x)[..., r0:r1, c0:c1]
            s = ((u - self.z_lo) / (self.z_hi - self.z_lo)).clamp_(0.0, 1.0)
        elif self.dense.head is not None:
            # the head needs HEAD_RADIUS px around the region (within the block)
            m = HEAD_RADIUS
            a0, a1, b0, b1 = max(r0 - m, 0), min(r1 + m, x.shape[-2]), max(c0 - m, 0), min(c1 + m, x.shape[-1])
            z = self.dense(x)
            z = z.sub_(self.z_lo).mul_(1.0 / (self.z_hi - self.z_lo)).clamp_(0.0, 1.0)
            cam = upsample_region(z, self.dense.stride, (a0, a1, b0, b1))
            u = self.dense.head_logits(x[..., a0:a1, b0:b1].contiguous(), cam)
            s = torch.sigmoid(u[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0])
        else:
            # normalise at the CAM's own resolution, then upsample (fewer full-resolution passes)
            z = self.dense(x)
            z = z.sub_(self.z_lo).mul_(1.0 / (self.z_hi - self.z_lo)).clamp_(0.0, 1.0)
            s = upsample_region(z, self.dense.stride, (r0, r1, c0, c1))
        if self.refine and gate:
            s.mul_(self.brightness_gate(x[..., r0:r1, c0:c1]))
        return s

    def brightness_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel gate in [0, 1]: a ramp of min(blue, green, red) from ``lo`` to ``hi``.

        Cloud, thick or thin, adds its own reflectance to every visible band, so a pixel
        darker than ``lo`` in some visible band cannot be under cloud.  The CAM says *where*
        cloud is (its context rejects snow, ice, bright roofs and water), the gate says
        *which pixels* there are bright enough to be it; this trims the CAM's spill onto
        dark clear land next to clouds.  Purely per pixel: no halo.
        """
        lo, hi = float(self.refine["lo"]), float(self.refine["hi"])
        g = x[:, :3].amin(dim=1, keepdim=True)
        return g.sub_(lo).mul_(1.0 / (hi - lo)).clamp_(0.0, 1.0)

    def _gate_numpy(self, x: np.ndarray, score: np.ndarray) -> None:
        """``score *= gate(x)`` in place, in numpy (faster than torch for this on CPU)."""
        lo, hi = np.float32(self.refine["lo"]), np.float32(self.refine["hi"])
        g = np.minimum(x[:, 0], x[:, 1])
        np.minimum(g, x[:, 2], out=g)
        g -= lo
        g *= np.float32(1.0) / (hi - lo)
        np.clip(g, 0.0, 1.0, out=g)
        score[:, 0] *= g

    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        return self.predict_region(x, valid, None)

    @torch.no_grad()
    def predict_region(self, x: np.ndarray, valid: np.ndarray, region: Region | None = None) -> Prediction:
        if x.ndim != 4 or x.shape[1] != len(self.spec.bands):
            raise ModelError(
                f"model {self.spec.name!r} expects (B, {len(self.spec.bands)}, H, W) blocks of bands "
                f"{','.join(self.spec.bands)}, got shape {tuple(x.shape)}; give a 4-band blue,green,red,nir scene"
            )
        r0, r1, c0, c1 = region if region is not None else (0, x.shape[2], 0, x.shape[3])
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = torch.from_numpy(x).to(self.device)
        on_cpu = self.device.type == "cpu"
        s = self.score_tensor(t, gate=not on_cpu, region=(r0, r1, c0, c1))
        score = np.ascontiguousarray(s.float().cpu().numpy())
        if on_cpu and self.refine:
            self._gate_numpy(x[:, :, r0:r1, c0:c1], score)
        np.nan_to_num(score, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        v = np.asarray(valid, dtype=bool)[:, r0:r1, c0:c1]
        block_prob = np.where(v[:, None], score, np.float32(0.0)).reshape(score.shape[0], -1).max(axis=1)
        return Prediction(maps={"score": score}, block_prob=block_prob.astype(np.float32))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            {
                "lpp_mode": self.dense.mode,
                "weights_sha256": self.sidecar.training.get("weights_sha256"),
                "training_list_hash": self.sidecar.training.get("training_list_hash"),
            }
        )
        return d


# --------------------------------------------------------------------------- weights I/O


def save_weights(net: CamNet, sidecar: CamSidecar, path: str | Path) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar; returns the sidecar path."""
    import hashlib

    from safetensors.torch import save_file

    from ..outputs import atomic_output, atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # both through temporary names: an interrupted save never leaves a half-written file
    with atomic_output(path, keep_suffix=True, what="weights ") as tmp:
        save_file(state, str(tmp))
        sidecar.training["weights_sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
    side = path.with_suffix(".json")
    atomic_write_text(side, json.dumps(sidecar.to_json(), indent=2, sort_keys=False) + "\n")
    return side


def load_weights(path: str | Path | None = None) -> tuple[CamNet, CamSidecar]:
    """Load a CAM weight file (safetensors, or a torch file with ``weights_only=True``) and its sidecar."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise ModelError(
            f"CAM weights {str(path)!r} (or its sidecar {side.name}) are missing; "
            "train them with `geocloud train cam --data DIR --out DIR` or reinstall geocloud"
        )
    from .weights import WeightsMeta

    try:
        sidecar = CamSidecar.from_json(json.loads(side.read_text()))
    except (KeyError, ValueError, TypeError) as e:
        raise ModelError(f"sidecar {str(side)!r} is malformed ({e}); re-export the weights") from e
    WeightsMeta.read("cam", path).verify()  # the weights are the ones the sidecar describes
    net = CamNet(sidecar.config)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad weight file
        raise ModelError(f"CAM weights {str(path)!r} cannot be loaded ({e}); re-train or reinstall") from e
    return net.eval(), sidecar


def load(device: str = "cpu", weights: str | Path | None = None, lpp_mode: str | None = None) -> CamModel:
    """Registry factory: the shipped CAM model on ``device``."""
    net, sidecar = load_weights(weights)
    return CamModel(net, sidecar, device, lpp_mode=lpp_mode)


__all__ = [
    "DEFAULT_WEIGHTS",
    "LPP_MODES",
    "CamConfig",
    "CamModel",
    "CamNet",
    "CamSidecar",
    "DenseCam",
    "HEAD_RADIUS",
    "RefineHead",
    "load",
    "load_weights",
    "save_weights",
    "spectral_shape",
]

"""Cloud shadow: where a cloud, moved along the sun's azimuth by its height, darkens the ground.

A cloud at height ``h`` casts its shadow ``h / tan(sun elevation)`` metres away from it on
the side opposite the sun.  Seen from above, the shadow is the cloud mask translated by
one displacement ``(dy, dx)`` per cloud height, falling on ground that is darker than its
surroundings, mostly in the near infrared (the shaded ground is lit only by the blue-rich
diffuse sky light).  This module finds it in three steps, each pure numpy/scipy:

1. :func:`darkness`: how much darker each pixel's NIR is than the local clear-sky ground
   around it, and whether it could be shadow at all (not water: shaded land keeps a
   land-like NIR/red ratio, open water has NIR below red);
2. :func:`estimate_shift`: the displacement at which the cloud mask, shifted, covers the
   most *excess* darkness (once per scene, on a decimated view, or on a chip).  When the
   sun azimuth is known only the distance (the cloud height) is searched; without it the
   azimuth is searched too, over every direction;
3. :func:`shadow_mask`: for one window (with a halo of :meth:`ShadowConfig.halo` px),
   the dark pixels inside the cloud mask swept along the displacement over a range of
   heights (``sweep``) and dilated a little; never a cloud pixel, never an invalid one.

Sun convention
--------------
``sun_azimuth`` is in degrees clockwise from north (0 north, 90 east: the sun in the
east at morning), ``sun_elevation`` in degrees above the horizon (90 minus the solar
zenith).  Rasters are north-up: rows grow southwards and columns eastwards.  The shadow
falls on the side opposite the sun, so a cloud pixel at ``(r, c)`` shades
``(r + d cos(az), c - d sin(az))`` with ``d = h / tan(elevation) / pixel_size`` (the sun
in the south-east, azimuth 135, puts shadows to the north-west of their clouds).
:func:`shift_from_sun` does this arithmetic.  The view geometry (parallax of an off-nadir
view) is not modelled: it moves cloud and shadow alike only to first order, and the
searched range of heights absorbs the rest.

Streaming
---------
:func:`shadow_mask` is local: a pixel depends on inputs at most :meth:`ShadowConfig.halo`
px away (the longest swept displacement, the dilation and the darkness reference window),
so running it on overlapping windows whose halo is at least that, and keeping each
window's core, gives the same mask as one call on the whole array.  :func:`estimate_shift`
runs once per scene on a decimated view (bounded memory: two FFT correlations of the
view's size); scale its result to full resolution with :meth:`ShadowShift.scaled`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import uniform_filter

__all__ = [
    "ShadowConfig",
    "ShadowShift",
    "darkness",
    "potential_shadow",
    "estimate_shift",
    "pooled_shift",
    "shadow_mask",
    "shift_from_sun",
]

_EPS = np.float32(1e-6)


@dataclass(frozen=True)
class ShadowConfig:
    """Every parameter of the shadow method, with its physical meaning.

    Lengths are in pixels of the array the function is given; for a decimated view, divide
    them with :meth:`scaled` (``estimate_shift`` on a view ``f`` times smaller than the
    scene wants ``config.scaled(1 / f)``).
    """

    #: longest shadow displacement searched, px (a 3 km high cloud under a 30 degree sun is
    #: 5.2 km away: 173 px at 30 m, 520 px at 10 m; the engine may pass ``max_distance_m``
    #: with the pixel size instead).
    max_shift: float = 160.0
    #: the same bound in metres on the ground, used when ``pixel_size`` is known.
    max_distance_m: float = 6000.0
    #: shortest displacement searched, px: below it the shifted cloud mostly covers itself.
    min_shift: float = 2.0
    #: cloud heights searched when the sun elevation and pixel size are known, metres.
    min_height_m: float = 200.0
    max_height_m: float = 12000.0
    #: the mask sweeps each cloud over ``[sweep[0], sweep[1]] x`` the scene's displacement,
    #: so clouds lower or higher than the typical one still find their shadow.
    sweep: tuple[float, float] = (0.5, 1.5)
    #: the swept projection is dilated by this many px (cloud edges, shadow penumbra).
    dilate: int = 2
    #: half-width of the square window of the local clear-sky NIR reference, px.
    reference_radius: int = 40
    #: a pixel is dark when its NIR is below ``1 - dark_drop`` times the local reference.
    dark_drop: float = 0.25
    #: shadowed land keeps NIR/red above this; open water has NIR below red.
    water_ratio: float = 0.9
    #: and an absolute floor of NIR reflectance under which a pixel is water-like whatever
    #: its ratio (deep clear water, or no signal).
    min_nir: float = 0.03
    #: the estimated displacement must explain at least this fraction of the cloud pixels
    #: as excess dark pixels, or the scene has no detectable shadow (``None``).
    min_excess: float = 0.02
    #: opening of the final mask, px (removes speckle of isolated dark pixels).
    open_radius: int = 1

    def scaled(self, factor: float) -> ShadowConfig:
        """The same method on an array whose pixels are ``1 / factor`` times larger (``factor``
        < 1 for a decimated view): every pixel length multiplied by ``factor``."""
        return replace(
            self,
            max_shift=self.max_shift * factor,
            min_shift=max(1.0, self.min_shift * factor),
            dilate=int(round(self.dilate * factor)),
            reference_radius=max(1, int(round(self.reference_radius * factor))),
            open_radius=int(round(self.open_radius * factor)),
        )

    def max_shift_px(self, pixel_size: float | None) -> float:
        """The longest displacement searched, px: ``max_distance_m`` when the pixel size is
        known (capped by ``max_shift`` times 4, to keep the search bounded), else ``max_shift``."""
        if pixel_size and pixel_size > 0:
            return min(self.max_distance_m / pixel_size, 4 * self.max_shift)
        return self.max_shift

    def halo(self, shift: ShadowShift | None) -> int:
        """px of context each side of a window :func:`shadow_mask` needs to equal the whole-array result."""
        reach = 0.0 if shift is None else shift.distance * self.sweep[1]
        return (int(math.ceil(reach)) + 1 + self.dilate + 2 * self.reference_radius
                + 2 * self.open_radius + 1)  # fmt: skip


@dataclass(frozen=True)
class ShadowShift:
    """The displacement from a cloud pixel to the ground pixel it shades, in px (rows, cols)."""

    dy: float
    dx: float
    #: excess dark pixels the shifted cloud covers, as a fraction of the cloud pixels.
    score: float
    #: whether the azimuth came from the sun (True) or was searched (False).
    from_sun: bool = False

    @property
    def distance(self) -> float:
        return math.hypot(self.dy, self.dx)

    @property
    def shadow_azimuth(self) -> float:
        """Direction from cloud to shadow, degrees clockwise from north (the sun's + 180)."""
        return math.degrees(math.atan2(self.dx, -self.dy)) % 360.0

    @property
    def sun_azimuth(self) -> float:
        """The sun azimuth this displacement implies, degrees clockwise from north."""
        return (self.shadow_azimuth + 180.0) % 360.0

    def scaled(self, factor: float) -> ShadowShift:
        """The displacement on an array ``factor`` times finer (``factor`` > 1 from a decimated view)."""
        return replace(self, dy=self.dy * factor, dx=self.dx * factor)


def shift_from_sun(sun_azimuth: float, distance: float) -> tuple[float, float]:
    """(dy, dx) in px from a cloud pixel to its shadow ``distance`` px away, north-up raster."""
    az = math.radians(sun_azimuth)
    return distance * math.cos(az), -distance * math.sin(az)


# --------------------------------------------------------------------------- darkness


def _local_mean(x: np.ndarray, ok: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean of ``x`` over the ``ok`` pixels of each ``size`` square window, fraction of ``ok`` there)."""
    num = uniform_filter(np.where(ok, x, np.float32(0)).astype(np.float32, copy=False), size, mode="nearest")
    den = uniform_filter(ok.astype(np.float32), size, mode="nearest")
    return num / np.maximum(den, _EPS), den


def darkness(
    refl: np.ndarray, valid: np.ndarray, cloud: np.ndarray | None = None, config: ShadowConfig | None = None
) -> np.ndarray:
    """float32 (H, W): the fractional NIR drop below the local clear-sky ground, 0 where not darker.

    ``refl`` is float32 (4, H, W) reflectance (blue, green, red, nir).  The reference is
    the mean NIR of the valid, not-cloud pixels in a ``2 * reference_radius + 1`` square
    window, taken twice: the second time without the pixels the first found dark (so a
    large shadow does not lower its own reference).  Box filters are local, so the map is
    the same on any window with that halo.  Invalid and cloud pixels get 0.  The map is
    not masked for water: :func:`potential_shadow` gives the pixels that may be shadow.
    """
    cfg = config or ShadowConfig()
    nir = refl[3]
    ok = valid if cloud is None else (valid & ~cloud)
    size = 2 * cfg.reference_radius + 1
    ref, den = _local_mean(nir, ok, size)
    lit = ok & (nir >= (1.0 - cfg.dark_drop) * ref)
    ref2, den2 = _local_mean(nir, lit, size)
    ref = np.where(den2 > 1e-3, ref2, ref)
    d = 1.0 - nir / np.maximum(ref, _EPS)
    d = np.clip(d, 0.0, 1.0).astype(np.float32, copy=False)
    d[~ok | (den < 1e-3)] = 0.0
    return d


def potential_shadow(
    refl: np.ndarray, valid: np.ndarray, cloud: np.ndarray | None = None, config: ShadowConfig | None = None,
    dark: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """bool (H, W): pixels that could be cloud shadow: dark (:func:`darkness` >= ``dark_drop``)
    and land-like (NIR/red >= ``water_ratio`` and NIR >= ``min_nir``), valid, not cloud."""
    cfg = config or ShadowConfig()
    d = darkness(refl, valid, cloud, cfg) if dark is None else dark
    nir, red = refl[3], refl[2]
    land = (nir >= cfg.water_ratio * red) & (nir >= cfg.min_nir)
    out = (d >= cfg.dark_drop) & land & valid
    if cloud is not None:
        out &= ~cloud
    return out


# --------------------------------------------------------------------------- the displacement


def _correlate(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    """c[m + dy, m + dx] = sum_p a[p] * b[p + (dy, dx)] for |dy|, |dx| <= m (zero outside)."""
    h, w = a.shape
    sh = sfft.next_fast_len(h + m, real=True)
    sw = sfft.next_fast_len(w + m, real=True)
    fa = sfft.rfft2(a, (sh, sw), workers=1)
    fb = sfft.rfft2(b, (sh, sw), workers=1)
    c = sfft.irfft2(np.conj(fa) * fb, (sh, sw), workers=1)
    rows = np.r_[sh - m : sh, 0 : m + 1]
    cols = np.r_[sw - m : sw, 0 : m + 1]
    return c[np.ix_(rows, cols)]


def estimate_shift(
    cloud: np.ndarray,
    dark: np.ndarray,
    valid: np.ndarray,
    *,
    sun_azimuth: float | None = None,
    sun_elevation: float | None = None,
    pixel_size: float | None = None,
    config: ShadowConfig | None = None,
) -> ShadowShift | None:
    """The displacement at which the shifted cloud mask covers the most excess shadow evidence.

    ``cloud`` and ``valid`` are bool (H, W); ``dark`` is float (H, W) shadow evidence, best
    :func:`potential_shadow` as float (or :func:`darkness`).  For a displacement ``s``, the
    score is the sum of ``dark`` over the valid, not-cloud pixels the cloud covers once moved
    by ``s``, less what the scene's mean evidence would give on as many pixels: the dark
    pixels the cloud explains beyond chance.  All displacements up to ``max_shift`` come
    from two FFT cross-correlations (memory: a few arrays of the padded view's size).

    With ``sun_azimuth`` only the line of displacements opposite the sun is searched
    (distances from ``min_shift``, or from ``min_height_m`` when ``sun_elevation`` and
    ``pixel_size`` are known, to the longest).  Without it every direction is searched.
    Returns ``None`` without cloud, without valid ground, or when the best displacement
    explains fewer than ``min_excess`` of the cloud pixels (no detectable shadow).
    """
    cfg = config or ShadowConfig()
    cloud = cloud & valid
    ground = valid & ~cloud
    n_cloud = int(cloud.sum())
    if n_cloud == 0 or not ground.any():
        return None
    ev = np.where(ground, dark, 0).astype(np.float32)
    base = float(ev.sum()) / max(int(ground.sum()), 1)
    max_shift = cfg.max_shift_px(pixel_size)
    m = int(math.ceil(max_shift))
    m = max(1, min(m, max(cloud.shape) - 1))
    a = cloud.astype(np.float32)
    num = _correlate(a, ev, m)
    den = _correlate(a, ground.astype(np.float32), m)
    score = (num - base * den) / n_cloud  # excess dark pixels per cloud pixel
    yy, xx = np.mgrid[-m : m + 1, -m : m + 1]
    rr = np.hypot(yy, xx)
    lo, hi = cfg.min_shift, max_shift
    from_sun = sun_azimuth is not None
    if from_sun:
        if sun_elevation is not None and pixel_size:
            t = math.tan(math.radians(max(sun_elevation, 1.0)))
            lo = max(lo, cfg.min_height_m / t / pixel_size)
            hi = min(hi, cfg.max_height_m / t / pixel_size)
        uy, ux = shift_from_sun(float(sun_azimuth), 1.0)
        dists = np.arange(math.floor(lo), math.ceil(hi) + 1, 0.5)
        dists = dists[(dists >= lo) & (dists <= min(hi, m))]
        if dists.size == 0:
            return None
        iy = np.rint(dists * uy).astype(int) + m
        ix = np.rint(dists * ux).astype(int) + m
        line = score[iy, ix]
        k = int(np.argmax(line))
        best, dy, dx = float(line[k]), float(dists[k] * uy), float(dists[k] * ux)
    else:
        allowed = (rr >= lo) & (rr <= hi)
        s = np.where(allowed, score, -np.inf)
        k = int(np.argmax(s))
        iy, ix = np.unravel_index(k, s.shape)
        best = float(s[iy, ix])
        dy, dx = float(iy - m), float(ix - m)
        # sub-pixel: a parabola through the neighbours in each axis
        if 0 < iy < 2 * m and 0 < ix < 2 * m and np.isfinite(s[iy - 1 : iy + 2, ix - 1 : ix + 2]).all():
            dy += _parabola(s[iy - 1, ix], best, s[iy + 1, ix])
            dx += _parabola(s[iy, ix - 1], best, s[iy, ix + 1])
    if not math.isfinite(best) or best < cfg.min_excess:
        return None
    return ShadowShift(dy=dy, dx=dx, score=best, from_sun=from_sun)


def pooled_shift(
    refl: np.ndarray,
    n_ok: np.ndarray,
    n_cloud: np.ndarray,
    factor: int,
    *,
    sun_azimuth: float | None = None,
    sun_elevation: float | None = None,
    pixel_size: float | None = None,
    config: ShadowConfig | None = None,
) -> ShadowShift | None:
    """:func:`estimate_shift` on a view of a scene pooled ``factor`` x ``factor``, scaled
    back to full-resolution px (``config`` and ``pixel_size`` are the full resolution's).

    ``refl`` (4, h, w) is each cell's mean reflectance over its valid pixels; ``n_ok`` and
    ``n_cloud`` count its valid and its valid cloud pixels.  A cell is valid when at least
    half its pixels are, and cloud when most of its valid pixels are.
    """
    cfg = config or ShadowConfig()
    f = factor
    valid = n_ok >= (f * f) / 2
    cloud = (n_cloud * 2 > n_ok) & valid
    view_cfg = cfg.scaled(1.0 / f) if f > 1 else cfg
    dark = potential_shadow(refl, valid, cloud, view_cfg).astype(np.float32)
    shift = estimate_shift(cloud, dark, valid, sun_azimuth=sun_azimuth, sun_elevation=sun_elevation,
                           pixel_size=pixel_size * f if pixel_size else None, config=view_cfg)  # fmt: skip
    return shift.scaled(f) if shift is not None and f > 1 else shift


def _parabola(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


# --------------------------------------------------------------------------- the mask


def _or_shifted(out: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """out[p + (dy, dx)] |= src[p], zero outside."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] |= src[ys, xs]


def _square(mask: np.ndarray, r: int, dilate: bool) -> np.ndarray:
    """Binary dilation (or erosion) of ``mask`` by a (2r+1)^2 square, out-of-image pixels ignored.

    Separable shifted ORs (ANDs) of slices: about 10 times faster than
    ``scipy.ndimage.maximum_filter`` on booleans, and the same result as it with
    ``mode="nearest"``.
    """
    out = mask.copy()
    op = np.logical_or if dilate else np.logical_and
    for axis in (0, 1):
        src = out.copy() if r > 0 else out
        n = src.shape[axis]
        for k in range(1, min(r, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
            op(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
            op(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


def projection(cloud: np.ndarray, shift: ShadowShift, config: ShadowConfig | None = None) -> np.ndarray:
    """bool (H, W): the cloud mask swept along ``shift`` over ``sweep`` times its length, dilated."""
    cfg = config or ShadowConfig()
    out = np.zeros_like(cloud, dtype=bool)
    lo, hi = cfg.sweep
    n = max(1, int(math.ceil((hi - lo) * shift.distance)) + 1)
    seen: set[tuple[int, int]] = set()
    for t in np.linspace(lo, hi, n):
        off = (int(round(t * shift.dy)), int(round(t * shift.dx)))
        if off not in seen:
            seen.add(off)
            _or_shifted(out, cloud, *off)
    if cfg.dilate > 0:
        out = _square(out, cfg.dilate, dilate=True)
    return out


def shadow_mask(
    refl: np.ndarray,
    cloud: np.ndarray,
    valid: np.ndarray,
    shift: ShadowShift | None,
    config: ShadowConfig | None = None,
) -> np.ndarray:
    """bool (H, W): cloud shadow in one window (reflectance (4, H, W), cloud and valid (H, W)).

    The pixels that are :func:`potential_shadow` (dark land) and inside :func:`projection`
    of the cloud mask, opened by ``open_radius`` to drop isolated pixels; never cloud,
    never invalid.  ``shift=None`` (no detectable shadow in the scene) gives no shadow.
    The result on the window's core equals the whole-array result when the window has
    :meth:`ShadowConfig.halo` px of context on each side (the same cloud, valid and
    reflectance there).
    """
    cfg = config or ShadowConfig()
    cloud = cloud & valid
    if shift is None or not cloud.any():
        return np.zeros(cloud.shape, dtype=bool)
    proj = projection(cloud, shift, cfg)
    if not proj.any():
        return proj
    # darkness only around the projection's bounding box: its reference reaches
    # 2 * reference_radius px, so the crop gives the same values there
    rows, cols = np.flatnonzero(proj.any(axis=1)), np.flatnonzero(proj.any(axis=0))
    m = 2 * cfg.reference_radius + 2
    r0, r1 = max(0, rows[0] - m), min(proj.shape[0], rows[-1] + 1 + m)
    c0, c1 = max(0, cols[0] - m), min(proj.shape[1], cols[-1] + 1 + m)
    out = np.zeros_like(proj)
    win = (slice(r0, r1), slice(c0, c1))
    out[win] = potential_shadow(refl[:, r0:r1, c0:c1], valid[win], cloud[win], cfg) & proj[win]
    if cfg.open_radius > 0:
        out = _square(_square(out, cfg.open_radius, dilate=False), cfg.open_radius, dilate=True) & out
    out &= valid & ~cloud
    return out

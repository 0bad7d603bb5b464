"""``catalog.html``: a self-contained, offline page for a cloud-cover catalogue.

One HTML file with inline CSS, inline JavaScript (column sorting) and inline SVG (a
histogram of cloud cover and a map of the footprints); no network access, no external
files but the scene thumbnails, which are linked by relative path (``<catalog>_thumbs/``)
and open the full preview (or the mask) when clicked.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

from .outputs import atomic_write_text

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2630;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px} .sub{color:#5b6775;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0 18px}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}
.figs{display:flex;gap:16px;flex-wrap:wrap;margin-bottom:18px}
.fig{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px}
.fig h2{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde2e8;width:100%}
th,td{padding:6px 8px;border-bottom:1px solid #eef1f4;text-align:left;vertical-align:middle}
th{background:#eef2f6;cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
th.asc:after{content:" \\25B2"} th.desc:after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img.thumb{width:128px;height:auto;border-radius:4px;background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 50%/12px 12px}
.bar{height:8px;background:#e3e8ee;border-radius:4px;min-width:60px} .bar i{display:block;height:8px;border-radius:4px;background:#c03ca0}
.err{color:#a4262c;font-size:12px;max-width:360px} .ok{color:#1e7b34}
"""

_JS = """
document.querySelectorAll('th[data-k]').forEach(function(th){th.addEventListener('click',function(){
 var tb=document.querySelector('#cat tbody'),k=+th.dataset.k,num=th.dataset.t==='n';
 var asc=!th.classList.contains('asc');
 document.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
 th.classList.add(asc?'asc':'desc');
 var rows=Array.from(tb.rows);
 rows.sort(function(a,b){var x=a.cells[k].dataset.v,y=b.cells[k].dataset.v;
  if(num){x=x===''?Infinity:+x;y=y===''?Infinity:+y;return asc?x-y:y-x}
  return asc?x.localeCompare(y):y.localeCompare(x)});
 rows.forEach(function(r){tb.appendChild(r)});
})});
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _rel(target: Any, base: Path) -> str | None:
    if not target or (isinstance(target, float) and math.isnan(target)):
        return None
    return Path(os.path.relpath(Path(str(target)), base)).as_posix()


def histogram_svg(values: list[float], bins: int = 10, width: int = 420, height: int = 180) -> str:
    """An SVG bar chart of cloud cover (%) in ``bins`` equal bins over 0..100."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v / (100 / bins))))] += 1
    top = max(counts) or 1
    pad_l, pad_b, pad_t = 30, 28, 10
    bw = (width - pad_l - 8) / bins
    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of cloud cover">']  # fmt: skip
    h_av = height - pad_b - pad_t
    for i, c in enumerate(counts):
        h = h_av * c / top
        x = pad_l + i * bw
        y = pad_t + h_av - h
        parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="#c03ca0">'
                     f"<title>{i * 100 // bins}-{(i + 1) * 100 // bins}%: {c} scenes</title></rect>")  # fmt: skip
        if c:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{y - 2:.1f}" font-size="10" text-anchor="middle">{c}</text>'
            )
    for i in range(0, bins + 1, 2):
        x = pad_l + i * bw
        parts.append(
            f'<text x="{x:.1f}" y="{height - 12}" font-size="10" text-anchor="middle">{i * 100 // bins}</text>'
        )
    parts.append(f'<text x="{pad_l + (width - pad_l) / 2:.0f}" y="{height - 1}" font-size="10" '
                 'text-anchor="middle">cloud cover (%)</text>')  # fmt: skip
    parts.append(
        f'<line x1="{pad_l}" y1="{pad_t + h_av}" x2="{width - 8}" y2="{pad_t + h_av}" stroke="#888"/>'
    )
    parts.append(f'<text x="4" y="{pad_t + 8}" font-size="10">{top}</text></svg>')
    return "".join(parts)


def footprints_svg(rows: list[dict[str, Any]], width: int = 420, height: int = 260) -> str | None:
    """Footprints (WGS84) drawn in an equirectangular frame, filled by cloud cover."""
    import shapely

    shapes = []
    for r in rows:
        w = r.get("footprint")
        if isinstance(w, str) and w:
            try:
                shapes.append((shapely.from_wkt(w), _num(r.get("cloud_pct")), r.get("id")))
            except Exception:  # noqa: BLE001 - an unparsable footprint is just not drawn
                continue
    if not shapes:
        return None
    minx, miny, maxx, maxy = shapely.bounds(shapely.union_all([s[0] for s in shapes]))
    # equirectangular, with longitudes shrunk by cos(latitude) so shapes keep their proportions
    cx = max(0.2, math.cos(math.radians((miny + maxy) / 2)))
    pad = 14
    dx, dy = max((maxx - minx) * cx, 1e-9), max(maxy - miny, 1e-9)
    k = min((width - 2 * pad) / dx, (height - 2 * pad - 10) / dy)

    def xy(x: float, y: float) -> tuple[float, float]:
        return pad + (x - minx) * cx * k, height - pad - 10 - (y - miny) * k

    parts = [f'<svg width="{width}" height="{height}" role="img" '
             'aria-label="map of footprints"><rect width="100%" height="100%" fill="#eef2f6"/>']  # fmt: skip
    for g, pct, sid in shapes:
        a = 0.35 + 0.6 * ((pct or 0) / 100)
        label = f"<title>{_e(sid)}: {'' if pct is None else f'{pct:.1f}%'}</title>"
        x0, y0, x1, y1 = shapely.bounds(g)
        (px0, py0), (px1, py1) = xy(x0, y0), xy(x1, y1)
        if max(abs(px1 - px0), abs(py1 - py0)) < 8:
            # smaller than a few pixels at this scale (scenes far apart): a marker, not an invisible dot
            c = g.centroid
            mx, my = xy(c.x, c.y)
            parts.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="5" fill="#c03ca0" fill-opacity="{a:.2f}" '
                         f'stroke="#5a1d4e" stroke-width="1.2">{label}</circle>')  # fmt: skip
            continue
        for poly in getattr(g, "geoms", [g]):
            pts = " ".join("{:.1f},{:.1f}".format(*xy(x, y)) for x, y in poly.exterior.coords)
            parts.append(f'<polygon points="{pts}" fill="#c03ca0" fill-opacity="{a:.2f}" stroke="#5a1d4e" '
                         f'stroke-width="1.2">{label}</polygon>')  # fmt: skip
    parts.append(f'<text x="6" y="{height - 2}" font-size="10">lon {minx:.3f}..{maxx:.3f}, '
                 f"lat {miny:.3f}..{maxy:.3f}</text></svg>")  # fmt: skip
    return "".join(parts)


_COLS = [
    # (header, key, numeric)
    ("scene", "id", False), ("acquired", "acquired", False), ("sensor", "sensor", False),
    ("cloud %", "cloud_pct", True), ("shadow %", "shadow_pct", True), ("usable %", "usable_pct", True),
    ("thin %", "thin_cloud_pct", True), ("mean α", "mean_alpha", True),
    ("vendor %", "vendor_cloud_pct", True), ("threshold", "threshold", True), ("model", "model", False),
    ("status", "status", False),
]  # fmt: skip


def render_html(rows: list[dict[str, Any]], base: Path, title: str = "geocloud catalogue") -> str:
    """The page as a string; relative links are made from ``base`` (the page's folder)."""
    rows = sorted(rows, key=lambda r: str(r.get("path")))
    ok = [r for r in rows if r.get("status") == "ok"]
    cover = [c for c in (_num(r.get("cloud_pct")) for r in ok) if c is not None]
    mean_cover = sum(cover) / len(cover) if cover else None
    cards = [("scenes", len(rows)), ("processed", len(ok)), ("errors", len(rows) - len(ok)),
             ("mean cloud cover", "–" if mean_cover is None else f"{mean_cover:.1f} %"),
             ("clear (< 10 %)", sum(c < 10 for c in cover))]  # fmt: skip
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<meta name='viewport' content='width=device-width'><title>{_e(title)}</title><style>{_CSS}</style>"
           "</head><body>", f"<h1>{_e(title)}</h1>",
           "<div class='sub'>Cloud cover per scene over valid pixels. Click a column to sort, a thumbnail to open "
           "the preview.</div><div class='cards'>"]  # fmt: skip
    out += [f"<div class='card'>{_e(k)}<b>{_e(v)}</b></div>" for k, v in cards]
    out.append("</div><div class='figs'>")
    out.append(f"<div class='fig'><h2>Cloud cover over the archive</h2>{histogram_svg(cover)}</div>")
    fp = footprints_svg(ok)
    if fp:
        out.append(f"<div class='fig'><h2>Footprints (WGS84), shaded by cloud cover</h2>{fp}</div>")
    out.append("</div><table id='cat'><thead><tr><th>thumbnail</th>")
    for i, (h, _, numeric) in enumerate(_COLS, start=1):
        out.append(f"<th data-k='{i}' data-t='{'n' if numeric else 's'}'>{_e(h)}</th>")
    out.append("<th>error</th></tr></thead><tbody>")
    for r in rows:
        thumb = _rel(r.get("thumbnail"), base)
        link = _rel(r.get("preview"), base) or _rel(r.get("mask"), base) or thumb
        cell = (f"<a href='{_e(link)}'><img class='thumb' src='{_e(thumb)}' alt='{_e(r.get('id'))}' loading='lazy'></a>"
                if thumb else "")  # fmt: skip
        out.append(f"<tr><td>{cell}</td>")
        for _, key, numeric in _COLS:
            v = r.get(key)
            if numeric:
                f = _num(v)
                txt = "" if f is None else (f"{f:.2f}" if key != "threshold" else f"{f:.3f}")
                if key == "cloud_pct" and f is not None:
                    txt = (
                        f"{f:.2f}<div class='bar'><i style='width:{max(0.0, min(100.0, f)):.1f}%'></i></div>"
                    )
                out.append(f"<td class='num' data-v='{'' if f is None else f}'>{txt}</td>")
            else:
                s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                if key == "acquired" and s:
                    s = s.replace("T", " ").replace("+00:00", " UTC")
                cls = " class='ok'" if key == "status" and s == "ok" else ""
                out.append(f"<td data-v='{_e(s)}'{cls}>{_e(s)}</td>")
        err = r.get("error")
        out.append(f"<td class='err'>{_e(err if isinstance(err, str) else '')}</td></tr>")
    out.append(f"</tbody></table><script>{_JS}</script></body></html>")
    return "".join(out)


def thumbnails_linked(page: str) -> list[str]:
    """The relative image paths a page links (for checks that they exist)."""
    import re

    return re.findall(r"<img class='thumb' src='([^']+)'", page)


def write_html(
    rows: list[dict[str, Any]], path: str | os.PathLike[str], title: str = "geocloud catalogue"
) -> Path:
    """Write the page atomically beside the catalogue."""
    path = Path(path)
    atomic_write_text(path, render_html(rows, path.parent, title))
    return path

"""The report as one self-contained HTML page: totals, small SVG plots, a searchable gallery.

Opening the page needs no network, and cannot use it: the CSS, the script, the plots (inline SVG)
and the thumbnails (base64 JPEG data URIs, from report/thumbnails.py) are all in the file, and a
Content-Security-Policy of default-src 'none' allows exactly our one <style> and one <script> (by
hash) and data: images. Captions come from a model and URIs from users, so every one is
HTML-escaped, and the search box compares text content, never markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from beam_caption.cost.pricing import format_usd
from beam_caption.report import plots
from beam_caption.report.text import mode_cells
from beam_caption.report.thumbnails import THUMB_SIDE, make_thumbnails, sample_captions
from beam_caption.report.totals import latency_stats

MAX_ERROR_ROWS = 500  # the rest stay in errors-*.parquet; the top-errors table covers them all


def _e(value: Any) -> str:
    """HTML-escaped text (quotes too: values also land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def stat_values(report: dict[str, Any]) -> dict[str, str]:
    """The totals shown at the top of the page, as displayed, keyed by their data-key."""
    tokens, latency, speed = report["tokens"], report["latency_ms"], report["throughput"]
    return {
        "images": f"{report['images']:,}",
        "captions": f"{report['captions']:,}",
        "errors": f"{report['errors']:,}",
        "cost": format_usd(report["cost_usd"]),
        "cost-per-1000": format_usd(report["cost_per_1000_images_usd"]),
        "prompt-tokens": f"{tokens['prompt']:,}",
        "completion-tokens": f"{tokens['completion']:,}",
        "latency-p50": _ms(latency["p50"]),
        "latency-p95": _ms(latency["p95"]),
        "latency-p99": _ms(latency["p99"]),
        "retries": f"{report['retries']['total']:,}",
        "throughput": "-" if speed["images_per_second"] is None
        else f"{speed['images_per_second']:,.1f}",
        **_library_values(report),
    }


def _library_values(report: dict[str, Any]) -> dict[str, str]:
    """A phone library's stat cards, only where it has something to say."""
    values = {}
    if report.get("videos"):
        values["videos"] = f"{report['videos']:,}"
    if report.get("skipped"):
        values["skipped"] = f"{sum(report['skipped'].values()):,}"
    near = report.get("near_dedupe") or {}
    if near.get("requests_saved"):
        values["near-saved"] = f"{near['requests_saved']:,}"
        values["near-saved-usd"] = format_usd(near.get("usd_saved"))
    return values


_STAT_LABELS = {
    "images": "images", "captions": "captions", "errors": "errors", "cost": "cost",
    "cost-per-1000": "per 1,000 images", "prompt-tokens": "prompt tokens (billed)",
    "completion-tokens": "completion tokens (billed)", "latency-p50": "latency p50 (ms)",
    "latency-p95": "latency p95 (ms)", "latency-p99": "latency p99 (ms)",
    "retries": "retries", "throughput": "images/s (first to last row)",
    "videos": "videos (keyframes)", "skipped": "files skipped (not sent)",
    "near-saved": "requests saved (near-dedupe)", "near-saved-usd": "saved by near-dedupe",
}


def _totals_section(report: dict[str, Any]) -> str:
    cards = "".join(
        f'<div class="stat" data-key="{key}"><div class="v">{_e(value)}</div>'
        f'<div class="k">{_e(_STAT_LABELS[key])}</div></div>'
        for key, value in stat_values(report).items())
    modes = "".join(f"<tr><td>{mode}</td>" + "".join(f"<td class=n>{_e(c)}</td>"
                                                      for c in mode_cells(m)) + "</tr>"
                    for mode, m in report["by_mode"].items())
    skipped = "".join(f"<tr><td>{_e(kind)}</td><td class=n>{n:,}</td></tr>"
                      for kind, n in (report.get("skipped") or {}).items())
    skipped = (f'<table class="modes" id="skipped"><thead><tr><th>skipped kind</th>'
               f"<th>files</th></tr></thead><tbody>{skipped}</tbody></table>"
               if skipped else "")
    return (f'<section id="totals"><div class="stats">{cards}</div>{skipped}'
            '<table class="modes"><thead><tr><th>mode</th><th>captions</th><th>deduplicated</th>'
            "<th>prompt tokens</th><th>completion tokens</th><th>cost</th><th>per 1,000</th>"
            f"</tr></thead><tbody>{modes}</tbody></table></section>")


def _plots_section(captions: pa.Table, rows: list[dict[str, Any]]) -> str:
    billed = captions.filter(pc.invert(captions["deduplicated"]))
    # numpy arrays, not Python lists: a big run has millions of values to bin.
    costs = pc.drop_null(billed["cost_usd"]).to_numpy()
    latencies = pc.drop_null(billed["latency_ms"]).to_numpy()
    p99 = latency_stats(billed["latency_ms"])["p99"]
    points = [(r["sent_width"] * r["sent_height"] / 1000, r["prompt_tokens"]) for r in rows
              if not r["deduplicated"] and r["sent_width"] and r["sent_height"]
              and r["prompt_tokens"] is not None]
    figures = [
        ("cost per image (USD)", plots.histogram_svg(costs, label=format_usd)),
        ("request latency (ms)", plots.histogram_svg(latencies, upper=p99,
                                                      label=lambda v: f"{v:,.0f}")),
        ("prompt tokens vs pixels sent (thousands; gallery sample)",
         plots.scatter_svg(points, x_label=lambda v: f"{v:,.0f}k", y_label=lambda v: f"{v:,.0f}")),
    ]
    body = "".join(f'<figure class="plot"><h3>{_e(title)}</h3>{svg}</figure>'
                   for title, svg in figures)
    return f'<section id="plots"><h2>Distributions</h2><div class="plots">{body}</div></section>'


def _card(row: dict[str, Any], thumb: str | None) -> str:
    image = (f'<img src="{thumb}" alt="">' if thumb
             else '<div class="ph">no preview</div>')
    near = bool(row.get("near_duplicate"))
    video = row.get("media_type") == "video"
    tags = "".join(f'<span class="tag">{name}</span>' for name, on in (
        ("video", video), ("batch", row["batch"]), ("near-duplicate", near),
        ("deduplicated", row["deduplicated"] and not near),
        ("cut off", row["finish_reason"] == "length")) if on)
    tokens = f"{row['prompt_tokens'] or 0:,} + {row['completion_tokens'] or 0:,} tokens"
    size = f"{row['width']}×{row['height']}" if row["width"] else ""
    meta = " · ".join(p for p in (tokens, format_usd(row["cost_usd"]), size) if p)
    name = row["uri"].rstrip("/").rsplit("/", 1)[-1]
    return (f'<figure class="card">{image}<figcaption><p class="caption">{_e(row["caption"])}</p>'
            f'<p class="meta">{tags}{_e(meta)}</p>'
            f'<p class="uri" title="{_e(row["uri"])}">{_e(name)}</p></figcaption></figure>')


def _gallery_section(rows: list[dict[str, Any]], thumbs: dict[str, str | None],
                     total: int) -> str:
    cards = "".join(_card(row, thumbs.get(row["uri"])) for row in rows)
    note = "" if len(rows) == total else f" (a sample of {len(rows):,} of {total:,} captions)"
    return ('<section id="captions"><h2>Captions' + _e(note) + "</h2>"
            '<div class="toolbar"><input id="search" type="search" autocomplete="off" '
            'placeholder="Search captions…" aria-label="search captions">'
            f'<span id="shown" class="muted">{len(rows):,} of {len(rows):,} shown</span></div>'
            f'<div id="gallery" class="gallery">{cards}</div></section>')


def _errors_section(report: dict[str, Any], errors: pa.Table) -> str:
    if not report["errors"]:
        return '<section id="errors"><h2>Errors</h2><p class="muted">No errors.</p></section>'
    top = "".join(
        f"<tr><td class=n>{e['count']:,}</td><td>{_e(e['code'])}</td><td>{_e(e['stage'])}</td>"
        f"<td class=msg>{_e(e['message'])}</td><td class=msg>"
        + "<br>".join(_e(u) for u in e["example_uris"]) + "</td></tr>"
        for e in report["top_errors"])
    rows = errors.sort_by([("code", "ascending"), ("uri", "ascending")]).slice(0, MAX_ERROR_ROWS)
    listed = "".join(
        f"<tr><td class=msg>{_e(r['uri'])}</td><td>{_e(r['stage'])}</td><td>{_e(r['code'])}</td>"
        f"<td class=msg>{_e(r['message'])}</td></tr>" for r in rows.to_pylist())
    more = (f'<p class="muted">{errors.num_rows - rows.num_rows:,} more in errors-*.parquet</p>'
            if errors.num_rows > rows.num_rows else "")
    return ('<section id="errors"><h2>Errors</h2><h3>Most frequent</h3><table><thead><tr>'
            "<th>images</th><th>code</th><th>stage</th><th>message</th><th>examples</th></tr>"
            f"</thead><tbody>{top}</tbody></table><h3>Every error</h3>"
            '<table class="err"><thead><tr><th>uri</th><th>stage</th><th>code</th>'
            f"<th>message</th></tr></thead><tbody>{listed}</tbody></table>{more}</section>")


_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--accent:#2f6fde}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg);background:var(--bg)}
header,main{max-width:1280px;margin:0 auto;padding:14px 24px}
header{padding-top:20px}
h1{font-size:20px;margin:0 0 2px}
h2{font-size:16px;margin:26px 0 10px}
h3{font-size:13px;margin:14px 0 6px}
.muted{color:var(--muted)}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:8px}
.stat,.plot,.card,table{background:#fff;border:1px solid var(--line);border-radius:8px}
.stat{padding:8px 12px}
.stat .v{font-size:18px;font-weight:600;white-space:nowrap}
.stat .k{color:var(--muted);font-size:12px}
table{border-collapse:separate;border-spacing:0;font-size:13px;margin-top:10px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted)}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.msg{max-width:560px;overflow-wrap:anywhere}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.plot{margin:0;padding:8px 12px}
.plot h3{margin:0 0 4px}
svg{display:block;width:100%;height:auto}
svg text{font-size:10px;fill:var(--muted)}
.bar{fill:var(--accent)}
.dot{fill:var(--accent);fill-opacity:.55}
.axis{stroke:#98a2b3;stroke-width:1}
.toolbar{display:flex;gap:14px;align-items:center;margin:0 0 12px}
#search{flex:0 1 380px;padding:7px 10px;border:1px solid #c9ced6;border-radius:6px;font:inherit}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.card{margin:0;overflow:hidden;display:flex;flex-direction:column}
.card[hidden]{display:none}
.card img,.ph{display:block;width:100%;height:150px;object-fit:contain;background:#eceef2}
.ph{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px}
figcaption{padding:8px 10px}
.caption{margin:0 0 6px}
.meta,.uri{margin:0;font-size:11px;color:var(--muted)}
.uri{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.tag{display:inline-block;font-size:10px;padding:0 5px;margin-right:4px;border-radius:4px;
  background:#eef2ff;color:#3538cd}
"""

# Every word typed must occur in a card's caption. ?q=words in the page's URL pre-fills the box
# through the same input event a keystroke fires (the browser test relies on that).
_JS = """
(function () {
  var box = document.getElementById("search");
  var shown = document.getElementById("shown");
  var cards = Array.prototype.slice.call(document.querySelectorAll("#gallery .card"));
  function filter() {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var count = 0;
    cards.forEach(function (card) {
      var text = card.querySelector(".caption").textContent.toLowerCase();
      var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
      card.hidden = !hit;
      if (hit) { count += 1; }
    });
    shown.textContent = count.toLocaleString("en-US") + " of " +
      cards.length.toLocaleString("en-US") + " shown";
  }
  box.addEventListener("input", filter);
  var q = new URLSearchParams(window.location.search).get("q");
  if (q) { box.value = q; box.dispatchEvent(new Event("input")); }
})();
"""


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_page(report: dict[str, Any], captions: pa.Table, errors: pa.Table,
                rows: list[dict[str, Any]], thumbs: dict[str, str | None]) -> str:
    """The whole HTML document for `report`, the gallery `rows` and their `thumbs`."""
    csp = (f"default-src 'none'; img-src data:; style-src {_csp_hash(_CSS)}; "
           f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'")
    title = f"beam-caption report: {report['output']}"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    models = ", ".join(report["models"]) or "no model"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>Captions of {_e(report["output"])}</h1><p class="muted">{_e(models)} · '
        f"{_plural(len(report['runs']), 'run')} · report made {generated}</p></header><main>"
        + _totals_section(report) + _plots_section(captions, rows)
        + _gallery_section(rows, thumbs, report["captions"]) + _errors_section(report, errors)
        + f"</main><script>{_JS}</script></body></html>\n")


def build_gallery(report: dict[str, Any], captions: pa.Table, errors: pa.Table, *,
                  sample: int = 1000, thumb_side: int = THUMB_SIDE) -> str:
    """Sample the captions, read their thumbnails and render the page."""
    rows = sample_captions(captions, sample)
    thumbs = make_thumbnails((row["uri"] for row in rows), side=thumb_side)
    return render_page(report, captions, errors, rows, thumbs)

"""A packed row drawn (issue 26): its examples, each token's position id and target, and the attention mask.

:func:`packed_row_html` takes the batch of :func:`sftviz.pack` (or of ``sv.SFTCollator(packing=...)``) and
draws one of its rows as static HTML and CSS (no JavaScript), in three parts:

* the tokens as chips, each example's run in its own colour and starting with a label ("example 3 · 49
  tokens"); under each token its ``position_id`` and a mark: ✓ a trained target, – not a target (label
  -100), ⊘ the example's first token (the boundary: nothing before it in its own example predicts it,
  so it is never a target), ``pad`` padding;
* the attention mask as a grid of query rows by key columns: solid where a token reads its own example,
  hatched where it reads another example (the leak of "naive" packing), empty where it is blocked, and
  each example's block outlined; above :data:`GRID_MAX` positions it is drawn downsampled;
* lines of text that say the same in words: the row's counts, the mode, and how many key positions of
  other examples each example can see (computed from the mask).

All token text is escaped; every mark has words in a legend and in a ``title`` tooltip, so nothing is told
by colour alone. The CSS is ``widgets/packing.css`` after the shared ``widgets/_common.css``.

    >>> rows = sv.load_dataset("support", split="eval")[:3]
    >>> view = packed_row_html(sv.pack(rows, tok, max_length=256, mode="naive"), tok)  # shows itself
    >>> view.startswith("<style>")
    True
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

from .html import CSS_PATH, esc, minify, style_tag
from .records import IGNORE_INDEX, display_parts

# Okabe-Ito without black and yellow (too faint as a border or a cell on white): distinct for colour-blind
# readers, and each 3:1 or more against JupyterLab's light or its dark background.
EXAMPLE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
PAD_COLOUR = "#8c8c8c"
KEYS = ("input_ids", "labels", "position_ids", "example_index", "attention_mask")
GRID_MAX = 200  # the mask is drawn one cell per position up to this many positions, downsampled above
GRID_PX = 400  # about how wide the mask is drawn
MARKS = {
    "trained": ("\u2713", "trained target"),
    "masked": ("\u2013", "not a target (label \u2212100)"),
    "boundary": ("\u2298", "boundary: not a target"),
    "pad": ("pad", "padding"),
}
BOUNDARY_WHY = "the example's first token: nothing before it in its own example predicts it, so its label is \u2212100"


class PackedRowHTML(str):
    """The HTML of :func:`packed_row_html`: a ``str`` that a notebook displays as HTML."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return str(self)

    def __repr__(self) -> str:  # the text a notebook saves beside the HTML: short, not the whole page
        return f"<packed-row view: {len(self)} characters of HTML>"


def packing_css() -> str:
    """The packed-row view's stylesheet (``widgets/packing.css``), minified."""
    try:
        return minify((CSS_PATH.parent / "packing.css").read_text(encoding="utf-8"))
    except OSError:  # a broken install still shows the tokens and the grid, just plainer
        return ""


def _shape(batch: Mapping, key: str) -> tuple[int, ...]:
    value = batch[key]
    if not (hasattr(value, "shape") and hasattr(value, "tolist")):
        raise TypeError(f"batch[{key!r}] must be a tensor, as sv.pack(...) makes it; got {type(value).__name__}.")
    return tuple(int(n) for n in value.shape)


def check_packed_batch(batch: object, row: object = 0) -> tuple[int, int]:
    """Check that ``batch`` is a packed batch (:func:`sftviz.pack`) with a row ``row``; returns ``(rows, length)``.

    Raises ``TypeError`` for what is not a dict of tensors or a ``row`` that is not a whole number, and
    ``ValueError`` for missing keys, shapes that do not match and a row out of range, each saying what to do.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"packed_row_html draws the batch that sv.pack(rows, tok, max_length=...) returns (a dict of tensors); "
            f"got {type(batch).__name__}."
        )
    missing = [k for k in KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"the batch lacks {', '.join(missing)}: give the dict that sv.pack(rows, tok, max_length=...) returns "
            "(it has input_ids, labels, position_ids, example_index and attention_mask)."
        )
    shapes = {k: _shape(batch, k) for k in KEYS}
    if len(shapes["input_ids"]) != 2:
        raise ValueError(f"batch['input_ids'] must be (rows, length); got shape {shapes['input_ids']}.")
    rows, width = shapes["input_ids"]
    for key in ("labels", "position_ids", "example_index"):
        if shapes[key] != (rows, width):
            raise ValueError(
                f"batch[{key!r}] has shape {shapes[key]} but batch['input_ids'] has {(rows, width)}: they must match "
                "(one value per token). Was the batch edited? Pack it again with sv.pack(...)."
            )
    if shapes["attention_mask"] not in ((rows, width), (rows, 1, width, width)):
        raise ValueError(
            f"batch['attention_mask'] has shape {shapes['attention_mask']}; for input_ids of shape {(rows, width)} it "
            f"must be {(rows, width)} (mode='naive') or {(rows, 1, width, width)} (mode='boundaries')."
        )
    if isinstance(row, bool) or not isinstance(row, numbers.Integral):
        raise TypeError(f"row must be a whole number (which row of the batch to draw); got {type(row).__name__}.")
    if not 0 <= row < rows:
        raise ValueError(f"row {row} is out of range: the batch has {rows} row(s), so give row=0 to {rows - 1}.")
    return rows, width


def allowed_grid(batch: Mapping, row: int = 0) -> list[list[bool]]:
    """Which key positions (columns) each query position (rows) of ``row`` may attend to.

    A 4-D mask (``mode="boundaries"``) as it is (True or nonzero: allowed; an additive float mask: 0 is
    allowed); a 2-D mask (``mode="naive"``) as a model reads it: one causal mask over the row's real tokens.
    """
    check_packed_batch(batch, row)
    mask = batch["attention_mask"][row]
    if len(mask.shape) == 3:
        values = mask[0].tolist()
        additive = any(v < 0 for line in values for v in line)
        return [[(v == 0) if additive else bool(v) for v in line] for line in values]
    real = [bool(v) for v in mask.tolist()]
    return [[real[q] and real[k] and k <= q for k in range(len(real))] for q in range(len(real))]


def cross_example_keys(batch: Mapping, row: int = 0) -> dict[int, int]:
    """For each example of ``row`` (by its ``example_index``, in row order): how many key positions that
    belong to another example its tokens can attend to. All 0 with ``mode="boundaries"``; with
    ``mode="naive"`` every example sees all the real tokens before it."""
    grid = allowed_grid(batch, row)
    ex = [int(v) for v in batch["example_index"][row].tolist()]
    seen: dict[int, set[int]] = {e: set() for e in dict.fromkeys(e for e in ex if e >= 0)}
    for q, keys in enumerate(grid):
        if ex[q] < 0:
            continue
        seen[ex[q]].update(k for k, ok in enumerate(keys) if ok and ex[k] >= 0 and ex[k] != ex[q])
    return {e: len(keys) for e, keys in seen.items()}


def _spans(ex: list[int]) -> list[tuple[int, int, int]]:
    """``(example, start, end)`` of each run of one example (or of padding, -1) along the row."""
    spans: list[tuple[int, int, int]] = []
    for i, e in enumerate(ex):
        if spans and spans[-1][0] == e:
            spans[-1] = (e, spans[-1][1], i + 1)
        else:
            spans.append((e, i, i + 1))
    return spans


def _colours(spans: list[tuple[int, int, int]]) -> dict[int, str]:
    """Each example's colour, in the order the examples come in the row (neighbours always differ)."""
    order = list(dict.fromkeys(e for e, _, _ in spans if e >= 0))
    return {e: EXAMPLE_COLOURS[n % len(EXAMPLE_COLOURS)] for n, e in enumerate(order)} | {-1: PAD_COLOUR}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _text_html(text: str) -> str:
    out = []
    for kind, part in display_parts(text):
        out.append(f'<span class="sftviz-ws">{esc(part)}</span>' if kind == "ws" else esc(part))
    return "".join(out)


def _chip(i: int, text: str, pid: int, example: int, kind: str, first: bool, weight: float | None) -> str:
    """One token: its text, its position id and its mark, with the same in words in its tooltip."""
    mark, words = MARKS[kind]
    if kind == "boundary":
        words += f" ({BOUNDARY_WHY})"
    elif kind == "trained" and first:
        words += " (yet it is the example's first token: this target crosses the boundary)"
    elif kind == "trained" and weight is not None and weight != 1:
        words += f" (loss weight {weight:g})"
    who = "padding" if example < 0 else f"example {example}"
    tip = f"position {i} in the row, {who}, position id {pid}: {words}"
    return (
        f'<span class="sftviz-pk-tok" data-sftviz-position="{i}" data-sftviz-position-id="{pid}" '
        f'data-sftviz-target="{kind}" data-sftviz-first="{"true" if first else "false"}" title="{esc(tip)}">'
        f'<span class="sftviz-pk-text">{_text_html(text)}</span><span class="sftviz-pk-pos">{pid}</span>'
        f'<span class="sftviz-pk-mark">{esc(mark)}</span></span>'
    )


def _strip_html(row: dict, tok: Any, limit: int) -> str:
    """The row's tokens, one run per example (and per stretch of padding), the first ``limit`` of them."""
    texts: dict[int, str] = {}
    out = ['<div class="sftviz-pk-strip">']
    for e, start, end in row["spans"]:
        if start >= limit:
            break
        label = ("padding" if e < 0 else f"example {e}") + f" \u00b7 {_count(end - start, 'token')}"
        out.append(
            f'<span class="sftviz-pk-ex" data-sftviz-example="{e}" data-sftviz-tokens="{end - start}" '
            f'style="--ex:{row["colours"][e]}"><span class="sftviz-pk-exlabel">{label}</span>'
        )
        for i in range(start, min(end, limit)):
            t, label_id = row["ids"][i], row["labels"][i]
            if t not in texts:
                texts[t] = tok.decode([t])
            trained = label_id != IGNORE_INDEX
            kind = "pad" if e < 0 else "trained" if trained else "boundary" if i == start else "masked"
            weight = row["weights"][i] if row["weights"] is not None else None
            out.append(_chip(i, texts[t], row["positions"][i], e, kind, e >= 0 and i == start, weight))
        out.append("</span>")
    out.append("</div>")
    return "".join(out)


def _bins(grid: list[list[bool]], ex: list[int], n: int, step: int) -> list[list[tuple[str, int, bool]]]:
    """The mask's first ``n`` positions in cells of ``step`` x ``step``: per cell ``(kind, example, partial)``,
    kind "own" (reads its own example), "other" (reads another example), "pad" (padding) or "" (blocked)."""
    size = math.ceil(n / step)
    cells = []
    for qb in range(size):
        line = []
        for kb in range(size):
            qs, ks = range(qb * step, min(n, (qb + 1) * step)), range(kb * step, min(n, (kb + 1) * step))
            pairs = [(q, k) for q in qs for k in ks if grid[q][k]]
            other = [(q, k) for q, k in pairs if ex[q] >= 0 and ex[k] != ex[q]]
            own = [(q, k) for q, k in pairs if ex[q] >= 0 and ex[k] == ex[q]]
            kind = "other" if other else "own" if own else "pad" if pairs else ""
            example = ex[(other or own or pairs or [(qs[0], 0)])[0][0]]
            line.append((kind, example, 0 < len(pairs) < len(qs) * len(ks)))
        cells.append(line)
    return cells


def _cells_svg(cells: list[list[tuple[str, int, bool]]], colours: dict[int, str], cell: int, hatch: str) -> str:
    """The allowed cells as rectangles, one per run of equal cells along each query row."""
    out = []
    for q, line in enumerate(cells):
        k = 0
        while k < len(line):
            end = k + 1
            while end < len(line) and line[end] == line[k]:
                end += 1
            kind, example, partial = line[k]
            if kind:
                fill = f"url(#{hatch})" if kind == "other" else PAD_COLOUR if kind == "pad" else colours[example]
                cls = (
                    "sftviz-pk-cell"
                    + (" sftviz-pk-part" if partial else "")
                    + (" sftviz-pk-padcell" if kind == "pad" else "")
                )
                out.append(f'<rect class="{cls}" data-sftviz-kind="{kind}" x="{k * cell}" y="{q * cell}" '
                           f'width="{(end - k) * cell}" height="{cell}" fill="{fill}"/>')  # fmt: skip
            k = end
    return "".join(out)


def _hatch_def(pid: str, cell: int) -> str:
    side = max(4, min(8, cell * 2))
    return (
        f'<defs><pattern id="{pid}" patternUnits="userSpaceOnUse" width="{side}" height="{side}">'
        f'<rect class="sftviz-pk-hatchbg" width="{side}" height="{side}" fill="#ffffff"/>'
        f'<path class="sftviz-pk-hatchline" d="M0,{side} L{side},0 M{-side / 2},{side / 2} L{side / 2},{-side / 2} '
        f'M{side / 2},{side * 1.5} L{side * 1.5},{side / 2}" stroke="#1a1a1a" stroke-width="{max(1, side // 4)}"/>'
        "</pattern></defs>"
    )


def _grid_svg(row: dict, limit: int, uid: str) -> tuple[str, int]:
    """The attention mask of the first ``limit`` positions as an SVG; returns it and the positions per cell."""
    step = math.ceil(limit / GRID_MAX)
    cells = _bins(row["grid"], row["ex"], limit, step)
    size = len(cells)
    cell = max(2, min(14, GRID_PX // size))
    px, hatch = size * cell, f"sftviz-pk-hatch-{uid}"
    blocks = "".join(
        f'<rect class="sftviz-pk-block" x="{a * cell / step:g}" y="{a * cell / step:g}" '
        f'width="{(min(b, limit) - a) * cell / step:g}" height="{(min(b, limit) - a) * cell / step:g}" fill="none" '
        f'stroke="#1a1a1a"/>'
        for e, a, b in row["spans"]
        if e >= 0 and a < limit
    )
    label = (f"Attention mask of the row ({row['mode']}): {limit} query positions (rows) by {limit} key positions "
             "(columns). Solid: a token may read its own example; hatched: it may read another example; empty: "
             "blocked. The text under the grid gives the counts.")  # fmt: skip
    svg = (
        f'<svg class="sftviz-pk-grid" role="img" aria-label="{esc(label)}" width="{px}" height="{px}" '
        f'viewBox="0 0 {px} {px}" shape-rendering="crispEdges" data-sftviz-positions="{limit}" data-sftviz-cell="{cell}" data-sftviz-step="{step}">'
        f"<title>{esc(label)}</title>{_hatch_def(hatch, cell)}"
        f'<rect class="sftviz-pk-bg" width="{px}" height="{px}" fill="#eeeeee"/>'
        f"{_cells_svg(cells, row['colours'], cell, hatch)}{blocks}</svg>"
    )
    return svg, step


def _key_svg(kind: str, colour: str) -> str:
    """A small swatch for the mask's legend (it draws its own hatching: no reference to another SVG)."""
    inner = {
        "own": f'<rect width="14" height="14" fill="{colour}"/>',
        "other": '<rect class="sftviz-pk-hatchbg" width="14" height="14" fill="#ffffff"/><path class="sftviz-pk-hatchline" '
        'd="M0,7 L7,0 M0,14 L14,0 M7,14 L14,7" stroke="#1a1a1a" stroke-width="2"/>',
        "blocked": '<rect class="sftviz-pk-bg" width="14" height="14" fill="#eeeeee"/>',
        "pad": f'<rect class="sftviz-pk-padcell" width="14" height="14" fill="{PAD_COLOUR}"/>',
        "block": '<rect class="sftviz-pk-block" x="1" y="1" width="12" height="12" fill="none" stroke="#1a1a1a"/>',
    }[kind]
    return f'<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true" focusable="false">{inner}</svg>'


def _mask_keys_html(row: dict) -> str:
    first = next((c for e, c in row["colours"].items() if e >= 0), EXAMPLE_COLOURS[0])
    keys = [
        ("own", "solid: the token may read this position of its own example (in the example's colour)"),
        ("other", "hatched: it may read a position of another example (the leak)"),
        ("blocked", "empty: blocked (a later position, or another example)"),
        ("block", "outline: one example's block (its tokens reading its tokens)"),
    ]
    if any(e < 0 for e in row["ex"]):
        keys.append(("pad", "grey: padding reading itself"))
    items = "".join(
        f'<span class="sftviz-pk-key">{_key_svg(kind, first)}<span>{esc(words)}</span></span>' for kind, words in keys
    )
    return f'<div class="sftviz-pk-keys">{items}</div>'


def _mode_words(row: dict, limit: int, step: int) -> str:
    """The mask in words: the mode, and how many key positions of other examples each example can see."""
    if row["mode"] == "naive":
        mode = ("Mode: naive. The 2-D mask marks the row's real tokens, and the model makes one causal mask over the "
                "whole row of it: every token reads every earlier token, of its own example or not.")  # fmt: skip
    else:
        mode = ("Mode: boundaries. The 4-D mask is block-diagonal: each token reads only earlier tokens of its own "
                "example (the blocks on the diagonal), so each example is computed as if it were alone.")  # fmt: skip
    seen = row["foreign"]
    if any(seen.values()):
        each = ", ".join(f"example {e}: {n}" for e, n in seen.items())
        total = sum(seen.values())
        mode += f" Key positions of other examples that each example can see: {each} ({total} in all)."
    else:
        mode += " No example can see a key position of another example."
    if step > 1:
        mode += (f" The mask has {limit} positions per side, drawn in cells of {step}\u00d7{step} positions: a cell is "
                 "drawn where any of its pairs may attend, and faded where only some may.")  # fmt: skip
    return mode


def _row_of(batch: Mapping, row: int) -> dict:
    """The row's values as lists, with its runs, colours, mask and counts."""
    ex = [int(v) for v in batch["example_index"][row].tolist()]
    spans = _spans(ex)
    weights = batch.get("loss_weights")
    out = {
        "ids": [int(v) for v in batch["input_ids"][row].tolist()],
        "labels": [int(v) for v in batch["labels"][row].tolist()],
        "positions": [int(v) for v in batch["position_ids"][row].tolist()],
        "weights": [float(v) for v in weights[row].tolist()] if hasattr(weights, "tolist") else None,
        "ex": ex,
        "spans": spans,
        "colours": _colours(spans),
        "grid": allowed_grid(batch, row),
        "foreign": cross_example_keys(batch, row),
        "mode": "boundaries" if len(batch["attention_mask"].shape) == 4 else "naive",
    }
    if out["weights"] is not None and len(out["weights"]) != len(ex):
        out["weights"] = None  # a loss_weights of another shape: the view does without it
    return out


def packed_row_html(batch: Mapping, tok: Any, row: int = 0, *, max_tokens: int | None = None) -> str:
    """One row of a packed batch (:func:`sftviz.pack`) as static HTML: its tokens by example with their position
    ids and targets, its attention mask as a grid, and the same in words. A notebook shows the result.

    Args:
        batch: the dict of tensors that ``sv.pack(...)`` returns ("boundaries" or "naive").
        tok: the tokenizer it was packed with (to decode the tokens).
        row: which row of the batch to draw.
        max_tokens: draw only the first ``max_tokens`` positions (tokens and mask); the counts stay the row's.

    Raises ``TypeError`` / ``ValueError`` that name what is wrong with ``batch``, ``row`` or ``max_tokens``.
    """
    rows, width = check_packed_batch(batch, row)
    if not callable(getattr(tok, "decode", None)):
        raise TypeError(f"tok must be the tokenizer the batch was packed with (it decodes the tokens); got {type(tok).__name__}.")  # fmt: skip
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral)):
        raise TypeError(f"max_tokens must be a whole number or None; got {type(max_tokens).__name__}.")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 (or None for the whole row); got {max_tokens}.")
    limit = width if max_tokens is None else min(width, int(max_tokens))
    r = _row_of(batch, int(row))
    real = sum(e >= 0 for e in r["ex"])
    n_ex, targets = len(r["foreign"]), sum(v != IGNORE_INDEX for v in r["labels"])
    summary = (f"{_count(n_ex, 'example')} in the row, {_count(real, 'real token')}, {_count(width - real, 'padding token')}, "
               f"{_count(targets, 'trained target')} (row {row} of {rows}, {width} positions).")  # fmt: skip
    uid = hashlib.sha1(repr((row, r["ids"], r["ex"], r["mode"], limit)).encode()).hexdigest()[:10]
    grid, step = _grid_svg(r, limit, uid)
    cut = (
        f"Showing the first {limit} of the row's {width} positions; the counts are the whole row's."
        if limit < width
        else ""
    )
    legend = "".join(
        f'<span><span class="sftviz-pk-legmark">{esc(mark)}</span> {esc(words)}{f" ({esc(BOUNDARY_WHY)})" if kind == "boundary" else ""}</span>'
        for kind, (mark, words) in MARKS.items()
    )
    html = (
        f'{style_tag()}<style>{packing_css()}</style><div class="sftviz sftviz-static sftviz-packedview" '
        f'data-sftviz-mode="{r["mode"]}" data-sftviz-row="{row}" data-sftviz-examples="{n_ex}" data-sftviz-real="{real}" '
        f'data-sftviz-padding="{width - real}" data-sftviz-targets="{targets}" '
        f'data-sftviz-cross-keys="{sum(r["foreign"].values())}">'
        f'<div class="sftviz-title">Packed row {row} ({r["mode"]} mask)</div>'
        f'<div class="sftviz-summary sftviz-pk-summary">{esc(summary)}</div>'
        + (f'<div class="sftviz-caption">{esc(cut)}</div>' if cut else "")
        + f"{_strip_html(r, tok, limit)}"
        f'<div class="sftviz-pk-legend">{legend}<span>the number under each token: its position id (it restarts '
        "at 0 in each example)</span><span>the colour and the label before a run of tokens: which example they "
        "belong to</span></div>"
        '<div class="sftviz-pk-maskhead">Attention mask: rows are query positions (the token that attends), '
        "columns key positions (what it may read); position 0 is at the top left.</div>"
        f'<div class="sftviz-pk-gridrow">{grid}{_mask_keys_html(r)}</div>'
        f'<div class="sftviz-note sftviz-pk-mode">{esc(_mode_words(r, limit, step))}</div></div>'
    )
    return PackedRowHTML(html)

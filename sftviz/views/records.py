"""Records: the one description of each token, log-prob row and gradient, as plain dicts.

The static HTML (:mod:`sftviz.views.html`), the figures (:mod:`sftviz.views.plots`) and the live
widgets (:mod:`sftviz.widgets`, which send these dicts to their ES modules) all draw from the same
records, so the static and live views show the same tokens with the same words.

Records never compute model quantities: they read an :class:`~sftviz.data.Example`, a
:class:`~sftviz.logprobs.ScoreReport`, or a gradients object from :mod:`sftviz.gradients`.
"""

from __future__ import annotations

import math

from ..data import IGNORE_INDEX, Example
from ..logprobs import ScoreReport
from .vocab import EMPTY_TOKEN, OTHER_WHITESPACE, SEGMENTS, WHITESPACE, is_special, segment_words

__all__ = [
    "IGNORE_INDEX",
    "cosine_sentence",
    "display_parts",
    "example_and_report",
    "example_summary",
    "fmt_number",
    "fmt_weight",
    "gradient_records",
    "identity_lines",
    "legend_entries",
    "logprob_records",
    "notes_of",
    "token_records",
    "tooltip_lines",
]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def display_parts(text: str) -> list[tuple[str, str]]:
    """Split a token's text into ``("txt", s)`` and ``("ws", s)`` parts for display.

    Whitespace is made visible (space as a middle dot, newline as a return arrow, tab as an arrow),
    because where spaces go is half of what tokenization does. The JS in ``widgets/_common.js``
    mirrors this function (with the same symbols, from :mod:`sftviz.views.vocab`).
    """
    if text == "":
        return [("ws", EMPTY_TOKEN)]
    parts, buf, kind = [], "", None
    for ch in text:
        k = "ws" if ch in WHITESPACE or ch.isspace() else "txt"
        shown = WHITESPACE.get(ch, OTHER_WHITESPACE) if k == "ws" else ch
        if k != kind and buf:
            parts.append((kind, buf))
            buf = ""
        kind = k
        buf += shown
    if buf:
        parts.append((kind, buf))
    return parts


def fmt_number(v: float | int | None, digits: int = 3) -> str:
    """A number as views print it: ``digits`` decimals, a real minus sign, an en dash for None."""
    if v is None:
        return "\u2013"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.{digits}f}".replace("-", "\u2212")


def fmt_weight(w: float) -> str:
    """A loss weight, as short as it goes (``0.1``, ``1``)."""
    return f"{w:g}"


def example_and_report(
    obj: Example | ScoreReport, scores: ScoreReport | None = None
) -> tuple[Example, ScoreReport | None]:
    """``(example, report)`` from an Example, a ScoreReport, or an Example plus its ScoreReport.

    Raises:
        TypeError: ``obj`` is neither, or ``scores`` is not a ScoreReport.
        ValueError: a report plus other scores, or scores of another example.
    """
    if isinstance(obj, ScoreReport):
        if scores is not None and scores is not obj:
            raise ValueError("Pass a ScoreReport, or an Example with scores=, not a report plus other scores.")
        return obj.example, obj
    if isinstance(obj, Example):
        if scores is not None:
            if not isinstance(scores, ScoreReport):
                raise TypeError(f"scores must be a ScoreReport from sv.score; got {type(scores).__name__}.")
            if len(scores.rows) != len(obj):
                raise ValueError(
                    f"scores has {len(scores.rows)} tokens but the example has {len(obj)}: score this example "
                    "(sv.score(model, tok, example=ex))."
                )
        return obj, scores
    raise TypeError(
        f"Expected an sftviz Example (sv.build_example) or a ScoreReport (sv.score); got {type(obj).__name__}."
    )


# --------------------------------------------------------------------------------------------
# Token records
# --------------------------------------------------------------------------------------------


def token_records(obj: Example | ScoreReport, scores: ScoreReport | None = None) -> list[dict]:
    """One dict per token with everything a view shows about it.

    Args:
        obj: an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`.
        scores: optionally a ``ScoreReport`` of the same example (adds log-probs and ranks).

    Keys: ``position``, ``text``, ``id``, ``segment``, ``label``, ``trained``, ``weight``,
    ``predicted_from``, ``next_text``, ``next_trained``, ``logprob``, ``rank``, ``top``,
    ``special``, ``newline`` and ``tip`` (the tooltip, a list of lines).
    """
    example, report = example_and_report(obj, scores)
    n = len(example)
    out = []
    for t, row in enumerate(example.rows()):
        text = row["token"]
        sc = report.rows[t] if report is not None else None
        nxt = t + 1 if t + 1 < n else None
        rec = {
            "position": t,
            "text": text,
            "id": int(row["id"]),
            "segment": str(row["segment"]),
            "label": int(row["label"]),
            "trained": bool(row["trained"]),
            "weight": float(row["weight"]),
            "predicted_from": row["predicted_from"],
            "next_text": example.tokens[nxt] if nxt is not None else None,
            "next_trained": bool(example.labels[nxt] != IGNORE_INDEX) if nxt is not None else False,
            "logprob": None if sc is None or sc.logprob is None else float(sc.logprob),
            "rank": None if sc is None else sc.rank,
            "top": [] if sc is None else [[str(s), float(v)] for s, v in (sc.top or [])],
            "special": is_special(row["segment"]),
            "newline": "\n" in text,
        }
        rec["tip"] = tooltip_lines(rec, example.tokens)
        out.append(rec)
    return out


def tooltip_lines(rec: dict, tokens: list[str]) -> list[str]:
    """The hover text of one token, as lines (the shift made explicit)."""
    t = rec["position"]
    lines = [f"position {t} \u00b7 token {rec['text']!r} \u00b7 id {rec['id']} \u00b7 {segment_words(rec['segment'])}"]
    if rec["trained"]:
        w = "" if rec["weight"] == 1 else f", weight {fmt_weight(rec['weight'])}"
        lines.append(f"label {rec['label']}: a target of the loss{w}")
    else:
        lines.append("label -100: masked, not in the loss (still read as context)")
    if t == 0:
        lines.append("predicted from: nothing (position 0 is never a target)")
    else:
        lines.append(f"predicted from position {t - 1} ({tokens[t - 1]!r}): the logits there score this token")
    if rec["next_text"] is None:
        lines.append("predicts: nothing (the prediction at the last token is never scored)")
    else:
        state = "trained" if rec["next_trained"] else "masked, not in the loss"
        lines.append(f"predicts position {t + 1} ({rec['next_text']!r}): {state}")
    if rec["logprob"] is not None:
        p = math.exp(rec["logprob"])
        rank = f", rank {rec['rank']}" if rec["rank"] is not None else ""
        lines.append(f"log Pr(token | before) = {rec['logprob']:.3f} nats (p = {p:.3g}{rank})")
        if rec["top"]:
            alts = ", ".join(f"{s!r} {v:.2f}" for s, v in rec["top"][:5])
            lines.append(f"model preferred: {alts}")
    return lines


def example_summary(example: Example) -> str:
    """One line: how many tokens, how many trained, which masking."""
    n = len(example)
    trained = [t for t in range(n) if example.labels[t] != IGNORE_INDEX]
    by_seg: dict = {}
    for t in trained:
        by_seg[example.segments[t]] = by_seg.get(example.segments[t], 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in by_seg.items())
    return (
        f"{n} tokens \u00b7 {len(trained)} trained targets ({parts or 'none'}) \u00b7 "
        f"{n - len(trained)} masked \u00b7 masking={example.masking!r}"
    )


def legend_entries(segments: list[str]) -> list[dict]:
    """Legend rows (``segment``, ``name``, ``about``) for the segments present, in order of first appearance."""
    seen = []
    for s in segments:
        if s not in seen:
            seen.append(s)
    out = []
    for s in seen:
        known = SEGMENTS.get(s)
        out.append({"segment": s, "name": known.words if known else s, "about": known.description if known else ""})
    return out


def notes_of(example: Example) -> list[str]:
    """The example's plain-language notes (truncation, no BOS, tokens merging at the seam)."""
    notes = list(getattr(example, "notes", []) or [])
    bn = getattr(example, "boundary_note", None)
    if bn is not None:
        notes.append(str(bn))
    return notes


# --------------------------------------------------------------------------------------------
# Log-probabilities: joint = marginal + conditional, token by token
# --------------------------------------------------------------------------------------------


def logprob_records(report: ScoreReport) -> list[dict]:
    """One dict per scored token with its log-prob, the running sums, and the bar length (0..1).

    ``part`` is ``"x"`` for tokens counted in log Pr(x) and ``"y"`` for those in log Pr(y | x);
    ``running_joint`` is the sum so far of every scored token, ``running_part`` the sum so far of
    this token's part. The last ``running_part`` of each part equals ``report.marginal`` /
    ``report.conditional`` (up to rounding), and the last ``running_joint`` equals ``report.joint``.
    """
    if not isinstance(report, ScoreReport):
        raise TypeError(f"Expected a ScoreReport (from sv.score); got {type(report).__name__}.")
    recs = token_records(report)
    scored = [r for r in recs if r["logprob"] is not None]
    scale = max([1.0] + [-r["logprob"] for r in scored if math.isfinite(r["logprob"])])
    joint = marg = cond = 0.0
    out = []
    for r in scored:
        lp = r["logprob"]
        in_y = bool(report.rows[r["position"]].in_completion)
        joint += lp
        if in_y:
            cond += lp
        else:
            marg += lp
        out.append(
            {
                **r,
                "part": "y" if in_y else "x",
                "running_joint": joint,
                "running_part": cond if in_y else marg,
                "bar": min(1.0, -lp / scale) if math.isfinite(lp) else 1.0,
            }
        )
    return out


def identity_lines(report: ScoreReport) -> dict:
    """The chain-rule identity with this report's numbers, as strings (for static and live views)."""
    check = report.check()
    n_c = report.n_completion_scored
    return {
        "joint": fmt_number(report.joint),
        "marginal": fmt_number(report.marginal),
        "conditional": fmt_number(report.conditional),
        "prob_y_given_x": f"{math.exp(report.conditional):.3g}",
        "loss": fmt_number(-report.conditional / n_c) if n_c else "\u2013",
        "n_prompt": report.n_prompt_scored,
        "n_completion": n_c,
        "ok": bool(check.ok),
        "check": str(check),
    }


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def _seq(grads: object, name: str, n: int, default: object = None) -> list:
    v = getattr(grads, name, None)
    if v is None:
        return [default] * n
    v = list(v)
    if len(v) != n:
        raise ValueError(f"gradients.{name} has {len(v)} entries for {n} tokens.")
    return v


def _gradient_tip(position, text, segment, trained, name, im, ifull, tm, tf, last) -> list[str]:
    tip = [
        f"position {position} \u00b7 token {text!r} \u00b7 {segment_words(segment)}",
        "trained target" if trained else f"masked (not a target of the {name} loss)",
        f"|d loss / d input embedding|: {name} {im:.3g}, full {ifull:.3g}",
    ]
    if tm is not None or tf is not None:
        tip.append(
            f"as a target, its share of the weight gradient: {name} "
            + ("\u2013" if tm is None else f"{tm:.3g}")
            + ", full "
            + ("\u2013" if tf is None else f"{tf:.3g}")
        )
    if last:
        tip.append("last token: its own prediction is never scored, so no gradient reaches its input embedding")
    return tip


def _gradient_tokens(grads: object, name: str) -> list[dict]:
    """The per-token records of :func:`gradient_records`."""
    tokens = list(grads.tokens)
    n = len(tokens)
    segments = _seq(grads, "segments", n, "prompt")
    positions = _seq(grads, "positions", n) if getattr(grads, "positions", None) is not None else list(range(n))
    im, ifull = _seq(grads, "input_grad_masked", n, 0.0), _seq(grads, "input_grad_full", n, 0.0)
    tm, tf = _seq(grads, "target_grad", n), _seq(grads, "target_grad_full", n)
    trained = getattr(grads, "trained", None)
    trained = [bool(v) for v in trained] if trained is not None else [v is not None for v in tm]
    out = []
    for t in range(n):
        tip = _gradient_tip(
            positions[t], tokens[t], segments[t], trained[t], name, im[t], ifull[t], tm[t], tf[t], t == n - 1
        )
        out.append(
            {
                "position": positions[t],
                "text": tokens[t],
                "segment": segments[t],
                "trained": trained[t],
                "weight": 1.0 if trained[t] else 0.0,
                "special": is_special(segments[t]),
                "newline": "\n" in tokens[t],
                "logprob": None,
                "input_masked": float(im[t] or 0.0),
                "input_full": float(ifull[t] or 0.0),
                "target_masked": None if tm[t] is None else float(tm[t]),
                "target_full": None if tf[t] is None else float(tf[t]),
                "tip": tip,
            }
        )
    return out


def _largest(vals: list) -> float:
    vals = [abs(v) for v in vals if v is not None and math.isfinite(v)]
    return max(vals) if vals else 0.0


def gradient_records(grads: object) -> dict:
    """Per-token and per-layer gradient numbers from :func:`sftviz.gradients.token_gradients`, ready to draw.

    Returns ``{"tokens": [...], "layers": [...], "masked_name": str, "cosine": float, "max_input": float,
    "max_target": float, "max_layer": float}``; ``masked_name`` names the masked loss ("completion-only"...).
    Each token dict has the keys of :func:`token_records` that exist without an Example (position,
    text, segment, trained, special, newline, tip) plus ``input_masked``, ``input_full``,
    ``target_masked`` and ``target_full`` (None where a token is not a target).
    """
    if not hasattr(grads, "input_grad_masked") or not hasattr(grads, "tokens"):
        raise TypeError(f"Expected the result of sftviz.gradients.token_gradients; got {type(grads).__name__}.")
    name = str(getattr(grads, "masked_name", None) or "completion-only")
    out = _gradient_tokens(grads, name)
    lm = dict(getattr(grads, "layer_norms_masked", {}) or {})
    lf = dict(getattr(grads, "layer_norms_full", {}) or {})
    names = list(lm) + [k for k in lf if k not in lm]
    layers = [{"name": k, "masked": float(lm.get(k, 0.0)), "full": float(lf.get(k, 0.0))} for k in names]
    return {
        "tokens": out,
        "layers": layers,
        "masked_name": name,
        "cosine": float(getattr(grads, "cosine", float("nan"))),
        "max_input": _largest([r["input_masked"] for r in out] + [r["input_full"] for r in out]),
        "max_target": _largest([r["target_masked"] for r in out] + [r["target_full"] for r in out]),
        "max_layer": _largest([x["masked"] for x in layers] + [x["full"] for x in layers]),
    }


def cosine_sentence(cosine: float | None, name: str = "completion-only") -> str:
    """One sentence reading the cosine between the gradients of the ``name`` loss and of the full loss."""
    if cosine is None or math.isnan(cosine):
        return "cosine(masked, full) is not available."
    if cosine > 0.9:
        how = "they point almost the same way"
    elif cosine > 0.5:
        how = "similar directions, but the prompt tokens pull the full loss elsewhere too"
    elif cosine > 0:
        how = "quite different directions: most of the full loss's push comes from modelling the prompt"
    else:
        how = "opposing directions"
    return f"cosine(gradient of {name} loss, gradient of full loss) = {cosine:.3f}: {how}."

"""Lints: the mask bugs SFT users report most, each found, named and explained with its row and tokens.

A lint is one entry in :data:`LINTS` (its name, level, title, the reports it comes from) and one
function. Row lints look at one :class:`~sftviz.xray.core.RowXRay`; dataset lints at the whole
report. Each has a test on a fixture with the bug and one without (no false alarm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core import Finding, RowXRay, XRayReport, not_prefix_stable
from .policy import injected_system


@dataclass(frozen=True)
class Lint:
    """A registered lint.

    Attributes:
        name: its name in reports and on the command line.
        level: "error" (training is wrong), "warning" (probably not what you meant) or "info".
        title: what it finds, in a few words.
        sources: the public reports of the bug it catches.
        scope: "row" (the check takes one row) or "dataset" (the whole report).
        check: the function.
    """

    name: str
    level: str
    title: str
    sources: tuple[str, ...]
    scope: str
    check: Callable


LINTS: dict[str, Lint] = {}


def lint(name: str, level: str, title: str, sources: tuple[str, ...], scope: str = "row") -> Callable:
    """Register a lint function under ``name``."""

    def register(fn: Callable) -> Callable:
        LINTS[name] = Lint(name, level, title, sources, scope, fn)
        return fn

    return register


@dataclass
class Context:
    """What the lints may read besides the rows: the tokenizer, the pipeline, the raw rows."""

    tok: Any
    pipeline: Any
    rows: list[dict]


# --------------------------------------------------------------------------------------------
# Row lints: each returns (message, positions) pairs for one row
# --------------------------------------------------------------------------------------------


@lint("row-failed", "error", "the pipeline failed on a row", ())
def _row_failed(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    return [(f"The pipeline failed on this row: {rx.error}", [])] if rx.error else []


@lint("all-zero-mask", "error", "a row that trains nothing",
      ("TRL #5471", "transformers #34172"))  # fmt: skip
def _all_zero(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    if rx.error or rx.dropped or any(rx.trained):
        return []
    why = ""
    if rx.meta.get("refused"):
        why = (" The pipeline refused the data: " + rx.meta["refused"] + " Its assistant mask, from a chat template "
               "without {% generation %} markers, is all zero.")  # fmt: skip
    elif rx.meta.get("markers_found") == 0:
        why = " The response marker was never found in the row's ids (see marker-missed)."
    elif any(m["trained"] for m in rx.missing):
        why = " The trained tokens were cut off (see truncated)."
    return [("This row trains no token: every label is -100, so it adds nothing to the loss (a batch of such "
             "rows gives a loss of 0 or NaN)." + why, [])]  # fmt: skip


@lint("eos-not-trained", "error", "the EOS / end-of-turn token is never trained",
      ("TRL #1623", "TRL #1414", "Unsloth #416"))  # fmt: skip
def _eos_not_trained(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    missed = [t for t, kind in rx.disagreements if kind == "missing" and rx.segments[t] in ("eos", "end_of_turn")]
    if not missed:
        return []
    pad = ctx.tok.pad_token_id
    why = ""
    if pad is not None and all(rx.input_ids[t] == pad for t in missed):
        why = (f" Its id {pad} is also the pad id (pad == eos), and the pipeline masks padding by id, so the real "
               "end of the answer is masked too: the model never learns to stop. Use a pad token that is not the "
               "EOS, or a collator that masks padding by position (sftviz.SFTCollator does).")  # fmt: skip
    return [(f"The policy trains the end of the answer, but the pipeline leaves it untrained: "
             f"{rx.positions_text(missed)}." + why, missed)]  # fmt: skip


@lint("template-trained", "warning", "template header or boilerplate trained", ("NeMo Automodel #3739",))
def _template_trained(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    injected = set(rx.injected)
    extra = [t for t, on in enumerate(rx.trained) if on and rx.segments[t] in ("template", "bos") and t not in injected]
    if not extra:
        return []
    asked = sum(1 for t in extra if rx.expected[t])
    also = (
        f" The policy asks for {asked} of them: the template writes them inside the assistant's turn." if asked else ""
    )
    return [(f"The pipeline trains {len(extra)} token(s) the chat template wrote (role headers, control text, "
             f"boilerplate such as an empty <think></think>): {rx.positions_text(extra)}.{also}", extra)]  # fmt: skip


@lint("roles-trained", "warning", "turns of roles the policy does not train are trained",
      ("torchtune #2214", "prime-rl #978"))  # fmt: skip
def _roles_trained(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    extra = [t for t, kind in rx.disagreements if kind == "extra" and rx.segments[t] in ROLE_SEGMENTS]
    if not extra:
        return []
    roles = sorted({rx.segments[t] for t in extra})
    return [(f"The pipeline trains {len(extra)} token(s) of {', '.join(roles)} text that the policy does not "
             f"train: the model learns to write the {'/'.join(roles)} side too. {rx.positions_text(extra)}.", extra)]  # fmt: skip


#: Segments that are a message's own text (not the template's).
ROLE_SEGMENTS = ("system", "user", "tool", "prompt", "assistant", "completion")


@lint("injected-system", "warning", "a system prompt the template injected", ())
def _injected(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    if not rx.injected:
        return []
    text = injected_system(ctx.tok) or ""
    return [(f"The chat template wrote a system prompt this row never had: {text!r}. The model is trained "
             "with it as context; at inference it is there only if the same template writes it again.",
             rx.injected)]  # fmt: skip


@lint("injected-system-trained", "error", "an injected system prompt is trained", ())
def _injected_trained(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    trained = [t for t in rx.injected if rx.trained[t]]
    if not trained:
        return []
    return [(f"The pipeline trains {len(trained)} token(s) of the system prompt the template injected: the model "
             f"learns to write text the data never had. {rx.positions_text(trained)}.", trained)]  # fmt: skip


@lint("not-prefix-preserving", "error", "a template that rewrites earlier turns",
      ("TRL #6361", "TRL #6363", "ms-swift #4939", "slime #330"))  # fmt: skip
def _not_prefix(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    if not not_prefix_stable(rx.policy_error):
        return []
    return [(_rewrite_detail(ctx.tok, ctx.rows[rx.index]) + " Masks found by rendering prefixes (or by diffing a "
             "prompt's tokens against the whole conversation's) spill into the wrong turn; a template with "
             "{% generation %} markers and return_assistant_tokens_mask does not.", [])]  # fmt: skip


def _rewrite_detail(tok: Any, row: dict) -> str:
    from .rows import conversation

    chat = conversation(row)
    if chat is None:
        return "The chat template rewrites earlier turns."
    messages = chat[0]
    full = tok.apply_chat_template(messages, tokenize=False)
    for k in range(1, len(messages)):
        part = tok.apply_chat_template(messages[:k], tokenize=False)
        if not full.startswith(part):
            at = next((i for i, (a, b) in enumerate(zip(part, full)) if a != b), min(len(part), len(full)))
            return (f"The chat template rewrites earlier turns: the first {k} message(s) render as "
                    f"{part[max(0, at - 20) : at + 40]!r} on their own, but as {full[max(0, at - 20) : at + 40]!r} "
                    "inside the whole conversation.")  # fmt: skip
    return "The chat template rewrites earlier turns."


@lint("truncated", "error", "truncation cut the completion or its EOS", ())
def _truncated(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    if rx.error or rx.dropped or not rx.input_ids:
        return []
    cut = [m for m in rx.missing if m["trained"]]
    if not cut:
        return []
    eos = any(m["segment"] in ("eos", "end_of_turn") for m in cut)
    return [(f"The pipeline's sequence ({len(rx.input_ids)} tokens) lacks {len(cut)} token(s) the policy trains"
             + (", the EOS among them" if eos else "") + ": " + ", ".join(repr(m["token"]) for m in cut[:6])
             + ". Truncation cut the answer: raise max_length or drop rows that do not fit.", [])]  # fmt: skip


@lint("marker-missed", "error", "marker masking missed: the marker tokenizes differently in context",
      ("TRL #598", "TRL #980", "TRL #1183", "Unsloth #2900"))  # fmt: skip
def _marker_missed(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    if rx.meta.get("markers_found", 1) or not rx.meta.get("marker_in_text"):
        return []
    pipe = ctx.pipeline
    alone = [ctx.tok.decode([i]) for i in pipe.response_ids]
    return [(f"The response marker {pipe.response_part!r} is in this row's text, but its ids tokenized alone "
             f"({alone}) never occur in the row's ids: in context the marker's first characters merge with what "
             "comes before them. Every label stays -100. Tokenize the marker with its context (for example with "
             "the leading space or newline) or use a pipeline that knows the spans.", [])]  # fmt: skip


@lint("doubled-bos", "error", "a doubled BOS", ())
def _doubled_bos(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    bos = ctx.tok.bos_token_id
    if bos is None or len(rx.input_ids) < 2 or rx.input_ids[0] != bos or rx.input_ids[1] != bos:
        return []
    return [(f"The row starts with two BOS tokens ({ctx.tok.bos_token!r}): the chat template writes one and the "
             "tokenizer adds another. Tokenize the rendered text with add_special_tokens=False.", [0, 1])]  # fmt: skip


@lint("bos-added", "info", "a BOS the tokenizer itself does not add", ())
def _bos_added(rx: RowXRay, ctx: Context) -> list[tuple[str, list[int]]]:
    bos = ctx.tok.bos_token_id
    if bos is None or not rx.input_ids or rx.input_ids[0] != bos or rx.expected[0] is not None:
        return []
    if not _surprising_bos(ctx.tok):
        return []  # the tokenizer adds it too, or it is a plain BOS: nothing surprising
    return [(f"The pipeline starts this plain-text row with {ctx.tok.bos_token!r}, the tokenizer's nominal BOS, "
             "which its chat template uses to open every turn and which neither the tokenizer nor TRL adds to "
             "plain text: the model learns after a turn opener it will not see when you generate from "
             "tok(prompt). sv.build_example(..., add_bos=False) leaves it out.", [0])]  # fmt: skip


def _surprising_bos(tok: Any) -> bool:
    """A BOS the tokenizer does not add to text itself and its chat template uses to open turns."""
    key = (getattr(tok, "chat_template", None), tok.bos_token, len(tok))
    if key not in _SURPRISING:
        _SURPRISING[key] = tok("a")["input_ids"][:1] != [tok.bos_token_id] and _opens_turns(tok)
    return _SURPRISING[key]


_SURPRISING: dict[tuple, bool] = {}


def _opens_turns(tok: Any) -> bool:
    """Whether the chat template writes the BOS token more than once in a two-message conversation."""
    if getattr(tok, "chat_template", None) is None or not tok.bos_token:
        return False
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                       tokenize=False)  # fmt: skip
    except Exception:  # noqa: BLE001 -- a template that cannot render the probe
        return False
    return text.count(tok.bos_token) > 1


# --------------------------------------------------------------------------------------------
# Dataset lints
# --------------------------------------------------------------------------------------------


@lint("rows-dropped", "error", "rows dropped silently", (), scope="dataset")
def _dropped(report: XRayReport, ctx: Context) -> list[Finding]:
    gone = [rx.index for rx in report.rows if rx.dropped]
    return [Finding("rows-dropped", "error", f"The pipeline returned no row for data row {i}: it was dropped "
                    "without an error, so it is never trained.", i) for i in gone]  # fmt: skip


@lint("template-eos-differs", "warning", "the template's end of turn is not the tokenizer's EOS",
      ("TRL PR #3299",), scope="dataset")  # fmt: skip
def _eos_differs(report: XRayReport, ctx: Context) -> list[Finding]:
    tok = ctx.tok
    stops = {tok.eos_token_id, *_generation_eos(tok)}
    for rx in report.rows:
        ends = {rx.input_ids[t] for t, s in enumerate(rx.segments) if s == "end_of_turn"}
        other = sorted(e for e in ends if e not in stops)
        if other:
            names = [tok.convert_ids_to_tokens(e) for e in other]
            return [Finding("template-eos-differs", "warning",
                            f"The chat template ends assistant turns with {names}, but the tokenizer's EOS is "
                            f"{tok.eos_token!r}. Generation stops at the EOS unless the model's generation_config "
                            f"also lists {names[0]}; set it there (or set the tokenizer's EOS to it).", rx.index)]  # fmt: skip
    return []


def _generation_eos(tok: Any) -> list[int]:
    """The EOS ids of the generation_config.json beside the tokenizer's files, when there is one."""
    import json
    from pathlib import Path

    path = Path(str(getattr(tok, "name_or_path", "") or "")) / "generation_config.json"
    try:
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int)]


def run_lints(report: XRayReport, rows: list[dict], tok: Any, pipeline: Any) -> None:
    """Run every lint on ``report``, adding the findings to each row and to the report."""
    ctx = Context(tok, pipeline, rows)
    for entry in LINTS.values():
        if entry.scope == "row":
            for rx in report.rows:
                for message, positions in entry.check(rx, ctx):
                    finding = Finding(entry.name, entry.level, message, rx.index, positions)
                    rx.findings.append(finding)
                    report.findings.append(finding)
        else:
            for finding in entry.check(report, ctx):
                report.findings.append(finding)
                if finding.row is not None:
                    report.rows[finding.row].findings.append(finding)

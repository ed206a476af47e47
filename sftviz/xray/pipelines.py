"""Pipelines: what really builds the labels, run for real on the rows.

Each pipeline takes the rows as the user gave them and returns, per row, the ``input_ids`` and
``labels`` it would hand the model (a :class:`Built`), or None for a row it dropped. The X-ray never
replaces these labels with its own.

* ``"sftviz"``: :class:`sftviz.SFTCollator` (completion-only loss);
* ``"trl"``: TRL ``SFTTrainer``'s own dataset preparation and collator (``completion_only_loss``,
  ``assistant_only_loss``), run on a stand-in model (the labels do not depend on the weights);
* ``"trl-assistant-only"``: the same with ``assistant_only_loss=True``;
* ``"hf-lm"``: transformers' ``DataCollatorForLanguageModeling(mlm=False)`` on the tokenized text;
* ``"marker"``: marker-string masking: the response and instruction markers are tokenized alone and
  their ids searched for in each row, as TRL's former ``DataCollatorForCompletionOnlyLM`` and the
  plain form of Unsloth's ``train_on_responses_only`` do;
* ``"given"``: the labels a tokenized row already carries;
* any callable ``row -> {"input_ids", "labels"}`` (None to drop the row).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data import encode
from ..masking import IGNORE_INDEX
from .rows import conversation, row_kind


@dataclass
class Built:
    """What a pipeline made of one row: the ids the model reads and the labels it is trained on
    (``-100`` where not trained), or the pipeline's error for the row."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    error: str | None = None
    meta: dict = field(default_factory=dict)


def _as_list(value: Any) -> list[int]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value and isinstance(value[0], list):  # a batch of one
        if len(value) != 1:
            raise ValueError("a pipeline returned a batch of several rows for one row.")
        value = value[0]
    return [int(v) for v in value]


def _from_batch(batch: dict) -> Built:
    """One row's ids and labels from a collated batch of one, without its padding."""
    ids, labels = _as_list(batch["input_ids"]), _as_list(batch["labels"])
    mask = batch.get("attention_mask")
    if mask is not None:
        keep = [i for i, m in enumerate(_as_list(mask)) if m]
        ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
    return Built(ids, labels)


class Pipeline:
    """A pipeline: ``run(rows, tok)`` gives one :class:`Built` (or None: dropped) per row."""

    name = "pipeline"
    description = ""
    notes: list[str]
    #: The errors that mark one row as failed (others stop the X-ray: they are bugs of the pipeline).
    row_errors: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError)

    def __init__(self) -> None:
        self.notes = []

    def run(self, rows: list[dict], tok: Any) -> list[Built | None]:
        out = []
        for row in rows:
            try:
                out.append(self.build(row, tok))
            except self.row_errors as err:
                out.append(Built(error=f"{type(err).__name__}: {err}"))
        return out

    def build(self, row: dict, tok: Any) -> Built | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class SftvizPipeline(Pipeline):
    """:class:`sftviz.SFTCollator` on each row (a batch of one)."""

    name = "sftviz"
    description = "sftviz.SFTCollator (completion-only loss; labels by construction)"

    def __init__(self, masking: str | float = "completion", max_length: int | None = None) -> None:
        super().__init__()
        self.masking, self.max_length = masking, max_length

    def run(self, rows: list[dict], tok: Any) -> list[Built | None]:
        from ..collate import SFTCollator

        tok = _with_pad(tok, self.notes)
        self.collate = SFTCollator(tok, masking=self.masking, max_length=self.max_length)
        return super().run(rows, tok)

    def build(self, row: dict, tok: Any) -> Built:
        if row_kind(row) == "sharegpt":  # SFTCollator reads messages: converted first, as a user would
            messages, _ = conversation(row)
            row = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
        return _from_batch(self.collate([row]))


class GivenPipeline(Pipeline):
    """The labels a tokenized row carries (or that its ``completion_mask``/``assistant_masks`` give)."""

    name = "given"
    description = "the labels the tokenized rows already carry"

    def build(self, row: dict, tok: Any) -> Built:
        if "input_ids" not in row:
            raise ValueError("this row is not tokenized (no input_ids), so it carries no labels.")
        ids = _as_list(row["input_ids"])
        if "labels" in row:
            return Built(ids, _as_list(row["labels"]))
        for key in ("completion_mask", "assistant_masks"):
            if key in row:
                return Built(ids, [t if m else IGNORE_INDEX for t, m in zip(ids, _as_list(row[key]))])
        return Built(ids, list(ids))  # language modelling: every token


class CallablePipeline(Pipeline):
    """A user's function ``row -> {"input_ids", "labels"}`` (None to drop the row). Any exception it
    raises on a row marks that row as failed, with the exception, and the X-ray goes on."""

    row_errors = (Exception,)

    def __init__(self, fn: Callable[[dict], Any], name: str | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.description = f"the function {self.name}"

    def build(self, row: dict, tok: Any) -> Built | None:
        out = self.fn(dict(row))
        if out is None:
            return None
        if not isinstance(out, dict) or "input_ids" not in out or "labels" not in out:
            raise TypeError(f"{self.name} must return a dict with 'input_ids' and 'labels' (or None to drop the row).")
        return _from_batch(out)


def _with_pad(tok: Any, notes: list[str]) -> Any:
    """``tok``, or a copy with pad = EOS when it has no pad token (what users usually do; the
    user's own tokenizer is left as it is)."""
    if tok.pad_token_id is not None:
        return tok
    tok = copy.deepcopy(tok)
    tok.pad_token = tok.eos_token
    notes.append(f"The tokenizer has no pad token; it was set to the EOS token {tok.eos_token!r}, as is usual.")
    return tok


def _text_ids(row: dict, tok: Any) -> list[int]:
    """The ids a text pipeline reads: the chat template for conversations; otherwise the text (or
    prompt + completion + EOS) tokenized with the tokenizer's own special tokens."""
    chat = conversation(row)
    if chat is not None:
        return _as_list(tok.apply_chat_template(chat[0], tokenize=True, return_dict=True)["input_ids"])
    kind = row_kind(row)
    if kind == "text":
        text = row["text"]
    elif kind == "prompt_completion":
        text = row["prompt"] + row["completion"] + (tok.eos_token or "")
    else:
        raise ValueError(f"a {kind} row has no text to tokenize.")
    return list(tok(text)["input_ids"])


class LanguageModelingPipeline(Pipeline):
    """transformers' ``DataCollatorForLanguageModeling(mlm=False)``: every token is a label, except
    those equal to the pad id."""

    name = "hf-lm"
    description = "transformers.DataCollatorForLanguageModeling(mlm=False) on the tokenized text"

    def run(self, rows: list[dict], tok: Any) -> list[Built | None]:
        from transformers import DataCollatorForLanguageModeling

        tok = _with_pad(tok, self.notes)
        self.collate = DataCollatorForLanguageModeling(tok, mlm=False)
        return super().run(rows, tok)

    def build(self, row: dict, tok: Any) -> Built:
        return _from_batch(self.collate([{"input_ids": _text_ids(row, tok)}]))


class MarkerPipeline(Pipeline):
    """Marker-string masking: train what follows each response marker, up to the next instruction
    marker. The markers are tokenized alone and searched for as token ids.

    Without markers, they are read from the chat template: the text it puts before a user message's
    content (instruction) and before an assistant's (response).
    """

    name = "marker"

    def __init__(self, response_part: str | None = None, instruction_part: str | None = None) -> None:
        super().__init__()
        self.response_part, self.instruction_part = response_part, instruction_part

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"marker-string masking (response marker {self.response_part!r}, instruction marker {self.instruction_part!r})"

    def run(self, rows: list[dict], tok: Any) -> list[Built | None]:
        if self.response_part is None:
            self.instruction_part, self.response_part = template_markers(tok)
        for name in ("response_part", "instruction_part"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string; got {value!r}.")
        self.response_ids = encode(tok, self.response_part, split_special=False)
        self.instruction_ids = encode(tok, self.instruction_part, split_special=False) if self.instruction_part else []
        return super().run(rows, tok)

    def build(self, row: dict, tok: Any) -> Built:
        ids = _text_ids(row, tok)
        labels = [IGNORE_INDEX] * len(ids)
        starts = _find_all(ids, self.response_ids)
        for s in starts:
            lo = s + len(self.response_ids)
            nxt = [p for p in _find_all(ids, self.instruction_ids) if p >= lo] if self.instruction_ids else []
            hi = nxt[0] if nxt else len(ids)
            labels[lo:hi] = ids[lo:hi]
        text = tok.decode(ids)
        return Built(ids, labels, meta={"markers_found": len(starts), "marker_in_text": self.response_part in text})


def _find_all(ids: list[int], pattern: list[int]) -> list[int]:
    n = len(pattern)
    if not n:
        return []
    first = pattern[0]
    return [i for i in range(len(ids) - n + 1) if ids[i] == first and ids[i : i + n] == pattern]


def template_markers(tok: Any) -> tuple[str, str]:
    """The chat template's instruction and response markers: the text it puts before a later user
    message's content, and its generation prompt (what comes before an assistant's reply)."""
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            "marker masking needs response_part= (and instruction_part=) for a tokenizer with no chat template."
        )
    u1, a1, u2 = ({"role": r, "content": c} for r, c in (("user", "q1"), ("assistant", "a1"), ("user", "q2")))
    render = tok.apply_chat_template
    first = render([u1], tokenize=False)
    response = render([u1], tokenize=False, add_generation_prompt=True)[len(first) :]
    before, after = render([u1, a1], tokenize=False), render([u1, a1, u2], tokenize=False)
    piece = after[len(before) :] if after.startswith(before) else ""
    instruction = piece[: piece.find("q2")] if "q2" in piece else ""
    if not response or not instruction:
        raise ValueError(
            "could not read the markers from this chat template; pass response_part= and instruction_part=."
        )
    return instruction, response


class TRLPipeline(Pipeline):
    """TRL ``SFTTrainer``: its dataset preparation (``_prepare_dataset``) and its collator, for real.

    The trainer is built on a one-layer stand-in model with the tokenizer's vocabulary: the labels
    depend on the tokenizer, the template and the configuration, not on the weights. The
    tokenizer is copied, so the trainer's changes (its pad token) do not reach the user's.
    """

    name = "trl"

    def __init__(self, *, completion_only_loss: bool | None = None, assistant_only_loss: bool = False,
                 max_length: int | None = 1024, **sft_config: Any) -> None:  # fmt: skip
        super().__init__()
        self.completion_only_loss, self.assistant_only_loss = completion_only_loss, assistant_only_loss
        self.max_length, self.sft_config = max_length, sft_config
        if assistant_only_loss:
            self.name = "trl-assistant-only"

    @property
    def description(self) -> str:  # type: ignore[override]
        return (f"TRL SFTTrainer (completion_only_loss={self.completion_only_loss}, assistant_only_loss="
                f"{self.assistant_only_loss}, max_length={self.max_length})")  # fmt: skip

    def run(self, rows: list[dict], tok: Any) -> list[Built | None]:
        try:
            from datasets import Dataset
            from trl import SFTConfig, SFTTrainer
        except ImportError as err:
            raise ImportError(f"the 'trl' pipeline needs TRL: pip install 'sftviz[hf]' ({err}).") from None
        tok = copy.deepcopy(tok)
        with tempfile.TemporaryDirectory() as out, _TRLLog() as log, _QuietDatasets():
            cfg = SFTConfig(output_dir=out, max_length=self.max_length, completion_only_loss=self.completion_only_loss,
                            assistant_only_loss=self.assistant_only_loss, report_to=[], use_cpu=True,
                            per_device_train_batch_size=1, **self.sft_config)  # fmt: skip
            try:
                trainer = SFTTrainer(model=_stand_in_model(tok, self.max_length), args=cfg,
                                     train_dataset=Dataset.from_list(rows), processing_class=tok)  # fmt: skip
            except (RuntimeError, ValueError) as err:  # TRL refuses the data (e.g. no {% generation %} markers)
                self.notes.append(f"TRL refused the dataset: {err}")
                return [self._refused(row, tok, str(err)) for row in rows]
            self.notes += log.messages
        prepared = trainer.train_dataset
        out_rows: list[Built | None] = [_from_batch(trainer.data_collator([prepared[i]])) for i in range(len(prepared))]
        return out_rows + [None] * (len(rows) - len(out_rows))

    def _refused(self, row: dict, tok: Any, why: str) -> Built:
        """What TRL's preparation computed for a row before it refused: the template's assistant mask."""
        chat = conversation(row)
        if chat is None:
            return Built(error=f"TRL refused the dataset: {why}")
        enc = tok.apply_chat_template(chat[0], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = _as_list(enc["input_ids"]), _as_list(enc["assistant_masks"])
        return Built(ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask)], meta={"refused": why})


class _TRLLog(logging.Handler):
    """Collects what TRL logs while it prepares the data (its warnings are findings too)."""

    def __enter__(self) -> _TRLLog:
        self.messages: list[str] = []
        self.setLevel(logging.WARNING)
        self.logger = logging.getLogger("trl")
        self.logger.addHandler(self)
        return self

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


class _QuietDatasets:
    """No ``datasets`` progress bars while TRL maps the rows (the X-ray has its own output)."""

    def __enter__(self) -> None:
        from datasets.utils import logging as dlog

        self.was = dlog.is_progress_bar_enabled()
        dlog.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from datasets.utils import logging as dlog

        if self.was:
            dlog.enable_progress_bar()


def _stand_in_model(tok: Any, max_length: int | None) -> Any:
    """A one-layer GPT-2 with the tokenizer's vocabulary: enough for SFTTrainer to prepare the data."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=len(tok), n_embd=4, n_layer=1, n_head=1, n_positions=max(max_length or 1024, 8),
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    return GPT2LMHeadModel(cfg)


#: Pipelines by name, as the command line and ``sv.xray(pipeline="...")`` take them.
PIPELINES: dict[str, Callable[..., Pipeline]] = {
    "sftviz": SftvizPipeline,
    "trl": TRLPipeline,
    "trl-assistant-only": lambda **kw: TRLPipeline(assistant_only_loss=True, **kw),
    "hf-lm": LanguageModelingPipeline,
    "marker": MarkerPipeline,
    "given": GivenPipeline,
}


def pipeline_from(spec: object, **options: Any) -> Pipeline:
    """A :class:`Pipeline` from a name in :data:`PIPELINES` (with its options), a Pipeline, or a
    callable ``row -> {"input_ids", "labels"}``."""
    if isinstance(spec, Pipeline):
        if options:
            raise ValueError("options go to a pipeline given by name, not to a Pipeline object.")
        return spec
    if isinstance(spec, str):
        if spec not in PIPELINES:
            raise ValueError(f"unknown pipeline {spec!r}; use one of {', '.join(PIPELINES)}, or pass a callable.")
        try:
            return PIPELINES[spec](**options)
        except TypeError as err:
            raise TypeError(f"pipeline {spec!r} does not take these options: {err}") from None
    if callable(spec):
        return CallablePipeline(spec, **options)
    raise TypeError(f"pipeline must be a name ({', '.join(PIPELINES)}), a Pipeline or a callable; got {spec!r}.")

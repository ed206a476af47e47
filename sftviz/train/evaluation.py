"""Evaluation on held-out data during a run: log-probabilities per token and greedy exact match.

:class:`EvalSet` is built once per run. :meth:`EvalSet.score` measures the mean log Pr(y|x) per
completion token and log Pr(x) per prompt token over all eval examples, and each example's own mean
(no gradient);
:meth:`EvalSet.generate` decodes the first few prompts greedily, in one left-padded batch, and
compares each answer with the reference, including where it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..collate import collate_examples
from ..data import Example
from ..loss import target_masks

#: Extra tokens a greedy answer may run past the longest reference (so that running on is visible).
EXTRA_NEW_TOKENS = 8


@dataclass(frozen=True)
class Prompt:
    """One example to decode: the prompt's ids, the reference answer's ids, the ids that end an answer,
    and the text shown for it."""

    prompt_ids: list[int]
    reference_ids: list[int]
    stops: frozenset[int]
    shown: str


def _prompt_of(tok: Any, ex: Example, index: int) -> Prompt:
    """Split ``ex`` at its last completion span: the prompt before it, the reference answer in it."""
    trained = [i for i, m in enumerate(ex.completion_mask) if m]
    if not trained:
        raise ValueError(f"eval_data[{index}] has no completion token to compare an answer with.")
    end = trained[-1]
    start = end
    while start > 0 and ex.completion_mask[start - 1]:
        start -= 1
    prompt_ids, ref_ids = ex.input_ids[:start], ex.input_ids[start : end + 1]
    stops = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    special = set(getattr(tok, "all_special_ids", []) or [])
    if ref_ids and ref_ids[-1] in special:  # a chat turn ends with its own end-of-turn token
        stops.add(ref_ids[-1])
    src = ex.source
    if "prompt" in src:
        shown = src["prompt"]
    else:
        users = [m["content"] for m in src.get("messages", []) if m["role"] == "user"]
        shown = users[-1] if users else tok.decode(prompt_ids)
    return Prompt(prompt_ids, ref_ids, frozenset(stops), shown)


class Scores(NamedTuple):
    """What :meth:`EvalSet.score` measures (natural logs): per token over all eval examples, and per example."""

    marginal: float | None  # mean log Pr(x) per prompt token, all examples together
    conditional: float | None  # mean log Pr(y|x) per completion token, all examples together
    n_prompt: int
    n_completion: int
    marginal_per_example: list[float | None]  # each example's own mean log Pr(x) per prompt token
    conditional_per_example: list[float | None]  # each example's own mean log Pr(y|x) per completion token


def _per_row_means(nll: torch.Tensor, mask: torch.Tensor) -> list[float | None]:
    """Each row's mean log-probability (``-nll``) over its masked positions; None for a row with none."""
    sums, counts = (nll * mask).sum(1).tolist(), mask.sum(1).tolist()
    return [-s / c if c else None for s, c in zip(sums, counts)]


class EvalSet:
    """Held-out examples, padded once; scored and decoded by a run at its evaluation steps."""

    def __init__(self, tok: Any, examples: Sequence[Example], pad_id: int, n_generate: int, max_positions: int | None):
        self.examples = list(examples)
        self.tok = tok
        self.pad_id = pad_id
        batch = collate_examples(self.examples, pad_id, extras=True)
        prm, comp = target_masks(
            batch["input_ids"], batch["completion_mask"], batch["attention_mask"], batch["prompt_mask"]
        )
        self.ids = batch["input_ids"]
        self.lengths = batch["attention_mask"].sum(1)
        self.is_prompt = prm[:, 1:]
        self.is_comp = comp[:, 1:]
        self.prompts = [_prompt_of(tok, ex, i) for i, ex in enumerate(self.examples[:n_generate])]
        self.stop_ids = sorted(set().union(*[p.stops for p in self.prompts])) if self.prompts else []
        longest_ref = max((len(p.reference_ids) for p in self.prompts), default=0)
        longest_prompt = max((len(p.prompt_ids) for p in self.prompts), default=0)
        self.max_new = longest_ref + EXTRA_NEW_TOKENS
        if max_positions is not None:
            self.max_new = max(1, min(self.max_new, max_positions - longest_prompt))

    @torch.no_grad()
    def score(
        self, model: Any, device: torch.device, amp: Callable[[], AbstractContextManager], chunk: int = 16
    ) -> Scores:
        """Log Pr(x) per prompt token and log Pr(y|x) per completion token: over all eval examples
        together (a token-level mean) and per example (each example's own mean, in order; None for an
        example with no such token). The per-example values pair up runs for a paired test
        (:meth:`sftviz.train.experiment.Experiment.compare`)."""
        psum = csum = 0.0
        p_each: list[float | None] = []
        c_each: list[float | None] = []
        for s in range(0, self.ids.shape[0], chunk):
            n = int(self.lengths[s : s + chunk].max())
            ids = self.ids[s : s + chunk, :n].to(device)
            inputs = ids[:, :-1]  # right padded and causal: real tokens never see the padding after them
            with amp():
                logits = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits
            nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
            isp = self.is_prompt[s : s + chunk, : n - 1].to(device)
            isc = self.is_comp[s : s + chunk, : n - 1].to(device)
            psum += float((nll * isp).sum())
            csum += float((nll * isc).sum())
            p_each += _per_row_means(nll, isp)
            c_each += _per_row_means(nll, isc)
        n_p, n_c = int(self.is_prompt.sum()), int(self.is_comp.sum())
        return Scores(
            marginal=-psum / n_p if n_p else None,
            conditional=-csum / n_c if n_c else None,
            n_prompt=n_p,
            n_completion=n_c,
            marginal_per_example=p_each,
            conditional_per_example=c_each,
        )

    @torch.no_grad()
    def generate(self, model: Any, device: torch.device, amp: Callable[[], AbstractContextManager]) -> list[dict]:
        """Greedy answers to the first ``n_generate`` prompts, each compared with its reference."""
        if not self.prompts:
            return []
        from transformers import GenerationConfig

        width = max(len(p.prompt_ids) for p in self.prompts)
        ids = torch.full((len(self.prompts), width), self.pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, p in enumerate(self.prompts):  # left padding: every prompt ends at the last column
            ids[i, width - len(p.prompt_ids) :] = torch.tensor(p.prompt_ids, dtype=torch.long)
            att[i, width - len(p.prompt_ids) :] = 1
        cfg = GenerationConfig(
            max_new_tokens=self.max_new, do_sample=False, num_beams=1, eos_token_id=self.stop_ids or None,
            pad_token_id=self.pad_id,
        )  # fmt: skip
        with amp():
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=cfg)
        return [self._compare(p, gen) for p, gen in zip(self.prompts, out[:, width:].tolist())]

    def _compare(self, p: Prompt, gen: list[int]) -> dict:
        """One decoded answer against its reference: equal text, and stopping where the reference stops."""
        for j, t in enumerate(gen):
            if t in p.stops:
                gen = gen[: j + 1]
                break
        stopped = bool(gen) and gen[-1] in p.stops
        ref_stops = bool(p.reference_ids) and p.reference_ids[-1] in p.stops
        body = gen[:-1] if stopped else gen
        ref_body = p.reference_ids[:-1] if ref_stops else p.reference_ids
        text = self.tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        ref_text = self.tok.decode(ref_body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return {
            "prompt": p.shown,
            "generated": text,
            "reference": ref_text,
            "exact": text == ref_text and stopped == ref_stops,
            "stopped": stopped,
        }

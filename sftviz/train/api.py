"""Fine-tuning: the same model, data and seed under masked, unmasked and weighted losses.

:func:`finetune` is a small, fast training loop written for watching SFT happen: every step records
the objective it optimised *and* the prompt NLL and completion NLL measured honestly whatever the
masking (and whatever injected fault), per-layer gradient norms and the share of the gradient that comes
from prompt targets; every ``eval_every`` steps it measures log Pr(y|x) and log Pr(x) per token on
held-out data and greedy exact match. :func:`compare_masking` runs several maskings from the same start.

The parts: :mod:`~sftviz.train.config` (the settings), :mod:`~sftviz.train.table` (the data as tensors
and the batch order), :mod:`~sftviz.train.engine` (one optimiser step), :mod:`~sftviz.train.evaluation`
(held-out scores and greedy answers), :mod:`~sftviz.train.records` and :mod:`~sftviz.train.runs`
(what a run keeps, and saving it).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

import torch

from .._memory import reuse_large_buffers
from ..checks import check_model, check_tokenizer, max_positions
from ..faults import get_fault
from ..masking import check_masking
from ..modeling import resolve_device
from . import cache as run_cache
from .config import BETAS, EPS, FinetuneConfig
from .engine import Trainer
from .evaluation import EvalSet
from .interrupts import defer_interrupts
from .records import EvalRecord, Record, StepRecord
from .runs import Run
from .state import TrainingState, capture_state, restore_state
from .table import BatchOrder, TrainingTable, describe_data, prepare_examples

Callback = Callable[[Record, Run], Any]


class TrainingDivergedWarning(UserWarning):
    """The loss or the gradient became NaN or infinite; the run stopped (see ``run.error``)."""


class CallbackError(RuntimeError):
    """A callback raised. ``err.run`` is the run up to that point (its history is kept); from
    :func:`compare_masking`, ``err.runs`` also holds the runs that finished before it."""

    def __init__(self, message: str, *, run: Run, callback: Callable, runs: dict | None = None):
        super().__init__(message)
        self.run = run
        self.callback = callback
        self.runs = {} if runs is None else runs


def check_callbacks(callbacks: object) -> list[Callback]:
    """``callbacks`` (None, one function, or a list of functions) as a list."""
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError("callbacks must be a callable or a list of callables, each called as cb(record, run).")
    out = list(callbacks)
    for i, cb in enumerate(out):
        if not callable(cb):
            raise TypeError(
                f"callbacks[{i}] is a {type(cb).__name__}, not a function; each is called as cb(record, run)."
            )
    return out


def callback_name(cb: Callable) -> str:
    """A callback's name for messages and the run's configuration."""
    return str(getattr(cb, "__qualname__", None) or getattr(cb, "__name__", None) or type(cb).__name__)


def nan_message(k: int, loss: float, grad_norm: float, lr: float) -> str:
    """Why a run stopped at step ``k`` with a non-finite loss or gradient, and what to try."""
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    value = loss if what == "loss" else grad_norm
    return (
        f"The {what} became {value} at step {k}, so training stopped (this step was not applied; the model "
        f"keeps the weights of step {k - 1}). Likely cause: the learning rate {lr:g} is too high, try 10 times "
        "smaller or add warmup_steps; other causes: a batch with no trained token under a custom loss, or "
        "float16 overflow."
    )


# ==============================================================================================
# finetune
# ==============================================================================================


def finetune(
    model: Any,
    tok: Any,
    data: Iterable,
    masking: str | float | None = None,
    *,
    config: FinetuneConfig | None = None,
    eval_data: Iterable | None = None,
    callbacks: Callback | Iterable[Callback] | None = (),
    stop: Any = None,
    resume: Run | None = None,
    cache: str | os.PathLike | bool | None = None,
    **settings: Any,
) -> Run:
    """Fine-tune a causal LM on ``[prompt, completion]`` examples and record everything about it.

    Args:
        model, tok: from ``sv.load_model()`` (any Hugging Face causal LM works).
        data: a list of TRL rows (``{"prompt", "completion"}`` or ``{"messages"}``) or sftviz Examples
            (rebuilt for ``masking``, unless edited by hand: ``masking == "custom"`` keeps its labels).
        masking: "completion" (the default), "full", a prompt-loss weight in [0, 1], or "prompt".
        config: a :class:`~sftviz.train.config.FinetuneConfig`; keyword ``settings`` change some of it.
        eval_data: rows or Examples to evaluate on: before training, every ``eval_every`` steps, at the end.
        callbacks: functions called as ``cb(record, run)`` after every step and evaluation. If one
            raises, the run stops with a :class:`CallbackError` naming it (the run so far in ``err.run``).
        stop: None or an object with ``is_set()`` (e.g. ``threading.Event``), checked before every
            step; when set, the run ends cleanly (``status="stopped"``). Ctrl-C does the same, at the
            end of the step it arrives in, so the model always holds the last recorded step's weights.
        resume: a run to continue, as ``sv.finetune(run.model, tok, data, resume=run, steps=N)``: the
            result equals an uninterrupted run of ``N`` steps, history included (see :data:`RESUME_CHANGES`).
        cache: a run cache folder with sftviz's shipped records behind it (None: ``$SFTVIZ_RUN_CACHE``; "shipped":
            the records only; "auto": the folder if set, else the records; False: none). No model if cached.
        **settings: the fields of :class:`~sftviz.train.config.FinetuneConfig`, whose docstring says what
            each does (``steps``, ``batch_size``, ``lr``, ``seed``, ``device``, ``eval_every``, ``fault``,
            ``head``, ``precision``, ...). An unknown name is a ``TypeError``.

    Returns:
        A :class:`~sftviz.train.runs.Run`: ``run.history`` holds a :class:`~sftviz.train.records.StepRecord` per
        step, ``run.evals`` an :class:`~sftviz.train.records.EvalRecord` per evaluation. ``run.status``: "finished",
        "stopped", "nan" (see ``run.error`` and :class:`TrainingDivergedWarning`) or "error" (a callback raised).

    Example:
        >>> run = sv.finetune(model, tok, sv.load_dataset("support")[:32], steps=3, batch_size=8, progress=False)
        >>> [r["step"] for r in run.history], run.status
        ([1, 2, 3], 'finished')
    """
    t_setup = time.perf_counter()

    # 1. Check everything before doing anything.
    if resume is not None:
        config, masking, settings = _resumed_config(resume, model, config, masking, settings), None, {}
    cfg, cbs = _check_call(model, tok, config, masking, settings, callbacks, stop)
    dev, limit = resolve_device(cfg.device), max_positions(model)
    max_length = _max_length(cfg, limit)

    # 2. Tokenize once: the training rows under the masking, the eval rows under completion-only.
    examples = prepare_examples(tok, data, cfg.masking, max_length, "data")
    eval_exs = None if eval_data is None else prepare_examples(tok, eval_data, "completion", max_length, "eval_data")
    _check_data(model, cfg, examples, eval_exs, resume)
    slot, cached = run_cache.find(cache, model, tok, cfg, examples, eval_exs, dev, resume is None and not cbs)
    if cached is not None:  # the same run, finished before (a grader's cache): its record, no model
        return cached

    # 3. Set up: the model to train, the data as tensors, the step engine, the evaluation.
    work = copy.deepcopy(model) if cfg.copy_model else model
    work.to(dev)
    fault = get_fault(cfg.fault)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    table = TrainingTable(examples, pad_id, tok.eos_token_id, fault, dev)
    trainer = Trainer(work, table, cfg, fault, dev, row_length=max_length)
    evalset = None if eval_exs is None else EvalSet(tok, eval_exs, pad_id, cfg.eval_examples, limit)
    described = {"data": describe_data(examples), "eval_data": None if eval_exs is None else describe_data(eval_exs)}
    run = Run(config=_run_config(trainer, tok, pad_id, cbs, stop, described), model=work, device=dev)
    start = _continue(run, resume)
    run.timing["setup"] = time.perf_counter() - t_setup

    # 4. Train.
    _train(run, trainer, evalset, cbs, stop, start)
    run_cache.store(run, slot)
    return run


def _continue(run: Run, resume: Run | None) -> TrainingState | None:
    """The state a resumed run starts from (None for a new run); the resumed run's record starts with the
    steps and evaluations it continues."""
    start = None if resume is None else resume.state
    if start is not None:
        run.history = [r for r in resume.history if r.step <= start.step]
        run.evals = [e for e in resume.evals if e.step <= start.step]
    return start


def _max_length(cfg: FinetuneConfig, limit: int | None) -> int | None:
    """The longest sequence to train on: ``cfg.max_length``, checked against the model's context ``limit``."""
    if cfg.max_length is not None and limit is not None and cfg.max_length > limit:
        raise ValueError(f"max_length={cfg.max_length} is longer than the model's context ({limit} tokens).")
    return cfg.max_length if cfg.max_length is not None else limit


#: What a resumed run may change. Everything else (settings, optimiser state, random state, place in the
#: data) continues as the run left it, so resuming equals not stopping (on the same machine).
RESUME_CHANGES = ("steps", "progress", "copy_model", "device")


def _resumed_config(resume: Run, model: Any, config: Any, masking: object, settings: dict) -> FinetuneConfig:
    """The settings of a run that continues ``resume`` (see ``finetune(resume=...)``)."""
    if not isinstance(resume, Run):
        raise TypeError(f"resume must be a Run (from sv.finetune or sv.load_run); got {type(resume).__name__}.")
    if resume.state is None or resume.model is None:
        raise ValueError(
            "This run cannot be resumed: it keeps no training state (it diverged, or it was loaded from a file "
            "saved without weights). Save runs with run.save(path, weights=True) to resume them later."
        )
    if model is not resume.model:
        raise ValueError("resume continues the run's own model: call sv.finetune(run.model, tok, data, resume=run).")
    changed = sorted(set(settings) - set(RESUME_CHANGES)) + (["masking"] if masking is not None else [])
    if config is not None or changed:
        raise ValueError(
            f"resume continues the run with its own settings; only {', '.join(RESUME_CHANGES)} can change "
            f"(got {', '.join(changed) or 'config'})."
        )
    names = {f.name for f in fields(FinetuneConfig)}
    base = FinetuneConfig(**{k: v for k, v in resume.config.items() if k in names})
    cfg = base.replace(**settings)
    if cfg.steps <= resume.state.step:
        raise ValueError(f"The run has done {resume.state.step} steps; pass steps= more than that to continue it.")
    return cfg


def _check_data(model: Any, cfg: FinetuneConfig, examples: list, eval_exs: list | None, resume: Run | None) -> None:
    _check_vocabulary(model, examples + (eval_exs or []))
    _check_batch(cfg, len(examples))
    _check_lr(model, cfg)
    if resume is not None:
        _check_resumed_data(resume, examples, eval_exs)


def _check_resumed_data(resume: Run, examples: list, eval_exs: list | None) -> None:
    if describe_data(examples)["fingerprint"] != (resume.config.get("data") or {}).get("fingerprint"):
        raise ValueError("resume continues a run on its own data; these rows are not the ones it trained on.")
    before = resume.config.get("eval_data")
    if eval_exs is not None and before is not None and describe_data(eval_exs)["fingerprint"] != before["fingerprint"]:
        raise ValueError("resume continues a run's evaluations; this eval_data is not the one it evaluated on.")
    if eval_exs is None and before is not None:
        warnings.warn(
            "The run was evaluated on eval_data; pass the same eval_data= to continue its evaluations.",
            UserWarning,
            stacklevel=3,
        )


#: Above this many parameters, a learning rate above LARGE_MODEL_LR gets a warning: the default (1e-3)
#: suits the bundled 1.2 M-parameter model; on SmolLM2-135M it drove the gradient norm to 70 by step 3.
LARGE_MODEL_PARAMS, LARGE_MODEL_LR = 50_000_000, 1e-4


def _check_lr(model: Any, cfg: FinetuneConfig) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    if n_params >= LARGE_MODEL_PARAMS and cfg.lr > LARGE_MODEL_LR:
        warnings.warn(
            f"lr={cfg.lr:g} is the bundled model's rate; for a model of {n_params / 1e6:.0f} M parameters it is "
            "large enough to make the loss jump. Fine-tunes of models this size usually use 1e-5 to 5e-5: "
            "try lr=2e-5.",
            UserWarning,
            stacklevel=3,
        )


def _check_batch(cfg: FinetuneConfig, n: int) -> None:
    per_step = cfg.batch_size * cfg.grad_accum
    if per_step > n:
        warnings.warn(
            f"Each step draws {per_step} rows (batch_size x grad_accum) from only {n} examples, so some examples "
            "appear twice in one step. Lower batch_size, or give more data.",
            UserWarning,
            stacklevel=3,
        )


def _check_call(
    model: Any, tok: Any, config: FinetuneConfig | None, masking: object, settings: dict, callbacks: object, stop: Any
) -> tuple[FinetuneConfig, list[Callback]]:
    """The checked settings and callbacks of a :func:`finetune` call."""
    check_model(model)
    check_tokenizer(tok)
    cfg = _make_config(config, masking, settings)
    cbs = check_callbacks(callbacks)
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError("stop must be None or an object with an is_set() method, such as threading.Event().")
    return cfg, cbs


def _run_config(trainer: Trainer, tok: Any, pad_id: int, callbacks: list[Callback], stop: Any, data: dict) -> dict:
    """What a run records about how it was made: its settings and what they resolved to, JSON-safe."""
    return {
        **trainer.config.to_dict(),
        "callbacks": [callback_name(cb) for cb in callbacks],
        "stop": stop is not None,
        **data,
        "resolved_device": str(trainer.device),
        "head_used": trainer.head,
        "precision_used": trainer.precision,
        "optimizer": f"{trainer.optimizer_name} betas={list(BETAS)} eps={EPS}; linear warmup then constant lr",
        "model": _describe_model(trainer.model),
        "tokenizer": _describe_tokenizer(tok, pad_id),
        "versions": _versions(),
    }


def _make_config(config: FinetuneConfig | None, masking: object, settings: dict) -> FinetuneConfig:
    if config is None:
        return FinetuneConfig.from_kwargs(**({} if masking is None else {"masking": masking}), **settings)
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig (sftviz.train.FinetuneConfig); got {type(config).__name__}.")
    FinetuneConfig.from_kwargs(**settings)  # names checked with the same message
    return config.replace(**({} if masking is None else {"masking": masking}), **settings)


def _check_vocabulary(model: Any, examples: list) -> None:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    top = max(max(ex.input_ids) for ex in examples)
    if vocab is not None and top >= vocab:
        raise ValueError(
            f"The data has token id {top} but the model's vocabulary has {vocab} entries: the tokenizer "
            "does not belong to this model."
        )


def _emit(run: Run, callbacks: list[Callback], record: Record) -> None:
    """Call every callback with ``record``; one that raises ends the run with a :class:`CallbackError`."""
    for cb in callbacks:
        try:
            cb(record, run)
        except (KeyboardInterrupt, CallbackError):
            raise
        except Exception as err:
            msg = (
                f"The callback {callback_name(cb)!r} raised {type(err).__name__}: {err} (after the {record['kind']} "
                f"record of step {record['step']}). Training stopped; the run so far is in err.run."
            )
            run.status, run.error = "error", msg
            raise CallbackError(msg, run=run, callback=cb) from err


def _evaluate(run: Run, trainer: Trainer, evalset: EvalSet | None, k: int, callbacks: list[Callback]) -> None:
    """Evaluate the model after step ``k`` (in eval mode, then back), record it and tell the callbacks."""
    if evalset is None:
        return
    t0 = time.perf_counter()
    model, dev = trainer.model, trainer.device
    was = model.training
    model.eval()
    try:
        scores = evalset.score(model, dev, trainer.amp)
        samples = evalset.generate(model, dev, trainer.amp) if trainer.config.eval_examples else []
    finally:
        model.train(was)
    n = len(samples)
    ref_chars = sum(len(s["reference"]) for s in samples)
    rec = EvalRecord(
        step=k,
        cond_logprob_per_token=scores.conditional,
        marg_logprob_per_token=scores.marginal,
        n_prompt_tokens=scores.n_prompt,
        n_completion_tokens=scores.n_completion,
        exact_match=sum(s["exact"] for s in samples) / n if n else None,
        stop_rate=sum(s["stopped"] for s in samples) / n if n else None,
        length_ratio=sum(len(s["generated"]) for s in samples) / ref_chars if ref_chars else None,
        n_generated=n,
        samples=samples[:3],
        exact_per_example=[bool(s["exact"]) for s in samples] if n else None,
        cond_logprob_per_example=scores.conditional_per_example,
        marg_logprob_per_example=scores.marginal_per_example,
        seconds=time.perf_counter() - t0,
    )
    run.evals.append(rec)
    _emit(run, callbacks, rec)


def _train(
    run: Run,
    trainer: Trainer,
    evalset: EvalSet | None,
    callbacks: list[Callback],
    stop: Any,
    start: TrainingState | None,
) -> None:
    """The loop: evaluate at step 0, then step, record, call back, evaluate on schedule, until done.

    Ctrl-C (SIGINT) is deferred to the end of the step it arrives in, so the model always holds the
    weights of the last recorded step; ``run.state`` keeps what a resumed run needs (see ``resume``).
    """
    cfg = trainer.config
    order = BatchOrder(trainer.table.n, cfg.seed)
    per_step = cfg.batch_size * cfg.grad_accum
    bar = _progress_bar(cfg, 0 if start is None else start.step) if cfg.progress else None
    rng_devices = [trainer.device] if trainer.device.type == "cuda" else []
    model = trainer.model
    t_start = time.perf_counter()
    first = 1 if start is None else start.step + 1
    k = first - 1
    try:
        with torch.random.fork_rng(devices=rng_devices), reuse_large_buffers(trainer.device.type == "cpu"), \
                defer_interrupts() as interrupt:  # fmt: skip
            if start is None:
                torch.manual_seed(cfg.seed)  # dropout, in the forked RNG: the caller's random state is untouched
                _evaluate(run, trainer, evalset, 0, callbacks)
            else:
                restore_state(trainer, order, start)
            done = first - 1  # the last step whose update was applied
            model.train()
            try:
                for k in range(first, cfg.steps + 1):
                    if stop is not None and stop.is_set():
                        run.stopped, run.status = True, "stopped"
                        break
                    t0 = time.perf_counter()
                    rec, finite = trainer.step(k, order.take(per_step))
                    now = time.perf_counter()
                    rec.seconds, rec.elapsed, rec.epoch = now - t0, now - t_start, k * per_step / trainer.table.n
                    run.history.append(rec)
                    if not finite:
                        run.status, run.error = "nan", nan_message(k, rec.loss, rec.grad_norm, rec.lr)
                        warnings.warn(run.error, TrainingDivergedWarning, stacklevel=3)
                        _emit(run, callbacks, rec)
                        break
                    done = k
                    _emit(run, callbacks, rec)
                    _progress(bar, rec, cfg.steps)
                    if cfg.eval_every is not None and k % cfg.eval_every == 0 and k < cfg.steps:
                        _evaluate(run, trainer, evalset, k, callbacks)
                    if interrupt.pressed:
                        run.stopped, run.status, run.error = True, "stopped", _interrupted(k)
                        break
                else:
                    run.status = "finished"
                    _evaluate(run, trainer, evalset, cfg.steps, callbacks)
            finally:  # inside the forked RNG: its state is the run's own
                run.state = None if run.status == "nan" else capture_state(trainer, order, done)
    except KeyboardInterrupt:  # raised by a callback (after its step), or outside the main thread
        run.stopped, run.status = True, "stopped"
        run.error = _interrupted(run.state.step if run.state is not None else 0)
        trainer.opt.zero_grad(set_to_none=True)
    finally:
        model.eval()
        if bar is not None:
            bar.close()
    run.timing["train"] = time.perf_counter() - t_start


def _interrupted(k: int) -> str:
    return (
        f"Interrupted (Ctrl-C) after step {k}: the model holds the weights of step {k}, the last step in the "
        "history. Continue with sv.finetune(run.model, tok, data, resume=run)."
    )


def _progress(bar: Any, rec: StepRecord, steps: int) -> None:
    if bar is not None:
        bar.update(1)
        if rec.step % 10 == 0 or rec.step == steps:
            bar.set_postfix_str(f"loss {rec.loss:.3f}", refresh=False)


def _progress_bar(cfg: FinetuneConfig, done: int) -> Any:
    from tqdm.auto import tqdm

    label = f"finetune masking={cfg.masking}" + (f" fault={cfg.fault}" if cfg.fault else "")
    return tqdm(total=cfg.steps, initial=done, desc=label, leave=True)


def _describe_model(model: Any) -> dict:
    cfg = getattr(model, "config", None)
    try:
        cfg_dict = json.loads(cfg.to_json_string(use_diff=False)) if cfg is not None else None
    except Exception:  # noqa: BLE001 -- a config that cannot be serialised is simply not stored
        cfg_dict = None
    return {
        "class": type(model).__name__,
        "name_or_path": str(getattr(cfg, "_name_or_path", "") or getattr(model, "name_or_path", "")),
        "n_params": sum(p.numel() for p in model.parameters()),
        "config": cfg_dict,
    }


def _describe_tokenizer(tok: Any, pad_id: int) -> dict:
    return {
        "name_or_path": str(getattr(tok, "name_or_path", "")),
        "vocab_size": len(tok),
        "pad_id": pad_id,
        "eos_id": tok.eos_token_id,
        "bos_id": tok.bos_token_id,
    }


def _versions() -> dict:
    import transformers

    from .. import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "sftviz": __version__}


# ==============================================================================================
# compare_masking
# ==============================================================================================


def compare_masking(
    model: Any,
    tok: Any,
    data: Iterable,
    maskings: Iterable[str | float] = ("completion", "full", 0.1),
    steps: int = 200,
    seed: int = 0,
    keep_models: bool = True,
    **kw: Any,
) -> dict[str | float, Run]:
    """Fine-tune from the same initial weights, data order and seed under several maskings.

    Returns ``{masking: run}`` in the order given (a prompt-loss weight is a float key, e.g. ``0.1``).
    Every run trains its own copy of ``model``. Examples are tokenized once and shared. If a run is
    stopped (stop flag or KeyboardInterrupt) the remaining ones are not started: the dict then holds
    the runs so far. ``keep_models=False`` drops each run's trained model and training state as soon as
    it finishes (``run.model`` and ``run.state`` are then None): the records stay, and memory holds one
    copy of the model at a time (a 135M-parameter model with its AdamW state is about 1.6 GB per run).
    Without models, records are enough, so runs are then read from a run cache where one holds them
    (``cache="auto"`` unless ``cache`` is given). Other keyword arguments go to :func:`finetune`.
    """
    if not isinstance(keep_models, bool):
        raise TypeError(f"keep_models must be True or False, got {keep_models!r}.")
    if kw.get("copy_model", True) is not True:
        raise ValueError(
            "compare_masking always starts every run from a copy of the same model; do not pass copy_model=False."
        )
    kw.pop("copy_model", None)
    if not keep_models and kw.get("cache") is None:  # records are enough: the shipped ones too
        kw["cache"] = run_cache.AUTO
    if isinstance(maskings, (str, numbers.Real)) or not hasattr(maskings, "__iter__"):
        raise TypeError("maskings must be a list such as ('completion', 'full', 0.1).")
    norm = [check_masking(m) for m in maskings]
    if not norm:
        raise ValueError("maskings is empty: give at least one, e.g. ('completion', 'full').")
    if len(set(map(repr, norm))) != len(norm):
        raise ValueError(f"maskings has duplicates: {norm}.")
    check_model(model)
    max_length = kw.get("max_length") or max_positions(model)
    examples = prepare_examples(tok, data, "completion", max_length, "data")
    if kw.get("eval_data") is not None:
        kw["eval_data"] = prepare_examples(tok, kw["eval_data"], "completion", max_length, "eval_data")
    runs: dict[str | float, Run] = {}
    for m in norm:
        try:
            run = finetune(model, tok, examples, m, steps=steps, seed=seed, copy_model=True, **kw)
        except CallbackError as err:
            err.runs = dict(runs)
            raise
        if not keep_models:
            run.model, run.state = None, None
        runs[m] = run
        if run.stopped:
            break
    return runs

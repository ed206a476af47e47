"""The diagnosis exercise (notebook 5): mystery runs with hidden bugs, and the evidence that gives each away.

:func:`mystery_runs` trains a healthy run and one run per suspected bug, with the bugs' names hidden;
:func:`mystery_labels` shows the labels a run's pipeline built; :func:`curve_ends` reads where a run's
curves end; :func:`evidence` measures, from a run's record, what a careful engineer would look at;
:func:`clues` turns that into sentences, each compared with the healthy run.
:func:`sftviz.exercises.check_from_curves` and :func:`sftviz.exercises.check_diagnosis` grade the answers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import Example

if TYPE_CHECKING:
    from .train.runs import Run


def _check_suspects(suspects):
    from .faults import FAULTS

    if isinstance(suspects, str) or not isinstance(suspects, (list, tuple)):
        raise TypeError("suspects must be a list of fault names, e.g. ['eos_masked', 'prompt_trained'].")
    unknown = [s for s in suspects if s not in FAULTS]
    if unknown:
        raise ValueError(f"Unknown fault(s) {unknown}; choose from: {', '.join(FAULTS)}.")
    if len(set(suspects)) != len(suspects) or not 2 <= len(suspects) <= 6:
        raise ValueError("Give between 2 and 6 different suspects.")


def mystery_assignment(suspects: list[str], key: int | str) -> dict[str, str]:
    """Which suspect goes into which mystery run: ``{"A": fault, "B": fault, ...}``, decided by ``key``.

    This is the instructor's answer key. ``key`` (an int or a string, e.g. the term: ``"2026-fall"``) is
    a parameter of the diagnosis notebook, so each term can get another assignment without editing
    code; the student version calls only :func:`mystery_runs` and never prints this.
    """
    import random

    _check_suspects(suspects)
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"key must be an int or a string (e.g. the term, '2026-fall'), got {type(key).__name__}.")
    order = list(suspects)
    random.Random(f"sftviz-mystery:{key}").shuffle(order)
    return dict(zip("ABCDEF", order))


def mystery_runs(
    model: Any,
    tok: Any,
    data: list,
    suspects: list[str],
    *,
    steps: int = 150,
    seed: int = 0,
    key: int | str | None = None,
    case: str | os.PathLike | None = None,
    progress: bool = True,
    **finetune_kwargs: Any,
) -> tuple[Run, dict[str, Run]]:
    """Fine-tune one healthy run and one run per suspected bug, with the bugs' names hidden.

    Args:
        suspects: fault names from :data:`sftviz.faults.FAULTS` (2 to 6 of them, all different).
        seed: the training seed of every run.
        key: decides which bug is in which run (see :func:`mystery_assignment`); default: ``seed``.
        case: a case folder written by :func:`write_case` (the instructor's graded version). When that
            folder exists, its runs are loaded instead of trained, and nothing in this process knows which
            bug is where: the answers are graded with the instructor's key file. When it does not exist
            (or ``case`` is None) the runs are trained here, for self-study: the self-checks then know
            the answers at once, and so could a curious student.
        progress: one progress bar over the runs, with the time left (it names no bug).
        **finetune_kwargs: passed to :func:`sftviz.finetune` (``eval_data``, ``lr``, ...).

    Returns:
        ``(healthy, {"A": run, "B": run, ...})``. Each mystery run's record says ``fault: "hidden"``.
    """
    if case is not None and (Path(case) / CASE_FILE).is_file():
        healthy, runs = load_case(case)
        if sorted(suspects) != sorted(runs_suspects(case)):
            raise ValueError(
                f"The case {str(case)!r} was built with the suspects {runs_suspects(case)}, not {list(suspects)}: "
                "set SUSPECTS to those, or ask your instructor for the case of this notebook."
            )
        return healthy, runs
    from .train import finetune
    from .train.experiment import runs_progress

    assignment = mystery_assignment(suspects, seed if key is None else key)
    finetune_kwargs["progress"] = False  # one bar over the runs instead (a run's own bar would name its bug)
    if finetune_kwargs.get("cache") is None:  # records are enough: the shipped ones too
        finetune_kwargs["cache"] = "auto"
    bar = runs_progress(1 + len(assignment), "mystery runs") if progress else None
    healthy = finetune(model, tok, data, "completion", steps=steps, seed=seed, **finetune_kwargs)
    healthy.name = "healthy"
    if bar is not None:
        bar.update(1)
    runs = {}
    for letter, fault in assignment.items():
        run = finetune(model, tok, data, "completion", steps=steps, seed=seed, fault=fault, **finetune_kwargs)
        run.hidden_fault = fault
        run.config["fault"] = "hidden"
        run.name = f"run {letter}"
        runs[letter] = run
        if bar is not None:
            bar.update(1)
    if bar is not None:
        read = sum(run.cached for run in [healthy, *runs.values()])
        if read:
            bar.set_postfix_str(f"{read} read from the run cache")
        bar.close()
    return healthy, runs


# ----------------------------------------------------------------------------------------------
# A graded case: the runs built once by the instructor, the answer key kept by the grader
# ----------------------------------------------------------------------------------------------

#: The file in a case folder that lists its runs and holds the probe example's labels.
CASE_FILE = "case.json"
CASE_FORMAT = "sftviz-mystery-case"


def _secret_seed(key: int | str) -> int:
    """The training seed of a graded case, derived from its secret key: without the key a student cannot
    retrain the suspects on the same batches and match the curves number for number."""
    digest = hashlib.sha256(f"sftviz-mystery-seed:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31)


def write_case(
    folder: str | os.PathLike,
    key_file: str | os.PathLike,
    model: Any,
    tok: Any,
    data: list,
    suspects: list[str],
    probe: dict,
    *,
    key: int | str,
    steps: int = 150,
    progress: bool = True,
    check_hallmarks: bool = True,
    **finetune_kwargs: Any,
) -> dict[str, str]:
    """Build a graded diagnosis case: train the runs once, write their records to ``folder`` without the
    bugs' names, and the answer key to ``key_file`` (keep it out of what students get).

    The runs' letters come from ``key`` and their training seed is derived from it, so a student can
    neither read the assignment nor retrain the suspects on the same batches to match the curves.
    Timings are left out of the records (they could tell the runs apart), and each run's labels for the
    ``probe`` row are stored, so that :func:`mystery_labels` and :func:`evidence` work on the loaded runs.
    Each run's hallmark is checked (:func:`confirm_hallmarks`) before anything is written, unless
    ``check_hallmarks=False`` (for tests on models too small to show them).

    Returns the answer key, ``{"A": fault, ...}``.
    """
    from .train.runs import TIMING_KEYS

    folder, key_file = Path(folder), Path(key_file)
    if key_file.resolve().is_relative_to(folder.resolve()):
        raise ValueError("key_file must be outside the case folder, which students receive.")
    healthy, runs = mystery_runs(
        model, tok, data, suspects, steps=steps, seed=_secret_seed(key), key=key, progress=progress, **finetune_kwargs
    )
    if check_hallmarks:
        confirm_hallmarks(healthy, runs, tok, probe)
    labels = {name: mystery_labels(tok, probe, run) for name, run in {"healthy": healthy, **runs}.items()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in {"healthy": healthy, **runs}.items():
        for record in run.history:
            for k in TIMING_KEYS:
                if k in record:
                    setattr(record, k, None)
        run.timing = {}
        run.config["seed"] = "hidden"
        run.save(folder / f"{name}.json", overwrite=True)
    case_id = hashlib.sha256(
        b"".join((folder / f"{name}.json").read_bytes() for name in ["healthy", *runs])
    ).hexdigest()
    meta = {
        "format": CASE_FORMAT,
        "version": 1,
        "case_id": case_id,
        "suspects": sorted(suspects),
        "letters": list(runs),
        "steps": steps,
        "probe": probe,
        "labels": {name: ex.labels for name, ex in labels.items()},
        "weights": {name: ex.weights for name, ex in labels.items()},
    }
    (folder / CASE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    answer = {letter: run.hidden_fault for letter, run in runs.items()}
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(
        json.dumps({"case_id": case_id, "key": str(key), "answers": answer}, indent=1), encoding="utf-8"
    )
    return answer


def _read_case(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CASE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable diagnosis case ({err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != CASE_FORMAT:
        raise ValueError(f"{path} is not an sftviz diagnosis case (no 'format': '{CASE_FORMAT}').")
    letters = meta.get("letters")
    if not isinstance(letters, list) or not all(isinstance(x, str) and x in "ABCDEF" and len(x) == 1 for x in letters):
        raise ValueError(f"{path} has no valid list of run letters.")
    return meta


def runs_suspects(folder: str | os.PathLike) -> list[str]:
    """The suspects a case folder was built with (in alphabetical order: their order says nothing)."""
    return list(_read_case(folder)["suspects"])


def load_case(folder: str | os.PathLike) -> tuple[Run, dict[str, Run]]:
    """Load a case written by :func:`write_case`: ``(healthy, {"A": run, ...})``, records only."""
    from .train.runfile import load_run

    meta = _read_case(folder)
    out = {}
    for name in ["healthy", *meta["letters"]]:
        run = load_run(Path(folder) / f"{name}.json")
        run.name = name if name == "healthy" else f"run {name}"
        run.case = {
            "id": meta["case_id"],
            "letter": name,
            "suspects": list(meta["suspects"]),
            "probe": meta["probe"],
            "labels": meta["labels"][name],
            "weights": meta["weights"][name],
        }
        out[name] = run
    healthy = out.pop("healthy")
    return healthy, out


def true_fault(run: Run) -> str | None:
    """The bug in a mystery run, where this process may know it, else None.

    A run trained here for self-study carries it (``hidden_fault``); a plain run with ``fault=...`` says it in
    its config. A run loaded from a graded case (:func:`load_case`) carries nothing: the answers exist only
    in the instructor's key file and in the grader's hidden tests.
    """
    if getattr(run, "hidden_fault", None):
        return run.hidden_fault
    fault = (run.config or {}).get("fault")
    return fault if fault and fault != "hidden" else None


def answer_key(mysteries: dict[str, Run]) -> dict[str, str] | None:
    """``{"A": fault, ...}`` where this process may know it (self-study runs: see :func:`true_fault`), else
    None (a graded case)."""
    if not isinstance(mysteries, dict) or not mysteries:
        raise TypeError("answer_key needs the dict of mystery runs from mystery_runs (e.g. mysteries).")
    truth = {letter: true_fault(run) for letter, run in mysteries.items()}
    return None if None in truth.values() else truth


def mystery_labels(tok: Any, row: dict, run: Run) -> Example:
    """The example built from ``row`` with the labels that ``run``'s (possibly buggy) pipeline trained on."""
    from dataclasses import replace

    from .collate import collate_examples
    from .data import build_example
    from .faults import apply_label_fault

    ex = build_example(tok, **row, masking=run.config.get("masking", "completion"), warn=False)
    case = getattr(run, "case", None)
    if case is not None:  # a graded case's run: the labels its pipeline built for the probe row were recorded
        if row != case["probe"]:
            raise ValueError("This case recorded its pipelines' labels for one training row only: pass that row.")
        return replace(
            ex, labels=list(case["labels"]), weights=list(case["weights"]), masking="custom", notes=list(ex.notes)
        )
    fault = true_fault(run)
    batch = collate_examples([ex], tok.pad_token_id, extras=True)
    batch = apply_label_fault(fault, batch, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    labels = batch["labels"][0].tolist()
    weights = batch["loss_weights"][0].tolist()
    return replace(ex, labels=labels, weights=weights, masking="custom" if fault else ex.masking, notes=list(ex.notes))


def _tail_mean(values: list[float], n: int = 10) -> float:
    tail = [v for v in values if v is not None][-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def curve_ends(run: Run) -> dict[str, float]:
    """What a run's curves show, from its training history alone (no labels, no answers).

    ``prompt_nll`` and ``completion_nll``: their means over the last 10 steps (measured with the true
    next tokens; ``tail_steps`` says over how many, fewer for a shorter run); ``objective_gap``: the mean
    over all steps of ``|objective - completion NLL| / completion NLL``, which is 0 for a healthy
    completion-only run (its objective *is* the completion NLL of the batch); ``objective_ratio``: the
    mean of ``objective / completion NLL`` (1 for a healthy completion-only run).
    """
    if not getattr(run, "history", None):
        raise ValueError("curve_ends needs a run with a training history (from mystery_runs or sv.finetune).")
    gaps = [
        abs(r.loss - r.completion_nll) / r.completion_nll
        for r in run.history
        if r.loss is not None and r.completion_nll
    ]
    ratios = [r.loss / r.completion_nll for r in run.history if r.loss is not None and r.completion_nll]
    return {
        "prompt_nll": _tail_mean([r.prompt_nll for r in run.history]),
        "completion_nll": _tail_mean([r.completion_nll for r in run.history]),
        "objective_gap": sum(gaps) / len(gaps) if gaps else float("nan"),
        "objective_ratio": sum(ratios) / len(ratios) if ratios else float("nan"),
        "tail_steps": min(10, len(run.history)),
    }


def evidence(run: Run, tok: Any, row: dict) -> dict[str, Any]:
    """What a run's record shows, measured the same way for every run (healthy or not).

    Returns a dict: ``objective_gap`` (the mean over steps of ``|objective - completion NLL| /
    completion NLL``: 0 for a healthy completion-only run, whose objective *is* the completion NLL of the
    batch), ``completion_nll_end`` and ``prompt_nll_end`` (means over the last 10 steps, measured with the
    true next tokens), ``exact_match``, ``stop_rate`` and ``length_ratio`` (the answers' length over the
    references') of the last evaluation, and ``label_changes``:
    for the example built from ``row``, how many positions of each segment have labels other than the
    correct completion-only labels, and ``shifted``: whether the labels are the correct ones moved one
    position.
    """
    if not getattr(run, "history", None):
        raise ValueError("evidence needs a run with a training history (from mystery_runs or sv.finetune).")
    ends = curve_ends(run)
    last = run.evals[-1] if run.evals else {}
    built = mystery_labels(tok, row, run)
    right = built.with_masking("completion").labels
    changes: dict[str, int] = {}
    for seg, a, b in zip(built.segments, built.labels, right):
        if a != b:
            changes[seg] = changes.get(seg, 0) + 1
    examples = [(h.n_rows, (run.config or {}).get("batch_size", 0) * (run.config or {}).get("grad_accum", 1))
                for h in run.history]  # fmt: skip
    return {
        "objective_gap": ends["objective_gap"],
        "objective_ratio": ends["objective_ratio"],
        "grad_accum": (run.config or {}).get("grad_accum", 1),
        "packed": any(0 < rows < n for rows, n in examples),
        "rows_per_step": _tail_mean([float(h.n_rows) if h.n_rows else None for h in run.history], len(run.history)),
        "completion_nll_end": ends["completion_nll"],
        "prompt_nll_end": ends["prompt_nll"],
        "tail_steps": ends["tail_steps"],
        "exact_match": last.get("exact_match"),
        "stop_rate": last.get("stop_rate"),
        "length_ratio": last.get("length_ratio"),
        "label_changes": changes,
        "shifted": bool(changes) and built.labels[:-1] == right[1:],
    }


def clues(run: Run, healthy: Run, tok: Any, row: dict) -> list[str]:
    """Sentences, generated from the two runs' records, that compare ``run`` with the healthy run."""
    e, h = evidence(run, tok, row), evidence(healthy, tok, row)
    out = []
    if e["label_changes"]:
        where = ", ".join(f"{n} {seg}" for seg, n in e["label_changes"].items())
        shifted = " (the correct labels moved one position)" if e["shifted"] else ""
        out.append(f"labels: {where} position(s) differ from the correct completion-only labels{shifted}")
    else:
        out.append("labels: identical to the correct completion-only labels")
    times = f", {e['objective_ratio']:.2f} times it" if abs(e["objective_ratio"] - 1) > 0.05 else ""
    out.append(
        f"objective vs the completion NLL measured on the same batches: {e['objective_gap']:.1%} apart on "
        f"average{times} (healthy: {h['objective_gap']:.1%})"
    )
    if e["packed"] or h["packed"]:
        out.append(
            f"batches: {e['rows_per_step']:.1f} rows per step ({'packed' if e['packed'] else 'one per example'}); "
            f"healthy: {h['rows_per_step']:.1f} ({'packed' if h['packed'] else 'one per example'})"
        )
    out.append(
        f"completion NLL over the last {e['tail_steps']} steps: {e['completion_nll_end']:.2f} nats (healthy: "
        f"{h['completion_nll_end']:.2f}); prompt NLL: {e['prompt_nll_end']:.2f} (healthy: {h['prompt_nll_end']:.2f})"
    )
    if e["exact_match"] is not None and h["exact_match"] is not None:
        line = (
            f"answers: {e['exact_match']:.0%} exact, {e['stop_rate']:.0%} end with an EOS (healthy: "
            f"{h['exact_match']:.0%} and {h['stop_rate']:.0%})"
        )
        if e.get("length_ratio") is not None and h.get("length_ratio") is not None:
            line += (
                f"; {e['length_ratio']:.1f} times as long as the reference answers (healthy: "
                f"{h['length_ratio']:.1f} times)"
            )
        out.append(line)
    return out


#: What each bug is known for, as a test on its run's :func:`evidence` ``e`` against the healthy run's ``ok``.
HALLMARKS = {
    "eos_masked": (
        "the EOS label is -100, and the completion NLL (which includes the EOS) ends 5 times the healthy run's",
        lambda e, ok: e["label_changes"] == {"eos": 1} and e["completion_nll_end"] > 5 * ok["completion_nll_end"],
    ),
    "prompt_trained": (
        "prompt labels are set, the prompt NLL ends below a fifth of the healthy run's and the completion NLL "
        "above 10 times it",
        lambda e, ok: (
            "prompt" in e["label_changes"]
            and e["prompt_nll_end"] < ok["prompt_nll_end"] / 5
            and e["completion_nll_end"] > 10 * ok["completion_nll_end"]
        ),
    ),
    "shifted_labels": (
        "the labels are the right ones moved one position, and the completion NLL ends above 10 times the healthy run's",
        lambda e, ok: e["shifted"] and e["completion_nll_end"] > 10 * ok["completion_nll_end"],
    ),
    "accum_mean_of_means": (
        "the labels are right, yet the objective is not the completion NLL of the batch",
        lambda e, ok: not e["label_changes"] and e["objective_gap"] > 1e-4,
    ),
    "naive_packing": (
        "the labels are right and the objective is the completion NLL of the batch, but the batches are packed "
        "rows and the completion NLL measured on them ends above twice the healthy run's",
        lambda e, ok: (
            not e["label_changes"]
            and e["packed"]
            and e["objective_gap"] < 1e-4
            and e["completion_nll_end"] > 2 * ok["completion_nll_end"]
        ),
    ),
    "packed_row_mean": (
        "the labels are right, the batches are packed rows, and the objective is not the completion NLL of the batch",
        lambda e, ok: not e["label_changes"] and e["packed"] and e["objective_gap"] > 1e-4,
    ),
    "loss_scaled_by_accum": (
        "the labels are right and the rows are not packed, and the objective is the accumulation steps times the "
        "completion NLL at every step",
        lambda e, ok: (
            not e["label_changes"]
            and not e["packed"]
            and e["grad_accum"] > 1
            and abs(e["objective_ratio"] - e["grad_accum"]) < 1e-3 * e["grad_accum"]
        ),
    ),
}


def confirm_hallmarks(
    healthy: Run, mysteries: dict[str, Run], tok: Any, row: dict, *, strict: bool = True
) -> list[str]:
    """Check that each mystery run shows what its (hidden) bug is known for (:data:`HALLMARKS`).

    Returns one line per run that says so, without naming the bug. A run whose hallmark did not show raises
    ``AssertionError`` naming the run and the hallmark (``strict=True``, what :func:`write_case` uses), or,
    with ``strict=False`` (what notebook 5 uses), gets a line that says so and what to change: short runs
    on a large model may not have trained far enough to show them; that line does not say what the
    hallmark would be, which would name the bug. The healthy run must have its objective equal to its
    completion NLL and correct labels. Bugs without a hallmark here are skipped (and say so). For a graded
    case in a student's kernel, where nothing knows the bugs, the lines say that :func:`write_case`
    checked them when the instructor built the case.
    """
    ok = evidence(healthy, tok, row)
    if not (ok["objective_gap"] < 1e-6 and not ok["label_changes"]):
        raise AssertionError("the healthy run should have correct labels and optimise exactly its completion NLL.")
    truth = answer_key(mysteries)
    if truth is None:
        return [f"run {letter}: its hallmark was checked when the case was built" for letter in mysteries]
    lines = []
    for letter, run in mysteries.items():
        fault = truth[letter]
        if fault not in HALLMARKS:
            lines.append(f"run {letter}: no hallmark is defined for its bug; not checked")
            continue
        what, holds = HALLMARKS[fault]
        if holds(evidence(run, tok, row), ok):
            lines.append(f"run {letter}: the hallmark of its bug shows")
        elif strict:
            raise AssertionError(f"run {letter} does not show the hallmark of its bug: {what}.")
        else:
            lines.append(
                f"run {letter}: the hallmark of its bug does NOT show on these runs, so its curves may not tell "
                "its bug apart: train longer (raise STEPS) before you diagnose it"
            )
    return lines

"""``python -m sftviz xray DATA --model M --pipeline P --policy Q``: the X-ray from a terminal or a CI job.

Prints the summary, the lints with their first example and the first rows; writes the HTML report
with ``--html``; exits 1 when a finding reaches ``--fail-on`` (default: error), so a data pipeline's
own CI can fail on a broken mask.
"""

from __future__ import annotations

import argparse
import os
import sys

from .lints import LINTS
from .pipelines import PIPELINES
from .policy import PRESETS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sftviz xray", description="See what a pipeline trains in every row, "
                                "beside what you mean to train, and catch the known mask bugs.")  # fmt: skip
    p.add_argument("data", help="a JSONL file (prompt/completion, messages, conversations, text or tokenized rows)")
    p.add_argument(
        "--model",
        default="sftviz-tiny",
        help="whose tokenizer and chat template: sftviz-tiny (default), smollm2-135m-instruct, or a folder",
    )
    p.add_argument("--pipeline", default="sftviz", choices=sorted(PIPELINES), help="what builds the labels")
    p.add_argument(
        "--policy",
        default="assistant",
        help=f"what you mean to train: {', '.join(PRESETS)}, or KEY=VALUE;... (roles_to_train, train_on_eos, turns, prompt_loss_weight)",
    )
    p.add_argument("--max-length", type=int, default=None, help="the pipeline's max_length (truncation)")
    p.add_argument(
        "--response-part", default=None, help="marker pipeline: the response marker (default: from the template)"
    )
    p.add_argument("--instruction-part", default=None, help="marker pipeline: the instruction marker")
    p.add_argument("--rows", type=int, default=3, help="rows to print (default 3)")
    p.add_argument("--max-rows", type=int, default=None, help="look at the first rows of the data only")
    p.add_argument("--html", default=None, help="write the HTML report to this file")
    p.add_argument(
        "--fail-on",
        default="error",
        choices=("info", "warning", "error", "never"),
        help="exit 1 when a finding reaches this level (default: error)",
    )
    p.add_argument("--colour", action="store_true", help="colour the token strips (ANSI)")
    return p  # fmt: skip


def _options(args: argparse.Namespace) -> dict:
    opts: dict = {}
    if args.max_length is not None:
        if args.pipeline not in ("sftviz", "trl", "trl-assistant-only"):
            raise ValueError(f"--max-length applies to the sftviz and trl pipelines, not {args.pipeline!r}.")
        opts["max_length"] = args.max_length
    if args.response_part or args.instruction_part:
        if args.pipeline != "marker":
            raise ValueError("--response-part and --instruction-part are options of --pipeline marker.")
        opts.update(response_part=args.response_part, instruction_part=args.instruction_part)
    return opts


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the X-ray forks workers for many rows
    from ..modeling import load_tokenizer
    from .core import xray

    try:
        tok = load_tokenizer(args.model)
        report = xray(args.data, tok, args.pipeline, args.policy, max_rows=args.max_rows, **_options(args))
    except (ValueError, TypeError, ImportError) as err:
        print(f"sftviz xray: {err}", file=sys.stderr)
        return 2
    print(report.text(rows=args.rows, colour=args.colour))
    if args.html:
        report.save_html(args.html, rows=max(args.rows, 20))
        print(f"HTML report: {args.html}")
    code = report.exit_code(args.fail_on)
    if code:
        print(f"sftviz xray: findings at level {report.worst()} (--fail-on {args.fail_on}): exit 1", file=sys.stderr)
    return code


LINT_NAMES = tuple(LINTS)

if __name__ == "__main__":
    sys.exit(main())

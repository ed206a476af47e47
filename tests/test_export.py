"""sv.export_figures: the key figures of a run, an experiment, an example at slide size, light and dark.

The figures are checked as files: they exist under stable names, a PNG is the size asked for and not
blank (dark on average in the dark theme, light in the light one), an SVG is XML that keeps its text.
The HTML views need Chromium (``browser`` marker): skipped without it, except under CI.
"""

import copy
import os
import re
import struct
import xml.etree.ElementTree as ET

import matplotlib
import matplotlib.colors
import matplotlib.image
import pytest

import sftviz as sv
from sftviz.modeling import ensure_pad_token
from sftviz.train.experiment import Experiment
from sftviz.train.records import EvalRecord, StepRecord
from sftviz.train.runs import Run
from sftviz.views import export

ROWS = [
    {"prompt": f"Question: How much is the {item}?\nAnswer:", "completion": f" {price} dollars."}
    for item, price in [("lamp", 12), ("fan", 49), ("kettle", 30), ("fox", 5)] * 3
]
SHORT = {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."}


@pytest.fixture(scope="module")
def run(tiny_model, gpt2_tok):
    tok = copy.deepcopy(gpt2_tok)  # the session's tokenizer has no pad token; training needs one
    ensure_pad_token(tok)
    return sv.finetune(
        tiny_model, tok, ROWS, "completion", steps=3, batch_size=4, lr=1e-2, seed=0, device="cpu", progress=False
    )


@pytest.fixture(scope="module")
def example(gpt2_tok):
    return sv.build_example(gpt2_tok, **SHORT)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_png(path, size, theme):
    """The PNG is ``size`` pixels (or taller, for a long HTML view), not blank, on the theme's background
    (its corners), and dark or light on average."""
    w, h = png_size(path)
    assert w == size[0] and h >= size[1], f"{path.name} is {w}x{h}, expected {size[0]}x{size[1]}"
    rgb = matplotlib.image.imread(path)[..., :3]
    grey = rgb.mean(axis=2)
    assert grey.std() > 0.03, f"{path.name} looks blank (pixel std {grey.std():.3f})"
    background = matplotlib.colors.to_rgb(export.THEMES[theme].background)
    for corner in (rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]):
        assert abs(corner - background).max() < 0.02, f"{path.name}: a corner is {corner}, not {theme} background"
    if theme == "dark":
        assert grey.mean() < 0.5, f"{path.name} is not dark (mean {grey.mean():.2f})"
    else:
        assert grey.mean() > 0.7, f"{path.name} is not light (mean {grey.mean():.2f})"


def svg_text(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return " ".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


def test_a_run_in_both_themes_at_slide_size(run, tmp_path):
    before = dict(matplotlib.rcParams)
    paths = sv.export_figures(run, tmp_path / "new" / "slides", formats="png", theme=("light", "dark"))
    assert [p.name for p in paths] == ["curves-light.png", "curves-dark.png"]
    assert all(p.parent == tmp_path / "new" / "slides" and p.is_file() for p in paths)
    check_png(paths[0], (1920, 1080), "light")
    check_png(paths[1], (1920, 1080), "dark")
    assert dict(matplotlib.rcParams) == before, "the theme leaked into the caller's matplotlib style"


def test_runs_overlaid_as_svg_and_pdf(run, tmp_path):
    paths = sv.export_figures([run, run], tmp_path, formats=("svg", ".PDF"), theme="dark")
    assert [p.name for p in paths] == ["curves-dark.svg", "curves-dark.pdf"]
    text = svg_text(paths[0])
    assert "objective" in text and "gradient norm" in text and text.count("completion") >= 2  # two legend entries
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def _synthetic_run(masking, em):
    return Run(
        config={"masking": masking},
        history=[StepRecord(step=s, loss=3.0 - s, prompt_nll=4.0, completion_nll=3.0 - s) for s in (1, 2, 3)],
        evals=[
            EvalRecord(step=0, exact_match=0.0, cond_logprob_per_token=-5.0),
            EvalRecord(step=3, exact_match=em, cond_logprob_per_token=-2.0 - em),
        ],
    )


def _experiment(dataset, seeds=(0, 1)):
    exp = Experiment(maskings=["completion", "full"], seeds=list(seeds), dataset=dataset)
    for i, m in enumerate(exp.maskings):
        for s in seeds:
            exp.runs[(m, s)] = _synthetic_run(m, 0.2 * (i + 1) + 0.05 * s)
    return exp


def test_experiments_summary_and_curves_of_seed_0(tmp_path):
    paths = sv.export_figures(_experiment(""), tmp_path, formats="svg")  # no dataset name
    assert [p.name for p in paths] == ["experiment-light.svg", "experiment-curves-seed0-light.svg"]
    assert "exact match" in svg_text(paths[0]) and "objective" in svg_text(paths[1])

    names = [p.name for p in sv.export_figures([_experiment("support"), _experiment("")], tmp_path, formats="svg")]
    assert names == [
        "experiments-light.svg",
        "experiment-support-curves-seed0-light.svg",
        "experiment-2-curves-seed0-light.svg",
    ]
    stopped = _experiment("explain")  # stopped before seed 0's runs: the curves are seed 1's
    del stopped.runs[("completion", 0)], stopped.runs[("full", 0)]
    names = [p.name for p in sv.export_figures({"Explain (long answers)": stopped}, tmp_path, formats="svg")]
    assert names == [
        "experiment-explain-long-answers-light.svg",
        "experiment-explain-long-answers-curves-seed1-light.svg",
    ]


def test_example_and_score_figures(tiny_model, gpt2_tok, example, tmp_path):
    """Vector formats only: the HTML views (PNG only) are the browser test's."""
    names = [p.name for p in sv.export_figures(example, tmp_path, formats="svg", theme="dark")]
    assert names == ["example-masks-dark.svg", "example-shift-dark.svg"]
    assert "trained target" in svg_text(tmp_path / "example-masks-dark.svg")
    assert "t + 1" in svg_text(tmp_path / "example-shift-dark.svg")
    shift = (tmp_path / "example-shift-dark.svg").read_text()
    assert re.search(r"fill: #dedede\b[^>]*>t = 0<", shift), "captions outside the boxes must be light on dark"

    long = sv.build_example(gpt2_tok, prompt=SHORT["prompt"] * 4, completion=SHORT["completion"])
    assert len(long) > export.SHIFT_MAX_TOKENS
    assert [p.name for p in sv.export_figures(long, tmp_path / "long", formats="svg")] == ["example-masks-light.svg"]

    rep = sv.score(tiny_model, gpt2_tok, example=example)
    assert [p.name for p in sv.export_figures(rep, tmp_path, formats="svg")] == ["logprobs-light.svg"]
    assert "log Pr(x)" in svg_text(tmp_path / "logprobs-light.svg")


def test_without_a_browser_the_html_views_are_skipped_with_a_warning(
    tiny_model, gpt2_tok, example, tmp_path, monkeypatch
):
    monkeypatch.setattr(export, "chromium_path", lambda: None)
    assert "Chromium was not found" in export.browser_missing()
    grads = sv.token_gradients(tiny_model, gpt2_tok, example)
    with pytest.warns(UserWarning, match=r"gradients-view-light\.png.*pip install playwright"):
        paths = sv.export_figures(grads, tmp_path, formats="png", size=(1280, 720))
    assert [p.name for p in paths] == ["gradients-light.png"]
    check_png(paths[0], (1280, 720), "light")


def test_chromium_path_takes_the_environment_first(tmp_path, monkeypatch):
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SFTVIZ_CHROMIUM", str(fake))
    assert export.chromium_path() == str(fake)
    fake.chmod(0o644)  # not executable: the next candidate is used
    assert export.chromium_path() != str(fake)


@pytest.mark.parametrize(
    "obj, kwargs, err, match",
    [
        (42, {}, TypeError, r"takes a Run .* an Example .*; got int"),
        ([], {}, TypeError, "got an empty list"),
        ({"a": 1}, {}, TypeError, "got dict of int"),
        ("run", {}, TypeError, "got str"),
        (None, {"formats": "jpg"}, ValueError, r"Unknown format 'jpg': allowed are \('png', 'svg', 'pdf'\)"),
        (None, {"formats": ()}, ValueError, "formats is empty"),
        (None, {"theme": "sepia"}, ValueError, r"Unknown theme 'sepia': allowed are \('light', 'dark'\)"),
        (None, {"size": (1920,)}, ValueError, "size must be"),
        (None, {"size": (0, 1080)}, ValueError, "size must be"),
        (None, {"size": (1920.0, 1080)}, ValueError, "size must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(example, tmp_path, obj, kwargs, err, match):
    out = tmp_path / "out"
    with pytest.raises(err, match=match):
        sv.export_figures(example if obj is None else obj, out, **kwargs)
    assert not out.exists()


def test_mixed_list_and_bad_folder(run, example, tmp_path):
    with pytest.raises(TypeError, match="got list of Example, Run"):
        sv.export_figures([run, example], tmp_path)
    with pytest.raises(TypeError, match="out_dir must be a folder path"):
        sv.export_figures(run, None)


def test_export_figures_is_a_lazy_name_of_the_package():
    assert "export_figures" in sv.__all__
    assert sv.export_figures is export.export_figures
    assert set(export.THEMES) == {"light", "dark"} and export.FORMATS == ("png", "svg", "pdf")
    assert export.THEMES["dark"].dark and not export.THEMES["light"].dark
    with pytest.raises(AttributeError, match="no attribute 'export_figure'"):
        sv.export_figure  # noqa: B018


@pytest.mark.browser
def test_html_views_become_slide_images_in_both_themes(tiny_model, gpt2_tok, example, tmp_path):
    why = export.browser_missing()
    if why is not None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why} [CI is set, so the browser tests must run, not skip]", pytrace=False)
        pytest.skip(why)
    long = sv.build_example(gpt2_tok, prompt=SHORT["prompt"] * 6, completion=SHORT["completion"])  # no shift figure
    paths = sv.export_figures(long, tmp_path, formats="png", theme=("light", "dark"), size=(1280, 720))
    assert [p.name for p in paths] == [
        "example-masks-light.png",
        "example-masks-dark.png",
        "example-tokens-light.png",
        "example-tokens-dark.png",
    ]
    for p in paths:
        check_png(p, (1280, 720), "dark" if "-dark" in p.name else "light")


@pytest.mark.browser
def test_a_browser_that_fails_to_start_costs_no_figure(gpt2_tok, tmp_path, monkeypatch):
    pytest.importorskip("playwright.sync_api")
    monkeypatch.setattr(export, "chromium_path", lambda: "/bin/false")  # exits at once: the launch fails
    long = sv.build_example(gpt2_tok, prompt=SHORT["prompt"] * 4, completion=SHORT["completion"])
    with pytest.warns(UserWarning, match="could not render the HTML views with /bin/false"):
        paths = sv.export_figures(long, tmp_path, formats="png", size=(640, 360))
    assert [p.name for p in paths] == ["example-masks-light.png"]

"""Packaging rules: the core imports no widget/plotting library; loading models and datasets offline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sftviz as sv
from sftviz.modeling import BUNDLED_MODELS, resolve_device

HEAVY_VIEW_LIBS = ("ipywidgets", "anywidget", "plotly", "matplotlib", "IPython.display")
# The views: the core never imports them (they import the core).
VIEW_MODULES = (
    "sftviz.views",
    "sftviz.views.vocab",
    "sftviz.views.records",
    "sftviz.views.html",
    "sftviz.views.plots",
    "sftviz.render",
    "sftviz.plots",
    "sftviz.widgets",
)


def core_modules() -> list:
    """Every module of the package that is not a view: data, scoring, loss, training, the course tools."""
    import pkgutil

    import sftviz

    names = ["sftviz"] + [m.name for m in pkgutil.walk_packages(sftviz.__path__, "sftviz.")]
    return [n for n in names if not any(n == v or n.startswith(v + ".") for v in VIEW_MODULES)]


def test_core_imports_no_view_library():
    core = core_modules()
    assert {"sftviz.train.engine", "sftviz.chat", "sftviz.faults", "sftviz.exercises"} <= set(core)
    code = (
        "import sys\n"
        f"for m in {core!r}: __import__(m)\n"
        f"bad = [m for m in {HEAVY_VIEW_LIBS + VIEW_MODULES!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the core imported view libraries or view modules: {out}"


def test_static_views_import_no_display_library():
    """The static HTML, the records and the vocabulary are plain Python; figures import matplotlib when drawn."""
    static = [
        "sftviz.render",
        "sftviz.plots",
        "sftviz.views.vocab",
        "sftviz.views.records",
        "sftviz.views.html",
        "sftviz.views.plots",
        "sftviz.views.export",
    ]
    code = (
        "import sys\n"
        f"for m in {static!r}: __import__(m)\n"
        f"bad = [m for m in {HEAVY_VIEW_LIBS!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the static views imported display libraries: {out}"


# ---------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def bundled():
    return sv.load_model(device="cpu")


def test_bundled_model_loads_offline(bundled):
    model, tok = bundled
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    files = {p.name for p in BUNDLED_MODELS["sftviz-tiny"].iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)


def test_bundled_examples_have_bos_and_trained_eos(bundled):
    _, tok = bundled
    ex = sv.build_example(tok, prompt="Customer: What colour is the lamp?\nAssistant:", completion=" teal.")
    assert ex.input_ids[0] == tok.bos_token_id and ex.segments[0] == "bos"
    assert ex.input_ids[-1] == tok.eos_token_id and ex.labels[-1] == tok.eos_token_id


def test_bundled_chat_template_spans(bundled):
    _, tok = bundled
    msgs = sv.load_dataset("support-chat", split="train")[0]["messages"]
    ex = sv.build_example(tok, messages=msgs)
    trained = tok.decode([i for i, t in zip(ex.input_ids, ex.trained) if t])
    expected = "".join(m["content"] + "<|end|>" for m in msgs if m["role"] == "assistant")
    assert trained == expected
    assert ex.segments[0] == "bos" and ex.input_ids.count(tok.bos_token_id) == 1


def test_local_folder_same_code_path_and_pad_from_eos(tmp_path, gpt2_tok, tiny_model):
    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    gpt2_tok.save_pretrained(tmp_path)
    model, tok = sv.load_model(str(tmp_path), device="cpu")
    assert tok.pad_token_id == tok.eos_token_id  # GPT-2 style: pad set from EOS
    ex = sv.build_example(tok, prompt="Answer:", completion=" yes")
    batch = sv.SFTCollator(tok)([ex, sv.build_example(tok, prompt="Answer: the quick brown fox", completion=" yes")])
    assert int(batch["labels"][0, len(ex) - 1]) == tok.eos_token_id  # EOS still supervised
    assert torch.equal(model.transformer.wte.weight, tiny_model.transformer.wte.weight)


def test_pickle_only_folder_is_refused(tmp_path, gpt2_tok, tiny_model):
    tiny_model.save_pretrained(tmp_path, safe_serialization=False)
    gpt2_tok.save_pretrained(tmp_path)
    if (tmp_path / "model.safetensors").exists():
        (tmp_path / "model.safetensors").unlink()
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        sv.load_model(str(tmp_path), device="cpu")


def test_uncached_hub_id_offline_points_to_bundled_model():
    with pytest.raises(ValueError, match="sftviz-tiny") as err:
        sv.load_model("some-org/surely-not-cached-model-xyz", device="cpu")
    assert "HF_HUB_OFFLINE" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(name=3), TypeError, "name must be"),
        (dict(name=""), ValueError, "empty"),
        (dict(dtype="float8"), ValueError, "Unknown dtype"),
        (dict(device="tpu"), ValueError, "Unknown device"),
        (dict(device=0), TypeError, "device must be"),
        (dict(trust_remote_code="yes"), TypeError, "trust_remote_code"),
    ],
)
def test_load_model_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        sv.load_model(**kwargs)


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        sv.load_model(str(f))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_batches_built_on_the_cpu_go_where_the_model_is():
    """to_model_device moves a batch that a collator or sv.pack built on the CPU to the model's device
    (a GPU's; here PyTorch's "meta" device, which any machine has), leaving the caller's batch as it was."""
    from sftviz.modeling import model_device, to_model_device

    model = torch.nn.Linear(2, 2, device="meta")
    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "example_index": torch.zeros(1, 3), "source": "rows"}
    moved = to_model_device(batch, model)
    assert model_device(model).type == "meta" and model_device(object()).type == "cpu"
    assert moved["input_ids"].device.type == moved["example_index"].device.type == "meta"
    assert moved["source"] == "rows" and batch["input_ids"].device.type == "cpu"


# -------------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize(
    "name, keys",
    [("support", {"prompt", "completion"}), ("support-chat", {"messages"}), ("explain", {"prompt", "completion"})],
)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_bundled_datasets(name, keys, split):
    rows = sv.load_dataset(name, split=split)
    assert len(rows) >= 20 and all(set(r) == keys for r in rows)


def test_support_prompts_are_longer_than_completions(bundled):
    _, tok = bundled
    rows = sv.load_dataset("support")
    n_p = sum(len(tok(r["prompt"]).input_ids) for r in rows)
    n_c = sum(len(tok(r["completion"]).input_ids) for r in rows)
    assert n_p > 3 * n_c


def test_explain_completions_are_longer_than_prompts(bundled):
    _, tok = bundled
    for split in ("train", "eval"):
        rows = sv.load_dataset("explain", split=split)
        n_p = sum(len(tok(r["prompt"]).input_ids) for r in rows)
        n_c = sum(len(tok(r["completion"]).input_ids) for r in rows)
        assert n_c > 1.2 * n_p


def test_user_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": "a", "completion": "b"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert sv.load_dataset(str(path)) == rows
    assert sv.load_dataset(path) == rows


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"prompt": "a"}', "line 2: missing 'completion'"),
        ('{"prompt": "a", "completion": 3}', "line 2: 'completion' must be a string"),
        ("{not json", "line 2: not valid JSON"),
        ('["a", "b"]', "line 2: expected a JSON object"),
        ('{"messages": []}', "line 2: messages is empty"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "line 2: Message 0 has unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "line 2: The conversation has no assistant"),
    ],
)
def test_user_jsonl_errors_name_the_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "completion": "ok"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        sv.load_dataset(str(path))


def test_dataset_name_errors(tmp_path):
    with pytest.raises(ValueError, match="No dataset 'nope'"):
        sv.load_dataset("nope")
    with pytest.raises(ValueError, match="Unknown split"):
        sv.load_dataset("support", split="test")
    with pytest.raises(TypeError):
        sv.load_dataset(42)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no rows"):
        sv.load_dataset(str(empty))


# Import names of the distributions sftviz declares (where they differ from the distribution's name).
IMPORT_NAMES = {"pyyaml": "yaml", "jupyter-client": "jupyter_client"}
# Imported only inside a function, for an optional feature that says what to install when it is missing;
# declared in an extra of pyproject.toml, not as a dependency.
OPTIONAL_IMPORTS = {
    "playwright": "sv.export_figures renders the static HTML views to PNG with it (else skips them)",
    "ipykernel": "sftviz.warm_kernel is a Jupyter kernel (for grading and checking notebooks)",
    "jupyter_client": "sftviz.warm_kernel finds its kernelspec with it",
    "trl": "the X-ray's 'trl' pipelines run TRL's SFTTrainer (the [xray] extra)",
    "datasets": "TRL's SFTTrainer reads a datasets.Dataset (the [xray] extra)",
}


def test_declared_dependencies_are_the_imported_ones():
    """Every third-party module sftviz imports is declared (the optional ones in an extra), and every declared
    dependency is imported."""
    import ast
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[;]", d)[0].lower() for d in project["dependencies"]}
    declared = {IMPORT_NAMES.get(d, d) for d in declared}
    imported = set()
    for path in (root / "sftviz").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "sftviz"}
    extras = {re.split(r"[<>=!~ \[;]", d)[0].lower() for ds in project["optional-dependencies"].values() for d in ds}
    assert set(OPTIONAL_IMPORTS) <= {IMPORT_NAMES.get(d, d) for d in extras}, "optional imports must be in an extra"
    assert third_party - declared - set(OPTIONAL_IMPORTS) == set(), "imported but not declared"
    assert declared - third_party == set(), "declared but never imported"

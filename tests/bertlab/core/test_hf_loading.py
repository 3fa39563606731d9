"""``bertlab/core/hf_loading.py``: every loader runs one model-directory check, and every damaged file, whatever
the library raises for it (safetensors, pickle, JSON, torch's zip reader), is one ``BertlabError`` that names it.

The table damages a classifier directory one way per row and loads it the ways bertlab does: ``from_pretrained``
(training, the next stage's ``init_from``), a scorer (``load_sequence_classifier``), ``bertlab predict --model``
(through the CLI, one ``bertlab: error:`` line, exit 2) and the pre-flight check of ``fit``."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from bertlab.cli import main
from bertlab.core.errors import BertlabError
from bertlab.core.hf_loading import check_checkpoint, from_pretrained
from bertlab.preflight import check_model_dir
from datamodules.task_scorer import load_sequence_classifier
from tests.selective_models import save_classifier


class Evil:
    def __reduce__(self):
        return (print, ("this should never run",))


def _bin(model_dir: str, how: str) -> None:
    """Replace the safetensors weights with a ``pytorch_model.bin`` damaged ``how``."""
    from safetensors.torch import load_file

    state = load_file(os.path.join(model_dir, "model.safetensors"))
    os.remove(os.path.join(model_dir, "model.safetensors"))
    path = os.path.join(model_dir, "pytorch_model.bin")
    if how == "objects":
        torch.save({**state, "hook": Evil()}, path)
    elif how == "plain pickle":
        with open(path, "wb") as f:
            pickle.dump({"x": 1}, f)
    else:
        torch.save(state, path)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])


def _write(model_dir: str, name: str, data: bytes) -> None:
    with open(os.path.join(model_dir, name), "wb") as f:
        f.write(data)


def _truncate(model_dir: str, name: str, keep: float) -> None:
    data = open(os.path.join(model_dir, name), "rb").read()
    _write(model_dir, name, data[: int(len(data) * keep)])


# (case, damage, the file the error names)
DAMAGE = [
    ("truncated safetensors", lambda d: _truncate(d, "model.safetensors", 0.5), "model.safetensors"),
    ("safetensors cut in its header", lambda d: _truncate(d, "model.safetensors", 0.002), "model.safetensors"),
    ("garbage safetensors", lambda d: _write(d, "model.safetensors", os.urandom(4096)), "model.safetensors"),
    ("0-byte safetensors", lambda d: _write(d, "model.safetensors", b""), "model.safetensors"),
    ("config not JSON", lambda d: _write(d, "config.json", b'{"model_type": "be'), "config.json"),
    ("config not UTF-8", lambda d: _write(d, "config.json", b'{"model_type": "\xff\xfe"}'), "config.json"),
    ("config a list", lambda d: _write(d, "config.json", b"[1]"), "config.json"),
    ("truncated pytorch_model.bin", lambda d: _bin(d, "truncated"), "pytorch_model.bin"),
    ("pickled objects in the .bin", lambda d: _bin(d, "objects"), "pytorch_model.bin"),
    ("plain pickle .bin", lambda d: _bin(d, "plain pickle"), "pytorch_model.bin"),
    (
        "bad weight index",
        lambda d: (os.remove(os.path.join(d, "model.safetensors")), _write(d, "model.safetensors.index.json", b"{")),
        "model.safetensors.index.json",
    ),
]


@pytest.fixture(scope="module")
def classifier(tiny_bert_dir, tmp_path_factory):
    return save_classifier(str(tmp_path_factory.mktemp("clf") / "clf"), tiny_bert_dir)


@pytest.fixture(params=DAMAGE, ids=[d[0] for d in DAMAGE])
def damaged(request, classifier, tmp_path):
    case, damage, name = request.param
    model_dir = str(tmp_path / "damaged")
    shutil.copytree(classifier, model_dir)
    damage(model_dir)
    return model_dir, os.path.join(model_dir, name)


def test_from_pretrained_names_the_damaged_file(damaged):
    model_dir, file = damaged
    with pytest.raises(BertlabError) as e:
        from_pretrained(AutoModel, model_dir)
    assert file in str(e.value) and "\n" not in str(e.value)


def test_a_scorer_names_the_damaged_file(damaged):
    model_dir, file = damaged
    with pytest.raises(BertlabError) as e:
        load_sequence_classifier(model_dir, ("neg", "pos"), role="entropy scorer (Model_0)")
    assert file in str(e.value)


def test_the_preflight_of_fit_names_the_damaged_file(damaged):
    model_dir, file = damaged
    with pytest.raises(BertlabError) as e:
        check_model_dir(model_dir, 32)
    assert file in str(e.value)


def test_predict_from_a_damaged_export_is_one_error_line(damaged, tiny_csvs, tmp_path):
    model_dir, file = damaged
    out = tmp_path / "p.csv"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", "--model", model_dir, "--input", tiny_csvs["test"], "--output", str(out)])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1, err.getvalue()
    assert lines[0].startswith("bertlab: error: ") and file in lines[0], lines
    assert not out.exists()


def test_a_broken_export_record_is_named(classifier, tiny_csvs, tmp_path):
    model_dir = str(tmp_path / "export")
    shutil.copytree(classifier, model_dir)
    _write(model_dir, "bertlab_export.json", b'{"tokenization": ')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", "--model", model_dir, "--input", tiny_csvs["test"], "--output", str(tmp_path / "p")])
    assert code == 2 and f"{model_dir}/bertlab_export.json: not a readable export record" in err.getvalue()


def test_a_sound_directory_loads_and_the_error_types_are_not_swallowed(classifier):
    model, missing = from_pretrained(AutoModelForSequenceClassification, classifier)
    assert missing == set() and model.config.num_labels == 2
    with pytest.raises(TypeError):  # a programming error stays a traceback, not a user's error
        from_pretrained(AutoModelForSequenceClassification, classifier, no_such_argument=object())


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    assert check_checkpoint(str(path))["state_dict"]["w"].shape == (1000,)
    path.write_bytes(path.read_bytes()[:900])
    with pytest.raises(BertlabError, match=f"--ckpt_path '{path}' does not load as a checkpoint of tensors"):
        check_checkpoint(str(path))

"""``bertlab predict --model EXPORT_DIR --input FILE [--output FILE]``: predictions from an export alone.

No checkpoint, no training config, no run directory: the export holds the model, the tokenizer, the
labels (``id2label``) and how training cut texts into tokens (``bertlab_export.json``). Texts are
read with the data modules' reader (CSV/TSV/JSONL/Parquet), cut the same way, batched by length
(longest first) and written with the same columns as ``PredictionCSV``: the text, ``predicted_label``
and ``prob_<label>`` per class, in input order. Custom-code exports load from bertlab's own
``modeling_bertlab`` (the export's copy of that file is not executed); knowledge vectors are
computed as in training (``vader``, the shipped ``encoder``, or the input's ``column``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import pandas as pd

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path
from bertlab.core.hf_loading import check_model_files, from_pretrained, load_errors, quiet_transformers, read_json_file
from bertlab.core.models import load_tokenizer
from callbacks.hf_export import EXPORT_INFO
from callbacks.predictions import prediction_frame
from datamodules import sources
from datamodules.batching import PadCollator
from datamodules.knowledge_vectors import Knowledge, carry_columns, load_knowledge
from datamodules.token_cache import tokenize


def read_export(model_dir: str) -> tuple[dict, dict]:
    """(config.json, bertlab_export.json) of a classifier export whose files pass the model-directory check that
    ``fit`` runs (``check_model_files``: config and weights read); anything else is a ``BertlabError``."""
    if not os.path.isdir(model_dir):
        raise BertlabError(f"--model {model_dir!r} does not exist; give the export directory a `bertlab fit` wrote")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise BertlabError(f"--model {model_dir!r} is not an export (no config.json there)")
    _, config = check_model_files(model_dir, what="--model")
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        raise BertlabError(
            f"--model {model_dir!r} is not a classifier export (architectures {config.get('architectures')}); "
            "predict needs the export of a classification stage"
        )
    info_path = os.path.join(model_dir, EXPORT_INFO)
    info = read_json_file(info_path, "export record") if os.path.isfile(info_path) else {}
    if not isinstance(info, dict):
        raise BertlabError(f"{info_path}: not an export record (a JSON object); export the model again")
    return config, info


def load_model(model_dir: str, config: dict):
    """The export's model in eval mode: HF's own class, or bertlab's ``BertlabForSequenceClassification``."""
    if "bertlab" in config:
        from transformers import AutoConfig

        from lightning_modules.modeling_bertlab import BertlabForSequenceClassification

        try:
            with quiet_transformers():
                hf_config = AutoConfig.from_pretrained(model_dir)
        except load_errors() as e:
            raise BertlabError(f"{model_dir}/config.json: not a model config that loads ({e})") from None
        model, _ = from_pretrained(BertlabForSequenceClassification, model_dir, what="--model", config=hf_config)
    else:
        from transformers import AutoModelForSequenceClassification

        model, _ = from_pretrained(AutoModelForSequenceClassification, model_dir, what="--model")
    return model.eval()


def knowledge_vectors(model_dir: str, config: dict, raw: pd.DataFrame, frame: pd.DataFrame, where: str):
    """[N, D] knowledge vectors for the input when the model fuses knowledge, else None."""
    spec = config.get("bertlab", {})
    if not spec.get("knowledge_fusion"):
        return None
    source = (spec.get("knowledge") or {}).get("source")
    given = spec.get("knowledge") or {}
    if source == "vader":
        knowledge = Knowledge(provider="vader")
    elif source == "encoder":
        knowledge = Knowledge(
            provider="encoder",
            model_dir=os.path.join(model_dir, given["model_dir"]),
            pooling=given["pooling"],
            max_length=given["max_length"],
        )
    elif source == "column":
        knowledge = Knowledge(column=given["column"])
        frame = carry_columns(raw, frame, where, knowledge, skip=())
    else:
        raise BertlabError(
            f"the export {model_dir!r} fuses knowledge from {source or 'an unrecorded source'}, which the input text "
            "does not give; predict with `bertlab predict --config ... --ckpt_path ...` and the data's knowledge"
        )
    with tempfile.TemporaryDirectory() as cache:  # nothing of a one-off prediction is left behind
        return load_knowledge(knowledge, "predict", frame, {}, cache)


def check_output(path: str) -> None:
    """Fail before any work when ``path`` cannot be written."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise BertlabError(f"--output {path!r} is a directory; give a file name")
    parent = os.path.dirname(target)
    while not os.path.exists(parent):  # the nearest existing ancestor must be a directory we may write in
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BertlabError(f"--output {path!r} cannot be written: {parent!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BertlabError(f"--output {path!r} cannot be written (no write permission in {parent!r})")


def predict(
    model_dir: str,
    input_path: str,
    output_path: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = True,
) -> str:
    """Write the predictions for ``input_path`` and return where they went."""
    import torch
    from tqdm import tqdm

    config, info = read_export(model_dir)
    output_path = output_path or os.path.splitext(input_path)[0] + ".predictions.csv"
    check_output(output_path)
    if batch_size < 1:
        raise BertlabError(f"--batch_size must be >= 1, got {batch_size}")
    raw = sources.read_table(input_path)
    frame = sources.validate_frame(raw, input_path, text_column, None, text_pair_column)
    if frame.empty:
        raise BertlabError(f"{input_path!r} has no rows to predict")
    tokenizer = load_tokenizer(model_dir)
    cut = info.get("tokenization", {})
    limit = max_length or cut.get("max_length") or min(tokenizer.model_max_length, config["max_position_embeddings"])
    pairs = frame["text_pair"].tolist() if "text_pair" in frame else None
    ids, types = tokenize(
        tokenizer, frame["text"].tolist(), pairs, limit, cut.get("truncation", "head"), cut.get("head_tokens")
    )
    knowledge = knowledge_vectors(model_dir, config, raw, frame, input_path)
    model = load_model(model_dir, config)
    collate = PadCollator(tokenizer.pad_token_id)
    order = np.argsort([-len(i) for i in ids], kind="stable")  # longest first: a too-large batch fails at once
    probs = np.zeros((len(ids), config.get("num_labels") or len(config["id2label"])), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=len(ids), unit="text", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([{"input_ids": ids[i], **({"token_type_ids": types[i]} if types else {})} for i in rows])
            if knowledge is not None:
                batch["knowledge"] = torch.from_numpy(knowledge[rows])
            probs[rows] = torch.softmax(model(**batch).logits.float(), dim=-1).numpy()
            bar.update(len(rows))
    names = [str(config["id2label"][str(i)]) for i in range(probs.shape[1])]
    out = prediction_frame(frame[[c for c in ("text", "text_pair") if c in frame]], names, probs)
    try:
        with atomic_path(output_path) as tmp:
            out.to_csv(tmp, index=False)
    except OSError as e:
        raise BertlabError(f"--output {output_path!r} cannot be written: {e.strerror or e}") from None
    return output_path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A usage error is bad input like any other: one line, exit code 2 (the CLI prints it)."""
        raise BertlabError(f"bertlab predict --model: {message} (see bertlab predict --model DIR --input FILE --help)")


def wants_export(args: list[str]) -> bool:
    """Whether ``bertlab predict ARGS`` predicts from an export: ``--input`` given, or ``--model`` names a directory
    (LightningCLI's ``--model`` is a class or a config, never a directory)."""
    for i, a in enumerate(args):
        if a == "--input" or a.startswith("--input="):
            return True
        model = (
            a.split("=", 1)[1]
            if a.startswith("--model=")
            else args[i + 1]
            if a == "--model" and i + 1 < len(args)
            else None
        )
        if model is not None and os.path.isdir(model):
            return True
    return False


def main(argv: list[str]) -> int:
    parser = _Parser(
        prog="bertlab predict", description="Predict with an exported model: no checkpoint, no training config."
    )
    parser.add_argument("--model", required=True, help="an export directory (`bertlab fit` writes ROOT/export)")
    parser.add_argument("--input", required=True, help="texts to classify: CSV, TSV, JSONL or Parquet")
    parser.add_argument("--output", help="CSV to write (default: INPUT.predictions.csv beside the input)")
    parser.add_argument("--text_column", default="text", help="the input's text column (default: text)")
    parser.add_argument("--text_pair_column", default=None, help="the second text of a pair, if the task has one")
    parser.add_argument("--batch_size", type=int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--max_length", type=int, default=None, help="token budget (default: the training one)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    path = predict(
        args.model,
        args.input,
        args.output,
        args.text_column,
        args.text_pair_column,
        args.batch_size,
        args.max_length,
        progress=not args.no_progress,
    )
    print(f"bertlab: predictions written to {path}", file=sys.stderr)
    return 0

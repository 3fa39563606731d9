"""``PETDataModule``: patterns rendered with exactly one mask that survives truncation, and B·P-row batches."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoTokenizer

from bertlab.core.errors import BertlabError
from datamodules.maskers import DynamicMasker
from datamodules.pet import PETDataModule, parse_pattern, render_pattern
from tests.dm_args import grouped

PATTERNS = ["{text} It was [MASK].", "Review: {text} All in all, [MASK]!"]


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def enc(tok, s: str) -> list[int]:
    return tok(s, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("bad", ["{text} no mask", "[MASK] [MASK] {text}", "It was [MASK].", "{text} {text} [MASK]"])
def test_bad_patterns(bad):
    with pytest.raises(BertlabError, match="exactly once"):
        parse_pattern(bad)


def test_whitespace_before_a_slot_belongs_to_the_slot():
    assert parse_pattern("Review: {text} It was [MASK].") == [
        ("literal", "Review:"),
        ("text", " "),
        ("literal", " It was"),
        ("mask", " "),
        ("literal", "."),
    ]


def test_render_places_the_mask_token_between_the_pattern_words(tok):
    text = "the coffee was great"
    [ids], _ = render_pattern(tok, PATTERNS[0], [text], None, max_length=32)
    assert ids == [tok.cls_token_id] + enc(tok, text) + enc(tok, " It was") + [tok.mask_token_id] + enc(tok, ".") + [
        tok.sep_token_id
    ]


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_mask_and_pattern_survive_truncation(tok, truncation):
    long = " ".join(["the coffee was great and the tea was awful"] * 30)
    rows, _ = render_pattern(tok, PATTERNS[1], [long, "short [MASK] text"], None, max_length=24, truncation=truncation)
    tail = enc(tok, " All in all,") + [tok.mask_token_id] + enc(tok, "!") + [tok.sep_token_id]
    for ids in rows:
        assert ids.count(tok.mask_token_id) == 1  # a mask inside the data becomes [UNK]
        assert ids[-len(tail) :] == tail and ids[1 : 1 + len(enc(tok, "Review:"))] == enc(tok, "Review:")
    assert len(rows[0]) == 24


def test_pattern_too_long_for_max_length(tok):
    with pytest.raises(BertlabError, match="no room for text"):
        render_pattern(tok, PATTERNS[1], ["x"], None, max_length=8)


def test_text_pair_pattern_needs_a_pair_column(tok):
    with pytest.raises(BertlabError, match="text_pair"):
        render_pattern(tok, "{text} ? [MASK], {text_pair}", ["a"], None, max_length=16)
    [ids], _ = render_pattern(tok, "{text} ? [MASK], {text_pair}", ["the tea"], ["the coffee"], max_length=16)
    assert ids == [tok.cls_token_id] + enc(tok, "the tea ?") + [tok.mask_token_id] + enc(tok, ", the coffee") + [
        tok.sep_token_id
    ]


def make_dm(tiny_bert_dir, tiny_csvs, tmp_path, **kw):
    args = dict(
        tokenizer=tiny_bert_dir,
        train_file=tiny_csvs["train"],
        val_file=tiny_csvs["val"],
        batch_size=4,
        max_length=32,
        cache_dir=str(tmp_path),
        patterns=PATTERNS,
    )
    return PETDataModule(**grouped(**{**args, **kw}))


def test_batches_hold_every_pattern_and_mlm_inputs(tiny_bert_dir, tiny_csvs, tmp_path, tok):
    dm = make_dm(tiny_bert_dir, tiny_csvs, tmp_path, masker=functools.partial(DynamicMasker, mlm_probability=0.3))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].shape == batch["idx"].shape == (4,)
    rows = torch.arange(8)
    assert torch.all(batch["input_ids"][rows, batch["mask_pos"]] == tok.mask_token_id)
    assert torch.all((batch["input_ids"] == tok.mask_token_id).sum(1) == 1)
    assert batch["mlm_input_ids"].shape[0] == 4 and (batch["mlm_labels"] != -100).any()
    texts = dm.frames["train"]["text"]
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert first[1 : 1 + len(enc(tok, texts[int(batch["idx"][0])]))] == enc(
        tok, texts[int(batch["idx"][0])]
    )  # row b·P + 0 is example b
    val = next(iter(dm.val_dataloader()))
    assert "mlm_input_ids" not in val and val["input_ids"].shape[0] == 2 * val["labels"].shape[0]
    assert dm.hparams.patterns == PATTERNS and dm.num_labels == 2


def test_rendering_is_cached_per_pattern(tiny_bert_dir, tiny_csvs, tmp_path):
    dm = make_dm(tiny_bert_dir, tiny_csvs, tmp_path)
    dm.setup("fit")
    assert dm.built_now["train"]
    again = make_dm(tiny_bert_dir, tiny_csvs, tmp_path)
    again.setup("fit")
    assert not again.built_now["train"]
    changed = make_dm(tiny_bert_dir, tiny_csvs, tmp_path, patterns=PATTERNS + ["[MASK]: {text}"])
    changed.setup("fit")
    assert changed.built_now["train"]


def test_no_patterns_is_an_error(tiny_bert_dir, tiny_csvs, tmp_path):
    with pytest.raises(BertlabError, match="at least one pattern"):
        make_dm(tiny_bert_dir, tiny_csvs, tmp_path, patterns=[])

"""Sentence splitting for the buffer rule: pysbd for English, 。！？ and line breaks for Chinese."""

from __future__ import annotations

import pytest

from bertlab.core.errors import BertlabError
from datamodules.sentences import chinese_sentences, split_documents, split_sentences


def test_english_keeps_abbreviations_and_decimals():
    text = "I paid $3.50 for it. Dr. Smith liked it!  Would I buy again? Yes"
    assert split_sentences(text, "english") == [
        "I paid $3.50 for it.",
        "Dr. Smith liked it!",
        "Would I buy again?",
        "Yes",
    ]


def test_chinese_enders_closers_and_line_breaks():
    text = "这个很好吃！！价格也不贵。你说呢？”他问。\n第二行没有句号\n\n最后一句?"
    assert chinese_sentences(text) == [
        "这个很好吃！！",
        "价格也不贵。",
        "你说呢？”",
        "他问。",
        "第二行没有句号",
        "最后一句?",
    ]
    # a document without an ender is one sentence; nothing but enders and spaces gives only the enders
    assert chinese_sentences("没有标点") == ["没有标点"]
    assert chinese_sentences("  ") == []


def test_auto_picks_by_script_and_none_keeps_the_document():
    assert split_sentences("很好。不错", "auto") == ["很好。", "不错"]
    assert split_sentences("Good. Not bad", "auto") == ["Good.", "Not bad"]
    assert split_sentences("Good. Not bad ", "none") == ["Good. Not bad"]


def test_documents_keep_their_index_and_empty_ones_vanish():
    sentences, doc = split_documents(["Good food. Bad box.", "", "Fine"], "english")
    assert sentences == ["Good food.", "Bad box.", "Fine"] and doc == [0, 0, 2]


def test_unknown_splitter():
    with pytest.raises(BertlabError, match="sentence splitter must be one of auto, english, chinese, none, got 'x'"):
        split_documents(["a"], "x")


def test_token_rows_cut_after_enders_but_not_inside_numbers():
    from bertlab.core.models import load_tokenizer
    from datamodules.sentences import TokenSentences

    tok = load_tokenizer("minilm")  # a real WordPiece vocabulary: digits, ## pieces
    ids = tok("Great teas!! It was 3.5 stars. Fine")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    spans = TokenSentences(tok).spans(ids)
    assert [" ".join(pieces[a:b]) for a, b in spans] == ["great tea ##s ! !", "it was 3 . 5 stars .", "fine"]
    assert spans[0][0] == 1 and spans[-1][1] == len(ids) - 1  # [CLS] and [SEP] belong to no sentence

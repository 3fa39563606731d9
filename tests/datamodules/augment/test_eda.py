"""EDA (datamodules/augment/eda.py), word splitting (words.py) and build_augmenter, on fixed sentences
with a fixed tiny synonym table (tests/data/augment/synonyms_en.tsv)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bertlab.core.errors import BertlabError
from datamodules.augment import EDA, SynonymDict, SynonymTSV, build_augmenter
from datamodules.augment.words import is_word, join_words, split_words

DATA = Path(__file__).resolve().parents[2] / "data" / "augment"
SENTENCE = "The quick brown fox jumps over the lazy dog near 3 big trees, happily!"
ZH_SENTENCE = "我们去公园散步，天气很好。"


@pytest.fixture(scope="module")
def table():
    return SynonymTSV(DATA / "synonyms_en.tsv")


def words_of(text: str, language: str = "en") -> list[str]:
    return [t for _, t in split_words(text, language)]


def eda(table, **rates) -> EDA:
    settings = {"alpha_sr": 0.0, "alpha_ri": 0.0, "alpha_rs": 0.0, "alpha_rd": 0.0, "n_aug": 6, **rates}
    return EDA(synonyms=table, **settings)


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_english_split_keeps_case_punctuation_and_numbers():
    text = 'Hello, world!  It\'s 3.5 "great" (really) - well-known.'
    tokens = words_of(text)
    assert tokens == [
        "Hello",
        ",",
        "world",
        "!",
        "It's",
        "3.5",
        '"',
        "great",
        '"',
        "(",
        "really",
        ")",
        "-",
        "well-known",
        ".",
    ]
    assert join_words(split_words(text)) == text
    assert [t for t in tokens if is_word(t)] == ["Hello", "world", "It's", "great", "really", "well-known"]


@pytest.mark.parametrize("text", [ZH_SENTENCE, "我喜欢 Python 编程 3.5 版本!", " 前后有空格 "])
def test_chinese_segmentation_round_trip(text):
    tokens = words_of(text, "zh")
    assert "".join(tokens) == text
    assert join_words(split_words(text, "zh")) == text.strip()
    assert len(tokens) > 3


def test_synonym_replacement_changes_n_word_types_in_place(table):
    original = words_of(SENTENCE)
    n_words = sum(map(is_word, original))  # 13
    variants = eda(table, alpha_sr=0.2)([SENTENCE], seed=0)[0]  # max(1, int(0.2 * 13)) = 2
    assert len(variants) == 6
    for variant in variants:
        new = words_of(variant)
        assert len(new) == len(original)  # the table has one-word synonyms only
        changed = {o for o, w in zip(original, new) if o != w}
        assert len(changed) == 2, (n_words, variant)
        for o, w in zip(original, new):
            assert w == o or w in table.synonyms(o)
        assert [t for t in new if not is_word(t)] == ["3", ",", "!"]
        assert " ," not in variant and " !" not in variant


def test_synonym_replacement_keeps_capitalisation_and_replaces_every_occurrence():
    augmenter = EDA(
        n_aug=2,
        alpha_sr=1.0,
        alpha_ri=0,
        alpha_rs=0,
        alpha_rd=0,
        synonyms=SynonymDict({"quick": ["fast"], "DOG": ["hound"]}),
    )
    assert augmenter(["Quick, quick DOG!"], seed=3)[0] == ["Fast, fast HOUND!"] * 2


def test_random_insertion_adds_exactly_n_synonyms_of_sentence_words(table):
    original = words_of(SENTENCE)
    allowed = {s for w in original for s in table.synonyms(w)}
    for variant in eda(table, alpha_ri=0.2)([SENTENCE], seed=1)[0]:
        new = words_of(variant)
        added = Counter(new) - Counter(original)
        assert sum(added.values()) == 2
        assert set(added) <= allowed
        assert not Counter(original) - Counter(new)
        assert is_subsequence(original, new)


def test_random_swap_only_moves_words(table):
    original = words_of(SENTENCE)
    for variant in eda(table, alpha_rs=0.1)([SENTENCE], seed=2)[0]:  # one swap
        new = words_of(variant)
        assert Counter(new) == Counter(original)
        moved = [i for i, (o, w) in enumerate(zip(original, new)) if o != w]
        assert len(moved) == 2 and all(is_word(original[i]) for i in moved)


def test_random_deletion_only_drops_words(table):
    original = words_of(SENTENCE)
    variants = eda(table, alpha_rd=0.3, n_aug=12)([SENTENCE], seed=4)[0]
    assert any(len(words_of(v)) < len(original) for v in variants)
    for variant in variants:
        new = words_of(variant)
        assert is_subsequence(new, original)
        assert [t for t in new if not is_word(t)] == ["3", ",", "!"]
    for variant in eda(table, alpha_rd=1.0)([SENTENCE], seed=4)[0]:
        assert sum(map(is_word, words_of(variant))) == 1  # at least one word always stays


def test_operations_share_copies_as_in_the_reference(table):
    augmenter = eda(table, alpha_sr=0.2, alpha_ri=0.2, alpha_rs=0.1, alpha_rd=0.2, n_aug=9)
    variants = augmenter([SENTENCE, "Quick brown dogs."], seed=5)
    assert [len(v) for v in variants] == [9, 9]
    assert all(isinstance(v, str) for vs in variants for v in vs)
    # 4 operations → n_aug // 4 + 1 = 3 candidates each, shuffled, the first 9 kept: every operation shows up
    lengths = Counter(len(words_of(v)) - len(words_of(SENTENCE)) for v in variants[0])
    assert lengths[2] >= 1 and lengths[0] >= 1  # insertions (+2) and same-length operations


def test_eda_is_deterministic_per_seed_and_per_text(table):
    augmenter = eda(table, alpha_sr=0.2, alpha_ri=0.2, alpha_rs=0.1, alpha_rd=0.2)
    texts = [SENTENCE, "The lazy dog sleeps under big trees.", "Quick brown fox."]
    first = augmenter(texts, seed=7)
    assert augmenter(texts, seed=7) == first
    assert augmenter(texts[::-1], seed=7) == first[::-1]  # a text's variants do not depend on its neighbours
    assert augmenter(texts, seed=8) != first


@pytest.mark.parametrize("text", ["", "   ", "Hello", "Hello!", "3 + 4 = 7"])
def test_short_texts_come_back_unchanged(table, text):
    for language in ("en", "zh"):
        augmenter = EDA(n_aug=3, language=language, synonyms=table)
        assert augmenter([text], seed=0) == [[text] * 3]


def test_chinese_eda_with_cilin():
    augmenter = EDA(
        n_aug=6, alpha_sr=0.3, alpha_ri=0, alpha_rs=0, alpha_rd=0, language="zh", synonyms=str(DATA / "cilin_mini.txt")
    )
    original = words_of(ZH_SENTENCE, "zh")
    assert {"公园", "散步", "天气"} <= set(original)
    for variant in augmenter([ZH_SENTENCE], seed=0)[0]:
        assert " " not in variant and variant.endswith("。") and "，" in variant
        assert variant != ZH_SENTENCE and variant.startswith("我们去")
    assert EDA(n_aug=2, language="zh", synonyms=str(DATA / "cilin_mini.txt"))([ZH_SENTENCE], seed=1) == EDA(
        n_aug=2, language="zh", synonyms=str(DATA / "cilin_mini.txt")
    )([ZH_SENTENCE], seed=1)


def test_fingerprint_names_settings_and_source(table):
    a, b = eda(table, alpha_sr=0.1), eda(table, alpha_sr=0.2)
    assert a.fingerprint() == eda(table, alpha_sr=0.1).fingerprint() != b.fingerprint()
    assert "synonyms_en.tsv" in a.fingerprint()


@pytest.mark.parametrize(
    "settings",
    [
        {"alpha_sr": 1.5},
        {"alpha_rd": -0.1},
        {"n_aug": 0},
        {"language": "fr"},
        {"alpha_sr": 0, "alpha_ri": 0, "alpha_rs": 0, "alpha_rd": 0},
    ],
)
def test_bad_eda_settings(table, settings):
    with pytest.raises(BertlabError):
        EDA(synonyms=table, **settings)


def test_build_augmenter(table, tmp_path):
    assert isinstance(build_augmenter("eda", synonyms=table, n_aug=2), EDA)
    with pytest.raises(BertlabError, match="eda, contextual, back_translation"):
        build_augmenter("mixup")
    with pytest.raises(BertlabError, match=r"outside \[0, 1\]"):
        build_augmenter("eda", synonyms=table, alpha_ri=2)
    with pytest.raises(BertlabError, match="alpha_sr"):
        build_augmenter("eda", synonyms=table, alpha=0.1)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BertlabError, match=r"outside \[0, 1\]"):
        build_augmenter("contextual", model_dir=str(tmp_path), rate=1.2)

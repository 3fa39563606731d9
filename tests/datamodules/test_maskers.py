"""Statistical and contract tests for the maskers, on 10k random sequences in batches of 1000."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoTokenizer

from bertlab.core.errors import BertlabError
from datamodules import maskers
from datamodules.maskers import (
    DynamicMasker,
    EntropyMasker,
    SelectiveMasker,
    SpanMasker,
    StaticMasker,
    WholeWordMasker,
    jieba_word_ids,
    wordpiece_word_ids,
)
from tests.conftest import build_tiny_bert, make_texts

N = 10_000
RATE_MASKERS = [DynamicMasker, StaticMasker, WholeWordMasker, SpanMasker]
MASKERS = [*RATE_MASKERS, SelectiveMasker, EntropyMasker]


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def split_tok(tmp_path_factory):
    """A 60-piece vocab: most words split into ``##`` pieces."""
    return AutoTokenizer.from_pretrained(
        build_tiny_bert(str(tmp_path_factory.mktemp("split_bert")), make_texts(200)[0], vocab_size=60)
    )


def random_features(tok, n=N, lo=3, hi=60, seed=0, pairs=False, scores=False):
    rng = np.random.default_rng(seed)
    normal = np.array([i for i in range(len(tok)) if i not in tok.all_special_ids])
    feats = []
    for i in range(n):
        ids = [tok.cls_token_id, *rng.choice(normal, rng.integers(lo, hi)), tok.sep_token_id]
        types = [0] * len(ids)
        if pairs:
            second = [*rng.choice(normal, rng.integers(lo, hi)), tok.sep_token_id]
            ids, types = ids + second, types + [1] * len(second)
        f = {"input_ids": np.array(ids), "idx": i, "token_type_ids": types}
        if scores:
            f["scores"] = rng.random(len(ids)).tolist()
        feats.append(f)
    return feats


def run(masker, feats, batch_size=1000):
    """Yield (original padded ids, masker output) per batch."""
    for lo in range(0, len(feats), batch_size):
        chunk = feats[lo : lo + batch_size]
        out = masker(chunk)
        orig = pad_sequence(
            [torch.as_tensor(f["input_ids"]) for f in chunk], batch_first=True, padding_value=masker.pad_id
        )
        orig = torch.nn.functional.pad(orig, (0, out["input_ids"].shape[1] - orig.shape[1]), value=masker.pad_id)
        yield orig, out


def rates(masker, feats, tok):
    """(masked / maskable, [MASK] / masked, random / masked, kept / masked) over all batches."""
    specials = torch.tensor(tok.all_special_ids)
    counts = np.zeros(5)
    for orig, out in run(masker, feats):
        sel = out["labels"] != -100
        maskable = out["attention_mask"].bool() & ~torch.isin(orig, specials)
        mask = sel & (out["input_ids"] == tok.mask_token_id)
        kept = sel & (out["input_ids"] == orig)
        counts += [sel.sum(), maskable.sum(), mask.sum(), (sel & ~mask & ~kept).sum(), kept.sum()]
    return counts[0] / counts[1], counts[2] / counts[0], counts[3] / counts[0], counts[4] / counts[0]


@pytest.mark.parametrize("masker_class", RATE_MASKERS, ids=lambda c: c.__name__)
def test_default_rate_and_split(masker_class, tok):
    rate, mask, rand, keep = rates(masker_class(tok), random_features(tok), tok)
    assert abs(rate - 0.15) < 0.01
    # a random replacement equal to the original counts as kept (1 in 195 here)
    assert abs(mask - 0.8) < 0.02 and abs(rand - 0.1) < 0.02 and abs(keep - 0.1) < 0.02


@pytest.mark.parametrize("masker_class", RATE_MASKERS, ids=lambda c: c.__name__)
def test_configured_rate_and_split(masker_class, tok):
    masker = masker_class(tok, mlm_probability=0.3, replace_prob=0.5, random_prob=0.25, keep_prob=0.25, seed=3)
    rate, mask, rand, keep = rates(masker, random_features(tok, seed=1), tok)
    assert abs(rate - 0.3) < 0.01
    assert abs(mask - 0.5) < 0.02 and abs(rand - 0.25) < 0.02 and abs(keep - 0.25) < 0.02


@pytest.mark.parametrize("masker_class", MASKERS, ids=lambda c: c.__name__)
def test_specials_and_padding_never_masked(masker_class, tok):
    feats = random_features(tok, n=2000, pairs=True, scores=True)
    masker = masker_class(tok, mlm_probability=0.5, pad_to_multiple_of=8)
    specials = torch.tensor(tok.all_special_ids)
    for orig, out in run(masker, feats):
        scoring = {"mask_stats"} if isinstance(masker, SelectiveMasker) else set()
        assert set(out) == {"input_ids", "attention_mask", "labels", "token_type_ids"} | scoring
        assert out["input_ids"].shape[1] % 8 == 0
        fixed = torch.isin(orig, specials) | (out["attention_mask"] == 0)
        assert (out["labels"][fixed] == -100).all()
        assert torch.equal(out["input_ids"][fixed], orig[fixed])
        assert (out["input_ids"][out["attention_mask"] == 0] == tok.pad_token_id).all()
        assert (out["labels"] != -100).any()


def test_random_replacements_are_never_special(tok):
    masker = DynamicMasker(tok, mlm_probability=0.5, replace_prob=0.0, random_prob=1.0, keep_prob=0.0)
    for orig, out in run(masker, random_features(tok, n=2000)):
        sel = out["labels"] != -100
        assert not torch.isin(out["input_ids"][sel], torch.tensor(tok.all_special_ids)).any()
        assert (out["input_ids"][sel] != orig[sel]).float().mean() > 0.98


def test_special_tokens_mask_is_respected(tok):
    feats = [{"input_ids": [2, 10, 11, 12, 3], "special_tokens_mask": [1, 0, 1, 0, 1]}] * 200
    out = DynamicMasker(tok, mlm_probability=0.9)(feats)
    assert (out["labels"][:, [0, 2, 4]] == -100).all() and (out["labels"][:, [1, 3]] != -100).any()


def word_features(tok, n=N, with_word_ids=True):
    texts, _ = make_texts(n, seed=5)
    enc = tok(texts)
    feats = []
    for i in range(n):
        f = {"input_ids": enc["input_ids"][i]}
        if with_word_ids:
            f["word_ids"] = [-1 if w is None else w for w in enc.word_ids(i)]
        feats.append(f)
    return feats


@pytest.mark.parametrize("with_word_ids", [True, False])
def test_whole_words_never_split(with_word_ids, split_tok):
    feats = word_features(split_tok, with_word_ids=with_word_ids)
    pieces = sum(t.startswith("##") for f in feats[:100] for t in split_tok.convert_ids_to_tokens(f["input_ids"]))
    assert pieces > 300  # the small vocab really splits words
    words = pad_sequence(
        [torch.tensor(wordpiece_word_ids(f["input_ids"], split_tok)) for f in feats], batch_first=True, padding_value=-1
    )
    for lo, (orig, out) in zip(range(0, N, 1000), run(WholeWordMasker(split_tok), feats)):
        w = words[lo : lo + 1000]
        w = torch.nn.functional.pad(w, (0, orig.shape[1] - w.shape[1]), value=-1)
        key = torch.arange(len(w)).unsqueeze(1) * 1000 + w  # (row, word) -> one id
        valid = w >= 0
        k, sel = key[valid], (out["labels"] != -100)[valid].long()
        is_mask = (out["input_ids"] == split_tok.mask_token_id)[valid].long()
        size = torch.zeros(int(k.max()) + 1, dtype=torch.long).scatter_add_(0, k, torch.ones_like(k))
        for flags in (sel, is_mask):  # all pieces or none, for selection and for [MASK] (one decision per word)
            hit = torch.zeros_like(size).scatter_add_(0, k, flags)
            assert ((hit == 0) | (hit == size)).all()
    rate, mask, _, _ = rates(WholeWordMasker(split_tok), feats, split_tok)
    assert abs(rate - 0.15) < 0.01 and abs(mask - 0.8) < 0.02


def test_wordpiece_word_ids_match_the_tokenizer(split_tok):
    for text in make_texts(20, seed=9)[0]:
        enc = split_tok(text)
        assert wordpiece_word_ids(enc["input_ids"], split_tok) == [-1 if w is None else w for w in enc.word_ids()]


def test_spans_are_contiguous_geometric_and_meet_the_budget(tok):
    feats = random_features(tok, n=2000, lo=400, hi=500)
    masker = SpanMasker(tok)
    lengths = []
    for orig, out in run(masker, feats):
        sel = out["labels"] != -100
        maskable = (out["attention_mask"] == 1) & ~torch.isin(orig, torch.tensor(tok.all_special_ids))
        assert torch.equal(sel.sum(1), torch.round(maskable.sum(1).double() * 0.15).long())
        edges = torch.diff(torch.nn.functional.pad(sel.int(), (1, 1)), dim=1)
        starts, ends = (edges == 1).nonzero(), (edges == -1).nonzero()
        assert torch.equal(starts[:, 0], ends[:, 0])
        run_len = ends[:, 1] - starts[:, 1]
        is_mask = (out["input_ids"] == tok.mask_token_id).int().cumsum(1)
        masks_in_run = is_mask[ends[:, 0], ends[:, 1] - 1] - torch.where(
            starts[:, 1] > 0, is_mask[starts[:, 0], starts[:, 1] - 1], 0
        )
        assert ((masks_in_run == 0) | (masks_in_run == run_len)).all()  # one 80/10/10 decision per span
        lengths.append(run_len)
    lengths = torch.cat(lengths).double()
    pmf = 0.2 * 0.8 ** torch.arange(10, dtype=torch.float64)
    pmf /= pmf.sum()
    assert abs(float((pmf * torch.arange(1, 11)).sum()) - 3.80) < 0.01  # truncated Geometric(0.2) mean
    # The span that crosses the budget is cut, so a budget of m tokens takes f(m) spans on average,
    # f(r) = 1 + sum_l pmf(l) f(r - l), f(r <= 0) = 0; the mean run length is sum m / sum f(m).
    f = [0.0] * 100
    for r in range(1, 100):
        f[r] = 1 + sum(float(pmf[k - 1]) * f[max(r - k, 0)] for k in range(1, 11))
    budgets = [round(0.15 * (len(x["input_ids"]) - 2)) for x in feats]
    predicted = sum(budgets) / sum(f[m] for m in budgets)
    assert 3.6 < predicted < 3.75
    assert lengths.max() == 10 and abs(lengths.mean() - predicted) < 0.05


def test_short_sequences_and_single_example(tok):
    out = SpanMasker(tok)([{"input_ids": [2, 10, 3]}])
    assert (out["labels"] == -100).all()  # budget round(0.15) = 0
    out = WholeWordMasker(tok)([{"input_ids": [2, 3]}])
    assert (out["labels"] == -100).all()


def test_static_masks_repeat_per_copy(tok):
    feats = random_features(tok, n=500)
    masker = StaticMasker(tok, dupe_factor=4, seed=7)
    outs = {}
    for epoch in (0, 1, 4, 5):
        masker.set_epoch(epoch)
        outs[epoch] = masker(feats)
    for a, b in ((0, 4), (1, 5)):
        assert torch.equal(outs[a]["input_ids"], outs[b]["input_ids"]) and torch.equal(
            outs[a]["labels"], outs[b]["labels"]
        )
    rows_differ = (outs[0]["labels"] != outs[1]["labels"]).any(1).float().mean()
    assert rows_differ > 0.9
    # the mask belongs to (idx, copy), not to the batch it lands in or its padding
    masker.set_epoch(4)
    alone = masker(feats[7:8])
    n = len(feats[7]["input_ids"])
    assert torch.equal(alone["labels"][0, :n], outs[0]["labels"][7, :n])
    shuffled = masker(feats[::-1])
    assert torch.equal(shuffled["labels"].flip(0)[:, :n], outs[0]["labels"][:, :n])


def test_dynamic_masks_change_every_call(tok):
    feats = random_features(tok, n=500)
    masker = DynamicMasker(tok)
    assert not torch.equal(masker(feats)["labels"], masker(feats)["labels"])


@pytest.mark.parametrize("masker_class", MASKERS, ids=lambda c: c.__name__)
def test_seeding_is_private(masker_class, tok):
    feats = random_features(tok, n=300, scores=True)
    masker_kwargs = {"temperature": 1.0} if masker_class is SelectiveMasker else {}
    torch.manual_seed(1)
    a = masker_class(tok, seed=11, **masker_kwargs)(feats)
    torch.manual_seed(2)
    torch.rand(10)
    b = masker_class(tok, seed=11, **masker_kwargs)(feats)
    c = masker_class(tok, seed=12, **masker_kwargs)(feats)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_pickled_masker_continues_the_same_stream(tok):
    feats = random_features(tok, n=100)
    masker = WholeWordMasker(tok)
    masker(feats)
    clone = pickle.loads(pickle.dumps(masker))
    assert torch.equal(masker(feats)["input_ids"], clone(feats)["input_ids"])


def test_workers_and_epochs_get_their_own_streams(tok, monkeypatch):
    feats = random_features(tok, n=300)

    def first_batch(worker=None, epoch=0):
        monkeypatch.setattr(maskers.dynamic, "get_worker_info", lambda: worker)
        masker = DynamicMasker(tok)
        masker.set_epoch(epoch)
        return masker(feats)["labels"]

    class Info:
        def __init__(self, id):
            self.id = id

    base = first_batch()
    assert torch.equal(base, first_batch())
    assert not torch.equal(base, first_batch(epoch=1))
    assert not torch.equal(first_batch(Info(0)), first_batch(Info(1)))


def test_selective_masks_the_top_scores(tok):
    feats = random_features(tok, n=200, scores=True)
    out = SelectiveMasker(tok, mlm_probability=0.2, whole_word=False)(feats)
    for f, labels in zip(feats, out["labels"]):
        scores = torch.tensor(f["scores"])[1:-1]
        k = round(0.2 * len(scores))
        chosen = (labels[1 : len(f["input_ids"]) - 1] != -100).nonzero().flatten()
        assert set(chosen.tolist()) == set(scores.topk(k).indices.tolist())


def test_selective_temperature_samples_by_softmax(tok):
    scores = np.linspace(0, 3, 20)
    feats = [{"input_ids": [2, *range(5, 25), 3], "scores": [0.0, *scores, 0.0]}] * 4000
    out = SelectiveMasker(tok, mlm_probability=0.05, temperature=0.5, min_score=-1, whole_word=False)(feats)
    assert (out["labels"] != -100).sum(1).eq(1).all()  # budget round(0.05 * 20) = 1
    freq = (out["labels"][:, 1:21] != -100).double().mean(0)
    # ∝ exp(score / (T · the row's largest score)): the same at any scale of the scores
    assert torch.allclose(freq, torch.softmax(torch.tensor(scores) / (0.5 * 3.0), 0), atol=0.02)
    feats = [{**f, "scores": [100 * x for x in f["scores"]]} for f in feats]
    again = SelectiveMasker(tok, mlm_probability=0.05, temperature=0.5, min_score=-1, whole_word=False)(feats)
    assert torch.equal(out["labels"], again["labels"])
    assert issubclass(EntropyMasker, SelectiveMasker) and EntropyMasker in MASKERS


def sparse_scores(feats, share, seed=0):
    """Keep ``share`` of the scores (the important tokens), zero the rest."""
    rng = np.random.default_rng(seed)
    for f in feats:
        s = np.asarray(f["scores"]) * (rng.random(len(f["scores"])) < share)
        f["scores"] = s.tolist()
    return feats


@pytest.mark.parametrize("whole_word", [True, False])
def test_selective_rate_and_split_hold_with_few_important_tokens(whole_word, split_tok):
    feats = sparse_scores(random_features(split_tok, scores=True), share=0.05)
    masker = SelectiveMasker(split_tok, whole_word=whole_word, seed=5, fill="random")
    rate, mask, rand, keep = rates(masker, feats, split_tok)
    assert abs(rate - 0.15) < 0.01
    assert abs(mask - 0.8) < 0.02 and abs(rand - 0.1) < 0.02 and abs(keep - 0.1) < 0.02
    # every important token is masked (5 % < the 15 % budget) and the fill differs from call to call
    specials = torch.tensor(split_tok.all_special_ids)
    for lo, (orig, out) in zip(range(0, N, 1000), run(masker, feats)):
        scores = pad_sequence(
            [torch.tensor(f["scores"]) for f in feats[lo : lo + 1000]], batch_first=True, padding_value=0.0
        )
        scores = torch.nn.functional.pad(scores, (0, orig.shape[1] - scores.shape[1]))
        important = (scores > 0) & ~torch.isin(orig, specials)
        if whole_word:  # a word is important when any of its pieces is
            words = pad_sequence(
                [torch.tensor(wordpiece_word_ids(f["input_ids"], split_tok)) for f in feats[lo : lo + 1000]],
                batch_first=True,
                padding_value=-1,
            )
            words = torch.nn.functional.pad(words, (0, orig.shape[1] - words.shape[1]), value=-1)
            key = torch.arange(len(words)).unsqueeze(1) * 1000 + words.clamp_min(0)
            hot = torch.zeros(int(key.max()) + 1, dtype=torch.bool).index_put_((key[important],), torch.tensor(True))
            important = hot[key] & (words >= 0)
        budget = torch.round((out["attention_mask"].bool() & ~torch.isin(orig, specials)).sum(1) * 0.15)
        fits = important.sum(1) <= budget  # the important words, whole, fit in the budget: all are masked
        assert fits.float().mean() > 0.5
        assert (out["labels"] != -100)[important & fits.unsqueeze(1)].all()
    a, b = masker(feats[:200]), masker(feats[:200])
    assert not torch.equal(a["labels"], b["labels"])


def test_selective_prefers_important_words_and_never_splits_them(split_tok):
    feats = word_features(split_tok, n=2000)
    rng = np.random.default_rng(0)
    for f in feats:  # one score per word, shared by its pieces
        word_score = rng.random(max(f["word_ids"]) + 1)
        f["scores"] = [0.0 if w < 0 else float(word_score[w]) for w in f["word_ids"]]
    masker = SelectiveMasker(split_tok, mlm_probability=0.3, replace_prob=1.0, random_prob=0.0, keep_prob=0.0)
    rate, _, _, _ = rates(masker, feats, split_tok)
    assert abs(rate - 0.3) < 0.01
    for lo, (_, out) in zip(range(0, 2000, 1000), run(masker, feats)):
        chunk = feats[lo : lo + 1000]
        words = pad_sequence([torch.tensor(f["word_ids"]) for f in chunk], batch_first=True, padding_value=-1)
        scores = pad_sequence([torch.tensor(f["scores"]) for f in chunk], batch_first=True, padding_value=0.0)
        sel = out["labels"] != -100
        for r in range(len(chunk)):
            w, s = words[r][words[r] >= 0], scores[r][words[r] >= 0]
            chosen = sel[r, : len(words[r])][words[r] >= 0]
            for word in w.unique():  # whole words: all pieces or none
                assert chosen[w == word].all() or not chosen[w == word].any()
            if chosen.any() and (~chosen).any():  # no unmasked word outranks a masked one (all score > 0)
                assert s[chosen].min() >= s[~chosen].max() or chosen.sum() <= 1


def test_fill_none_masks_only_important_words_and_reports_it(split_tok):
    feats = sparse_scores(random_features(split_tok, n=2000, scores=True), share=0.05)
    specials, counts = torch.tensor(split_tok.all_special_ids), {}
    for fill in ("none", "random"):
        masker = SelectiveMasker(split_tok, whole_word=False, seed=5, fill=fill)
        counts[fill] = torch.zeros(3, dtype=torch.float64)
        for lo, (orig, out) in zip(range(0, 2000, 1000), run(masker, feats)):
            scores = pad_sequence([torch.tensor(f["scores"]) for f in feats[lo : lo + 1000]], batch_first=True)
            scores = torch.nn.functional.pad(scores, (0, orig.shape[1] - scores.shape[1]))
            sel, maskable = out["labels"] != -100, out["attention_mask"].bool() & ~torch.isin(orig, specials)
            expected = [sel.sum(), maskable.sum(), (sel & (scores > 0) & maskable).sum()]
            assert out["mask_stats"].tolist() == [float(x) for x in expected]
            counts[fill] += out["mask_stats"]
    none, rand = counts["none"], counts["random"]
    # fill none: every masked token is important and the rate falls to the important share (5 % < 15 %)
    assert none[2] == none[0] and abs(none[0] / none[1] - 0.05) < 0.01
    # fill random: the budget is met, and about a third of it is important (5 of 15 %)
    assert abs(rand[0] / rand[1] - 0.15) < 0.01 and abs(rand[2] / rand[0] - 1 / 3) < 0.03
    with pytest.raises(BertlabError, match="fill must be one of none, random, got 'all'"):
        SelectiveMasker(split_tok, fill="all")


def test_entropy_masks_vary_by_epoch_and_selective_top_words_do_not(tok):
    feats = random_features(tok, n=200, scores=True)
    selective, entropy = SelectiveMasker(tok, whole_word=False), EntropyMasker(tok, whole_word=False)
    assert entropy.temperature > 0 and entropy.fill == "random" and selective.fill == "none"
    labels = {}
    for name, masker in (("selective", selective), ("entropy", entropy)):
        epochs = []
        for epoch in (0, 1):
            masker.set_epoch(epoch)
            epochs.append(masker(feats)["labels"] != -100)
        labels[name] = epochs
    assert torch.equal(*labels["selective"])  # T = 0: the same top words every epoch (static)
    overlap = (labels["entropy"][0] & labels["entropy"][1]).sum() / labels["entropy"][0].sum()
    assert 0.2 < overlap < 0.9  # sampled: the masks differ by epoch but still favour high scores


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.5])
def test_bad_mlm_probability(p, tok):
    with pytest.raises(BertlabError, match="mlm_probability"):
        DynamicMasker(tok, mlm_probability=p)


def test_bad_split_and_names(tok):
    with pytest.raises(BertlabError, match="sum to 1"):
        DynamicMasker(tok, replace_prob=0.7, random_prob=0.1, keep_prob=0.1)
    with pytest.raises(BertlabError, match="keep_prob"):
        DynamicMasker(tok, replace_prob=0.9, random_prob=0.2, keep_prob=-0.1)
    with pytest.raises(BertlabError, match="dupe_factor"):
        StaticMasker(tok, dupe_factor=0)


def test_missing_inputs(tok):
    feats = [{"input_ids": [2, 10, 11, 3]}]
    with pytest.raises(BertlabError, match="idx"):
        StaticMasker(tok)(feats)
    with pytest.raises(BertlabError, match="scores"):
        EntropyMasker(tok)(feats)


def test_jieba_word_ids_group_characters_of_a_word():
    import jieba

    text = "我爱北京天安门，今天天气很好"
    offsets = [(0, 0)] + [(i, i + 1) for i in range(len(text))] + [(0, 0)]
    ids = jieba_word_ids(text, offsets)
    assert ids[0] == ids[-1] == -1
    expected = [w for w_id, word in enumerate(jieba.lcut(text)) for w in [w_id] * len(word)]
    assert ids[1:-1] == expected
    assert ids[1:8] == [0, 1, 2, 2, 3, 3, 3]  # 我 / 爱 / 北京 / 天安门


def test_jieba_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)
    with pytest.raises(BertlabError, match="pip install jieba"):
        jieba_word_ids("北京", [(0, 1), (1, 2)])

"""Back-translation plumbing (datamodules/augment/back_translation.py) with two tiny random MarianMT
models built here: outputs are strings, counts and determinism hold, and the disk cache spares a re-run."""

from __future__ import annotations

import pytest

from bertlab.core.errors import BertlabError
from datamodules.augment import BackTranslation, build_augmenter
from tests.conftest import make_texts


def build_tiny_marian(out_dir: str, texts: list[str], seed: int) -> str:
    """A 1-layer, 16-wide random MarianMT with a WordLevel fast tokenizer trained on ``texts``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    ).save_pretrained(out_dir)
    config = MarianConfig(
        vocab_size=tok.get_vocab_size(),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=eos,
        decoder_start_token_id=0,
        forced_eos_token_id=eos,
    )
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def marian_dirs(tmp_path_factory):
    texts = make_texts(60, seed=5)[0]
    return tuple(
        build_tiny_marian(str(tmp_path_factory.mktemp(name)), texts, seed) for name, seed in [("fwd", 1), ("bwd", 2)]
    )


@pytest.fixture(scope="module")
def texts():
    return make_texts(5, seed=9)[0]


def counting(monkeypatch):
    calls = []
    original = BackTranslation._translate

    def wrapper(self, direction, rows, *args, **kwargs):
        calls.append((direction, len(rows)))
        return original(self, direction, rows, *args, **kwargs)

    monkeypatch.setattr(BackTranslation, "_translate", wrapper)
    return calls


def test_round_trip_gives_n_aug_strings_deterministically(marian_dirs, texts):
    bt = BackTranslation(*marian_dirs, n_aug=2, batch_size=4, max_length=12)
    out = bt(texts + ["", "coffee"], seed=0)
    assert [len(v) for v in out] == [2] * (len(texts) + 2)
    assert out[len(texts)] == ["", ""]
    assert all(isinstance(v, str) and v.strip() for vs in out[: len(texts)] + out[-1:] for v in vs)
    assert any(v != t for t, vs in zip(texts, out) for v in vs)
    # each row samples with its own generator: same result from a fresh instance, any batch size, any order
    again = BackTranslation(*marian_dirs, n_aug=2, batch_size=1, max_length=12)(texts[::-1], seed=0)
    assert again == out[: len(texts)][::-1]
    assert BackTranslation(*marian_dirs, n_aug=2, max_length=12, sampling_seed=1)(texts, seed=0) != out[: len(texts)]


def test_beam_search_mode(marian_dirs, texts):
    bt = BackTranslation(*marian_dirs, n_aug=2, do_sample=False, num_beams=2, max_length=12)
    out = bt(texts, seed=0)
    assert [len(v) for v in out] == [2] * len(texts) and out == bt(texts, seed=5)


def test_disk_cache_spares_a_rerun(marian_dirs, texts, tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    first = BackTranslation(*marian_dirs, n_aug=2, max_length=12, cache_dir=str(tmp_path))(texts + texts[:2], seed=0)
    assert calls == [("forward", 2 * len(texts)), ("backward", 2 * len(texts))]  # duplicates translated once
    calls.clear()
    rerun = BackTranslation(*marian_dirs, n_aug=2, max_length=12, cache_dir=str(tmp_path))
    assert rerun(texts + texts[:2], seed=1) == first
    assert calls == [] and rerun._models == {}  # no model even loaded
    rerun(texts + ["the tea was lovely"], seed=0)
    assert calls == [("forward", 2), ("backward", 2)]  # only the new text
    calls.clear()
    BackTranslation(*marian_dirs, n_aug=2, max_length=10, cache_dir=str(tmp_path))(texts[:1], seed=0)
    assert calls == [("forward", 2), ("backward", 2)]  # other settings, other key


def test_needs_two_model_directories(marian_dirs, tmp_path):
    with pytest.raises(
        BertlabError, match="needs two local seq2seq model directories.*missing: forward_model_dir, backward_model_dir"
    ):
        build_augmenter("back_translation")
    with pytest.raises(BertlabError, match=r"\(missing: backward_model_dir\)$"):
        BackTranslation(marian_dirs[0])
    with pytest.raises(BertlabError, match=r"\(missing: forward_model_dir\)$"):
        BackTranslation(backward_model_dir=marian_dirs[1])
    with pytest.raises(BertlabError, match="not a model directory"):
        BackTranslation(marian_dirs[0], str(tmp_path))
    with pytest.raises(BertlabError, match="num_beams"):
        BackTranslation(*marian_dirs, n_aug=3, do_sample=False, num_beams=2)
    with pytest.raises(BertlabError):
        BackTranslation(*marian_dirs, top_p=1.5)


def test_fingerprint_names_models_and_decoding(marian_dirs):
    fp = BackTranslation(*marian_dirs).fingerprint()
    assert marian_dirs[0] in fp and marian_dirs[1] in fp and "top_p=0.95" in fp
    assert fp == BackTranslation(*marian_dirs, batch_size=3).fingerprint()  # batching does not change outputs
    assert fp != BackTranslation(*marian_dirs, temperature=0.7).fingerprint()

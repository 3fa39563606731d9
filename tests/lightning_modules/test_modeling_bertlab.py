"""The export's custom code computes what bertlab's heads and fusions compute, number for number, and
stands alone: it imports torch and transformers only, never bertlab."""

from __future__ import annotations

import ast

import pytest
import torch

from lightning_modules import heads, knowledge, modeling_bertlab, pipeline_bertlab

B, T, H, L = 3, 7, 16, 4
HEADS = [
    ("cls", {}),
    ("mean", {}),
    ("concat_last_k", {"k": 3}),
    ("mean_last_k", {"k": 2}),
    ("max_last_k", {}),
    ("concat_all", {}),
    ("layer_cnn", {}),
    ("layer_cnn", {"kernel_sizes": [1, 4], "num_filters": 5, "dropout": 0.3}),
    ("layer_cnn", {"kernel_sizes": [2], "token": "mean"}),
]


def hidden_and_mask():
    g = torch.Generator().manual_seed(0)
    hidden = tuple(torch.randn(B, T, H, generator=g) for _ in range(L + 1))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return hidden, mask


def test_every_head_is_covered():
    assert {name for name, _ in HEADS} == set(heads.HEADS)


@pytest.mark.parametrize("name,kwargs", HEADS)
def test_heads_are_numerically_identical(name, kwargs):
    torch.manual_seed(1)
    ours = heads.build_head(name, H, L, **kwargs).eval()
    shipped = modeling_bertlab.build_head(name, H, L, kwargs).eval()
    shipped.load_state_dict(ours.state_dict(), strict=True)
    hidden, mask = hidden_and_mask()
    a, b = ours(hidden, mask), shipped(hidden, mask)
    assert a.shape == (B, ours.out_dim) and torch.equal(a, b)
    assert a.abs().sum() > 0


@pytest.mark.parametrize("name", ["after_encoder", "embedding"])
def test_fusions_are_numerically_identical(name):
    torch.manual_seed(2)
    ours = knowledge.build_fusion(name, 5, H)
    shipped = modeling_bertlab.FUSIONS[name](5, H)
    shipped.load_state_dict(ours.state_dict(), strict=True)
    assert shipped.site == ours.site
    x = torch.randn(B, T, H) if name == "embedding" else torch.randn(B, H)
    k = torch.randn(B, 5)
    assert torch.equal(ours(x, k), shipped(x, k))


@pytest.mark.parametrize("code", [modeling_bertlab, pipeline_bertlab])
def test_the_custom_code_imports_no_project_code(code):
    with open(code.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    top = {name.split(".")[0] for name in names}
    assert top <= {"__future__", "json", "os", "torch", "transformers", "vaderSentiment"}, top
    assert "torch" in top and not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))


def test_the_pipeline_cuts_texts_as_training_does(tiny_bert_dir):
    from bertlab.core.models import load_tokenizer
    from datamodules.token_cache import tokenize

    tok = load_tokenizer(tiny_bert_dir)
    template = pipeline_bertlab.special_template(tok)
    a = ["great tea " * 9 + "and a very stale box", "bland", "tasty " * 30]
    b = ["the kids bought it again " * 4, "lovely " * 20, "ok"]
    for truncation in ("head", "tail", "head_tail"):
        for pairs in (None, b):
            ids, types = tokenize(tok, a, pairs, 16, truncation, None)
            shipped = pipeline_bertlab.BertlabTextClassificationPipeline.__new__(
                pipeline_bertlab.BertlabTextClassificationPipeline
            )
            shipped.tokenizer, shipped.template = tok, template
            shipped.cutting = {"max_length": 16, "truncation": truncation, "head_tokens": None}
            for n, text in enumerate(a):
                got = shipped.encode(text, pairs[n] if pairs else None)
                assert got["input_ids"][0].tolist() == ids[n], (truncation, pairs is not None, n)
                if types is not None:
                    assert got["token_type_ids"][0].tolist() == types[n]
    assert max(len(i) for i in ids) == 16 and len(ids[0]) < len(tok(a[0])["input_ids"])  # the cut bit

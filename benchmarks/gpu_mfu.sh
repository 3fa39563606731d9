#!/usr/bin/env bash
# BERT-base-sized masked-LM training (random init, 110M parameters) on one GPU through the CLI:
# tokens/s and model FLOP utilisation (MFU) from callbacks.step_timer.StepTimer, written to
# runs/bench/gpu_mfu.json. Needs a CUDA GPU with bf16.
#   PEAK_TFLOPS  the GPU's dense bf16 peak (H100/H200 SXM: 989; A100: 312)
#   ACCELERATOR=cpu STEPS=3 BATCH=2 COMPILE=false WARMUP=1  a smoke run of the same command on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/bertlab" fit --config configs/mlm/fine_food_tapt.yaml \
  --model.init_args.from_scratch '{tokenizer: minilm, hidden_size: 768, num_hidden_layers: 12,
      num_attention_heads: 12, intermediate_size: 3072}' \
  --model.init_args.compile "${COMPILE:-true}" \
  --trainer.accelerator "${ACCELERATOR:-gpu}" --trainer.devices 1 --trainer.precision bf16-mixed \
  --trainer.max_steps "${STEPS:-80}" --trainer.limit_val_batches 0 --trainer.enable_checkpointing false \
  --data.init_args.mode packed --data.init_args.batch_size "${BATCH:-256}" \
  --trainer.callbacks+=callbacks.step_timer.StepTimer --trainer.callbacks.warmup "${WARMUP:-30}" \
  --trainer.callbacks.peak_tflops "${PEAK_TFLOPS:-989}" --trainer.callbacks.output_path runs/bench/gpu_mfu.json \
  --trainer.default_root_dir runs/bench/gpu --wandb.tags '[bench, gpu]'
python3 -c "import json; d = json.load(open('runs/bench/gpu_mfu.json')); \
print(f\"{d.get('tokens_per_s', 0):,.0f} tokens/s, {d.get('model_tflops_per_s', 0):.1f} TFLOP/s, MFU {d.get('mfu', 0):.1%}\")"

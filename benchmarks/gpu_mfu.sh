#!/usr/bin/env bash
# BERT-base-sized masked-LM training (random init, 110M parameters) on one GPU through the CLI:
# tokens/s and model FLOP utilisation (MFU) from callbacks.step_timer.StepTimer, written to
# $OUT (runs/bench/gpu_mfu.json). Needs a CUDA GPU with bf16. Arguments after the script go to `bertlab fit`.
#   PEAK_TFLOPS  the GPU's dense bf16 peak (H100/H200 SXM: 989; A100: 312)
#   HIDDEN LAYERS HEADS FFN  the encoder's size (default BERT-base: 768 12 12 3072)
# CPU smoke form (seconds; run by tests/benchmarks/test_smoke.py):
#   ACCELERATOR=cpu PRECISION=32-true STEPS=3 BATCH=2 COMPILE=false WARMUP=1 HIDDEN=32 LAYERS=1 HEADS=2 FFN=64 \
#     benchmarks/gpu_mfu.sh --data.init_args.max_documents 64
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/bench/gpu_mfu.json}
"$BIN/python" -m bertlab fit --config configs/mlm/fine_food_tapt.yaml \
  --model.init_args.from_scratch "{tokenizer: minilm, hidden_size: ${HIDDEN:-768}, num_hidden_layers: ${LAYERS:-12},
      num_attention_heads: ${HEADS:-12}, intermediate_size: ${FFN:-3072}}" \
  --model.init_args.compile "${COMPILE:-true}" \
  --trainer.accelerator "${ACCELERATOR:-gpu}" --trainer.devices 1 --trainer.precision "${PRECISION:-bf16-mixed}" \
  --trainer.max_steps "${STEPS:-80}" --trainer.limit_val_batches 0 \
  --data.init_args.mode packed --data.init_args.loader.batch_size "${BATCH:-256}" \
  --trainer.callbacks+=callbacks.step_timer.StepTimer --trainer.callbacks.warmup "${WARMUP:-30}" \
  --trainer.callbacks.peak_tflops "${PEAK_TFLOPS:-989}" --trainer.callbacks.output_path "$OUT" \
  --trainer.default_root_dir "$(dirname "$OUT")/gpu" --wandb.tags '[bench, gpu]' "$@"
"$BIN/python" -c "import json, sys; d = json.load(open(sys.argv[1])); \
print(f\"{d.get('tokens_per_s', 0):,.0f} tokens/s, {d.get('model_tflops_per_s', 0):.1f} TFLOP/s, MFU {d.get('mfu', 0):.1%}\")" "$OUT"

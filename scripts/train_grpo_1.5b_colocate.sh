#!/usr/bin/env bash
# GRPO on a math prompt set with Qwen2.5-1.5B, one node, everything colocated, trajectories on.
#
# Hardware: 1 node x 8 GPUs of 80 GB (A100/H100). Actor (ZeRO-2), reference and 8 vLLM engines
# (TP 1) share each GPU through one placement group (--colocate_all_models); vLLM sleeps while
# DeepSpeed trains. Expect ~1-2 min per step at these sizes (128 prompts x 8 samples, responses up
# to 2k tokens): generation takes most of it; the saver adds well under 1%.
#
# Data: a jsonl with {"prompt": ..., "answer": ...} rows (e.g. MATH or GSM8K); the default reward is
# math-verify on the final answer against "answer".
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
DATA=${DATA:-data/math_train.jsonl}
SAVE=${SAVE:-./ckpt/qwen2.5-1.5b-grpo}

python train_colocate.py \
  --pretrain "$MODEL" --prompt_data "$DATA" --input_key prompt --label_key answer --apply_chat_template \
  --advantage_estimator group_norm --n_samples_per_prompt 8 \
  --rollout_batch_size 128 --micro_rollout_batch_size 16 \
  --train_batch_size 1024 --micro_train_batch_size 8 --max_epochs 1 --num_episodes 1 \
  --prompt_max_len 1024 --generate_max_len 2048 --temperature 1.0 --top_p 1.0 \
  --actor_learning_rate 1e-6 --init_kl_coef 1e-3 --use_kl_loss --kl_estimator k3 --eps_clip 0.2 \
  --actor_num_nodes 1 --actor_num_gpus_per_node 8 --ref_num_nodes 1 --ref_num_gpus_per_node 8 \
  --vllm_num_engines 8 --vllm_tensor_parallel_size 1 --vllm_gpu_memory_utilization 0.5 --vllm_enable_sleep \
  --colocate_all_models --rollout_backend vllm \
  --zero_stage 2 --bf16 --gradient_checkpointing --seed 42 \
  --save_path "$SAVE" --ckpt_path "$SAVE/checkpoints" --save_steps 20 --load_checkpoint \
  --logging_steps 1 --use_tensorboard "$SAVE/tensorboard" \
  --save_trajectories --num_trajectories_to_save 32 --mark_high_entropy_tokens \
  --high_entropy_token_ratio 0.2 --trajectory_save_steps 1 --save_entropy_trace \
  "$@"

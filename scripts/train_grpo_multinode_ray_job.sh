#!/usr/bin/env bash
# GRPO on 2 nodes through `ray job submit` (the OpenRLHF way of launching multi-node runs).
#
# Hardware: 2 nodes x 8 GPUs of 80 GB, a shared filesystem for --save_path (checkpoints and
# trajectories are written from the controller and rank 0). Model: a 7B policy (Qwen2.5-7B);
# expect ~3-5 min per step at 256 prompts x 8 samples, 2k-token responses.
#
# Before: on the head node `ray start --head --node-ip-address $HEAD_IP --num-gpus 8`, on the other
# `ray start --address $HEAD_IP:6379 --num-gpus 8`. Then run this script on the head node.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-/shared/data/math_train.jsonl}
SAVE=${SAVE:-/shared/ckpt/qwen2.5-7b-grpo}

ray job submit --address="http://127.0.0.1:8265" \
  --runtime-env-json='{"working_dir": "."}' \
  -- python train_colocate.py \
  --pretrain "$MODEL" --prompt_data "$DATA" --input_key prompt --label_key answer --apply_chat_template \
  --advantage_estimator group_norm --n_samples_per_prompt 8 \
  --rollout_batch_size 256 --micro_rollout_batch_size 16 \
  --train_batch_size 2048 --micro_train_batch_size 4 \
  --prompt_max_len 1024 --generate_max_len 2048 \
  --actor_learning_rate 5e-7 --init_kl_coef 1e-3 --use_kl_loss --kl_estimator k3 \
  --actor_num_nodes 2 --actor_num_gpus_per_node 8 --ref_num_nodes 2 --ref_num_gpus_per_node 8 \
  --vllm_num_engines 16 --vllm_tensor_parallel_size 1 --vllm_gpu_memory_utilization 0.5 --vllm_enable_sleep \
  --colocate_all_models --rollout_backend vllm \
  --zero_stage 2 --bf16 --gradient_checkpointing \
  --save_path "$SAVE" --save_steps 10 --load_checkpoint --use_tensorboard "$SAVE/tensorboard" \
  --save_trajectories --num_trajectories_to_save 64 --mark_high_entropy_tokens --save_entropy_trace \
  "$@"

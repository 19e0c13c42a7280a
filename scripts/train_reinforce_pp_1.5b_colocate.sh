#!/usr/bin/env bash
# REINFORCE++ (with a group baseline: reinforce_baseline) on math prompts with Qwen2.5-1.5B, one
# node, everything colocated, trajectories on, and the policy loss restricted to the 20% highest-
# entropy tokens of each step ("Beyond the 80/20 Rule", arXiv 2506.01939).
#
# Hardware: 1 node x 8 GPUs of 80 GB (A100/H100). Expect ~1-2 min per step at these sizes
# (128 prompts x 4 samples, responses up to 2k tokens); KL is a reward penalty here (no --use_kl_loss).
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
DATA=${DATA:-data/math_train.jsonl}
SAVE=${SAVE:-./ckpt/qwen2.5-1.5b-reinforce-pp}

python train_colocate.py \
  --pretrain "$MODEL" --prompt_data "$DATA" --input_key prompt --label_key answer --apply_chat_template \
  --advantage_estimator reinforce_baseline --n_samples_per_prompt 4 \
  --rollout_batch_size 128 --micro_rollout_batch_size 16 \
  --train_batch_size 512 --micro_train_batch_size 8 --max_epochs 1 --num_episodes 1 \
  --prompt_max_len 1024 --generate_max_len 2048 --temperature 1.0 \
  --actor_learning_rate 5e-7 --init_kl_coef 1e-3 --kl_estimator k2 --eps_clip 0.2 \
  --policy_loss_entropy_top_ratio 0.2 \
  --actor_num_nodes 1 --actor_num_gpus_per_node 8 --ref_num_nodes 1 --ref_num_gpus_per_node 8 \
  --vllm_num_engines 8 --vllm_tensor_parallel_size 1 --vllm_gpu_memory_utilization 0.5 --vllm_enable_sleep \
  --colocate_all_models --rollout_backend vllm \
  --zero_stage 2 --bf16 --gradient_checkpointing --seed 42 \
  --save_path "$SAVE" --save_steps 20 --load_checkpoint --use_tensorboard "$SAVE/tensorboard" \
  --save_trajectories --num_trajectories_to_save 32 --mark_high_entropy_tokens --high_entropy_token_ratio 0.2 \
  "$@"

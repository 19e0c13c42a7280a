#!/usr/bin/env bash
# GRPO with verl on GSM8K, saving every step's trajectories (per-token entropy, high-entropy marks)
# for viewer/render_trajectories.html.
#
# It is verl's own GRPO recipe launched through openrlhf_ext.integrations.verl instead of
# verl.trainer.main_ppo: the same Hydra overrides, plus the +trainer.trajectory_saver.* keys (named
# as train_colocate.py's flags). Files: <trainer.default_local_dir>/trajectories/.
#
# Needs: verl >= 0.7 with its GPU stack (vLLM, FSDP), and openrlhf_ext installed on every node
# (pip install -e /path/to/openrlhf-ext). verl >= 0.9 needs trainer.use_v1=false: the saver hooks
# RayPPOTrainer, not 0.9's new v1 trainer ("++" adds the key on 0.7-0.8, which lack it).
# Hardware: 1 node x 8 GPUs of 80 GB.
# Data: verl's examples/data_preprocess/gsm8k.py writes the two parquet files.
# Cost: no extra forward pass (the entropy is verl's own, from the old-log-prob pass, at the rollout
# temperature); the saver adds well under 1% of a step on the driver (docs/integrations.md).
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-3B-Instruct}
DATA=${DATA:-$HOME/data/gsm8k}
SAVE=${SAVE:-./checkpoints/verl-grpo-gsm8k}

python3 -m openrlhf_ext.integrations.verl \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=1024 \
    data.max_prompt_length=512 \
    data.max_response_length=1024 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=40 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.n=5 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=40 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=40 \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    trainer.logger='["console"]' \
    trainer.project_name=verl_grpo_gsm8k \
    trainer.experiment_name=qwen2_5_3b_trajectories \
    trainer.default_local_dir="$SAVE" \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=5 \
    trainer.total_epochs=15 \
    ++trainer.use_v1=false \
    +trainer.trajectory_saver.save_trajectories=true \
    +trainer.trajectory_saver.num_trajectories_to_save=32 \
    +trainer.trajectory_saver.mark_high_entropy_tokens=true \
    +trainer.trajectory_saver.high_entropy_token_ratio=0.2 \
    +trainer.trajectory_saver.trajectory_sampling=groups \
    +trainer.trajectory_saver.save_entropy_trace=true \
    "$@"

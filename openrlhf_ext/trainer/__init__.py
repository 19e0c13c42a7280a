"""The controller's loop: `PPOTrainer` (ppo_trainer.py) runs the plain functions of one step
(stages.py) and saves checkpoints (checkpoint.py). It drives the Ray groups of openrlhf_ext/ray/."""

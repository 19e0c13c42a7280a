"""The RL algorithm in pure torch (no Ray, no DeepSpeed): advantage estimators (advantages.py), the
KL estimators (kl.py), the policy and value losses (losses.py) and the Experience (experience.py).

Everything here takes tensors and returns tensors, so it is tested with numbers worked out by hand."""

"""Drop-ins for the trainers people already use: each saves that trainer's rollouts with the
trajectory saver (per-token entropy, high-entropy marks, lossless texts), the same run folder the
viewer opens. One module per trainer, each importing its trainer only when used:

- ``openrlhf_ext.integrations.verl``: ``RayPPOTrainer`` subclass and TaskRunner (verl >= 0.7).
- ``openrlhf_ext.integrations.openrlhf``: PPO actor for upstream OpenRLHF (0.8.3 - 0.11.x).

See docs/integrations.md.
"""

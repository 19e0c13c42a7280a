"""The offline tools of ``openrlhf-traj``: validate, stats, report (one-file HTML), convert (npz
entropy traces and rollout JSONL dumps into trajectory files). Used after training, never inside it.
"""

"""Command-line entry points: the trainer's flags (`train_args`)."""

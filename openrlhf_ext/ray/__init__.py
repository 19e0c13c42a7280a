"""Ray plumbing: placement groups and actor groups (launcher), the model-holding workers, DeepSpeed set-up."""

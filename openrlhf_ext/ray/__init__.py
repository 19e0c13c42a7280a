"""Ray plumbing: placement groups and actor groups (launcher), every group of a run (groups:
`RayGroups`, `build_groups`), the model-holding workers, the DeepSpeed set-up and the update loop
the workers run (update)."""

"""Utilities below every other package: the compute device, masked tensor reductions, step logging
(tqdm, console, TensorBoard, W&B)."""

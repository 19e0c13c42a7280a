"""Utilities: step logging (tqdm, console, TensorBoard, W&B)."""

"""Rollout engines (vLLM, Hugging Face generate) and the packing of their token ids into tensors."""

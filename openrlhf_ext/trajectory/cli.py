"""Where ``openrlhf-traj`` lived before the tools moved to ``trajectory/tools/``: a console script
installed from an older checkout imports ``main`` from here, and keeps working until reinstalled."""
from .tools.cli import main  # noqa: F401

"""``python -m openrlhf_ext.trajectory``: the ``openrlhf-traj`` command."""
from .tools.cli import main

raise SystemExit(main())

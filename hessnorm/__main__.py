"""``python -m hessnorm ...`` and ``torchrun --nproc-per-node N -m hessnorm analyze ...``.

The same command as the ``hessnorm`` script (:func:`hessnorm.cli.main`). Under
``torchrun``, ``analyze`` joins the process group torchrun describes and splits the
evaluation examples across the ranks (see :mod:`hessnorm.distributed`).
"""

import sys

from hessnorm.cli import main

if __name__ == "__main__":
    sys.exit(main())

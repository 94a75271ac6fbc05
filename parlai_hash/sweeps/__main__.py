"""``python -m parlai_hash.sweeps run|report|check|params ...`` (see ``cli``)."""

import sys

from parlai_hash.sweeps.cli import main

sys.exit(main())

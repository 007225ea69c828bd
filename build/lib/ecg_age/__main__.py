"""``python -m ecg_age``: the ``ecg-age`` command (ecg_age/cli.py)."""
import sys

from ecg_age.cli import main

sys.exit(main())

"""``python -m oarepo_s3_client`` = the ``oarepo-s3`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m imagine_ros.cli ARGS`` = ``imagine-ros ARGS``."""

import sys

from imagine_ros.cli import main

sys.exit(main())

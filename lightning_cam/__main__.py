import sys

from lightning_cam.cli import main

sys.exit(main())

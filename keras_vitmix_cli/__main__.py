"""`python -m keras_vitmix_cli …` is `keras-vitmix …`."""

import sys

from keras_vitmix_cli import main

sys.exit(main())

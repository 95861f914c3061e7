#!/usr/bin/env python3
"""Create the TLS certificates and SuperNode authentication keys of a fedsynth deployment.

The command line of ``fedsynth.server.certs`` (run ``python deploy/make_certs.py --help``); needs
fedsynth installed, as every machine of a deployment has it.
"""

import sys

from fedsynth.server.certs import main

if __name__ == "__main__":
    sys.exit(main())

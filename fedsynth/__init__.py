"""fedsynth: federated, differentially private synthetic tabular data.

The installed package maps the repository's top-level folders to subpackages:
``fedsynth.common`` (schema, accounting, models; no Flower), ``fedsynth.client``
(the ClientApp), ``fedsynth.server`` (the ServerApp and coordinator),
``fedsynth.protos`` and ``fedsynth.simulations``.
"""

__version__ = "0.1.0"

"""fedsynth: federated, differentially private synthetic tabular data.

The Python API (imported on first use, so ``import fedsynth`` stays light):

* :class:`FederatedSynthesizer` (``fedsynth.api``): the job's options in its constructor;
  ``fit(frames, out=...)`` runs the federation in Flower's simulation engine, one organisation
  per DataFrame; ``fit_remote(coordinator, parties=..., root_certificates=...)`` submits it to
  a running coordinator service. Both return the :class:`Release`.
* :class:`Release` (``fedsynth.server.release``): a release directory, its synthetic rows and
  its privacy statement.

The installed package maps the repository's top-level folders to subpackages:
``fedsynth.common`` (schema, accounting, models; no Flower), ``fedsynth.client``
(the ClientApp), ``fedsynth.server`` (the ServerApp and coordinator),
``fedsynth.protos`` and ``fedsynth.simulations``.
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["FederatedSynthesizer", "Release", "__version__"]

_LAZY = {"FederatedSynthesizer": "fedsynth.api", "Release": "fedsynth.server.release"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedsynth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

"""Federated prompt learning on Flower (``pip install 'vitkit[federated]'``; simulation: ``vitkit[federated-sim]``).

The only vitkit package that imports ``flwr``. :mod:`.task` holds the plain-PyTorch site work (config,
data bundle, local training, evaluation), :mod:`.apps` the Flower ClientApp/ServerApp, :mod:`.grid` an
in-process Flower Grid (no ray), :mod:`.runner` the three ways to run: in-process, Flower's simulation
engine, and real SuperLink/SuperNode processes on loopback.
"""

from .task import BundleConfig, FedConfig, prepare_bundle

__all__ = ["BundleConfig", "FedConfig", "prepare_bundle"]

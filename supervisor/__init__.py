"""frugal-supervisor: a local-first, cost-native supervisor for unattended AI agents."""

__version__ = "0.1.0"

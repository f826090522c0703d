"""Offline tools behind the ``tiergate`` command line: scorer training, evaluation, calibration
and replay, the inference benchmark, model evaluation, fit checks and the demo. The service never
imports this package (an import-linter contract holds it)."""

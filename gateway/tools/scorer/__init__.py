"""Judging and tuning the scorer offline: labelled prompts, RouteLLM-style quality metrics (APGR,
CPT), training, evaluation, threshold calibration and policy replay. Training imports numpy and
scikit-learn, plots import matplotlib (the ``train`` extra)."""

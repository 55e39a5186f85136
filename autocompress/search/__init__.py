"""The Optuna search: settings, the trial objective, the study and its outputs."""

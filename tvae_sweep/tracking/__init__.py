"""MLflow tracking of sweeps: a parent run per sweep, a child run per trial, aggregated results.

The driver does all the logging: trials never talk to MLflow, their images are read from the
checkpoints they write to the sweep's storage path. Everything here imports MLflow; the core and the
sweep layer do not.
"""

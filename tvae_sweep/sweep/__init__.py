"""The sweep layer: specs, the Optuna search space, the Ray Tune trainable, launch and resume.

It turns specs into trials and knows nothing of TVAE maths; the core package trains each trial.
"""

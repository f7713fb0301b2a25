"""Studies: search spaces, Ray Tune + Optuna sweeps, and reports read back from MLflow."""

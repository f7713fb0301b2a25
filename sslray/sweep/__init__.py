"""Studies: search spaces, Ray Tune + Optuna sweeps with their floor and ceiling baseline runs and
each trial's stop reason, and reports (tables and figures) read back from MLflow."""

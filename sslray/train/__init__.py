"""The shared training loop and the run orchestration around it."""

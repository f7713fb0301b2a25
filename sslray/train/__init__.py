"""The shared training loop and the run orchestration around it: a config built into a run once
(:mod:`.build`), launched in-process or on Ray Train, with checkpoints, batches fed to the device
one step ahead, and the evaluation recorded after training."""

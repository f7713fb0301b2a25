"""sslray: run, sweep and compare self-supervised learning methods for images on Ray.

Vocabulary: a *method* trains a *trunk* with a *head* and a *loss*; an *evaluation* probes named
layers of the trunk; a *study* sweeps a *search space*; MLflow stores every run.
"""

__version__ = "0.1.0"

LAYERS = ("conv1", "res2", "res3", "res4", "res5")

"""Building blocks that work on their own, outside any method: losses (contrastive, negative-free,
soft targets), heads and a light decoder, augmentations, the memory bank, MoCo's queue and EMA,
shuffled batch norm, permutation sets and tiles, rotations, k-means, Lab colour, the audio
subnetwork, Langevin sampling and its replay buffer, occlusion maps, the step from a data batch to
a model's input and a frozen trunk's scan of a source, and the collectives that keep ranks in step.
Methods compose them; nothing here knows about the training loop."""

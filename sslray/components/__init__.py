"""Building blocks that work on their own, outside any method: permutation sets, tiling, memory
bank, losses. Methods compose them; nothing here knows about the training loop."""

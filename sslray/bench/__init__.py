"""``sslray bench NAME``: what the platform costs, as ratios measured back to back in one process.

One module per benchmark, each with ``HELP``, ``TARGET``, ``add_arguments(parser)`` (the flags
that benchmark takes) and ``run(args)``, which prints a short table and one headline
``RATIO <name> = <value> (target <= X: met|not met)``; ``--json PATH`` writes the same figures.
Shared timing code is in :mod:`sslray.bench._timing`.

On a machine shared with other work, use ``--threads 1``: with more torch threads than idle cores,
every parallel op waits for a descheduled thread and steps get slower and far noisier (measured:
10x and more on 2 busy cores).
"""

from __future__ import annotations

import os

from . import data, evaluation, gpu, negatives, search, step, trial

BENCHMARKS = {"step": step, "eval": evaluation, "negatives": negatives, "trial": trial, "search": search,
              "data": data, "gpu": gpu}


def run(args) -> dict:
    import torch

    if args.threads is not None and args.threads < 1:
        from ..errors import UserError

        raise UserError("bench: --threads must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load > cores - 0.5:
        print(f"note: busy machine (load {load:.1f} on {cores} cores) and {torch.get_num_threads()} torch threads: "
              "expect noisy timings; --threads 1 is steadier", flush=True)
    return BENCHMARKS[args.bench].run(args)

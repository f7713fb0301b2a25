"""The MLflow tags sslray writes and reads, by name in one place (and the two of MLflow's own it sets).

A run's tags say where it comes from: the method and data, its folder, the finished run it was
made from (``PARENT_TAG``, ``SOURCE_RUN_TAG``), the configuration it repeats with other seeds
(``GROUP_TAG``), what it is in a sweep (``ROLE_TAG``: study, trial or baseline) and why a trial
stopped (``STOP_TAG`` and friends, see :mod:`sslray.sweep.stops`).
"""

from __future__ import annotations

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child under its parent

#: MLflow 3's record of what an experiment is for: ``custom_model_development`` ("Machine learning"
#: in the UI) or ``genai_development``. MLflow 3.17's UI picks an experiment's landing page from its
#: sidebar switch instead (see :mod:`sslray.tracking.ui`); the tag still says what the runs are.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"

# every run
METHOD_TAG = "sslray.method"
DATA_TAG = "sslray.data"
RUN_DIR_TAG = "sslray.run_dir"
SOURCE_RUN_TAG = "sslray.source_run"  # ClusterFit, Distill, Pretrained: the folder of the source run
COLLAPSED_TAG = "sslray.collapsed"  # "epoch <N>: <reason>": the epoch and rule of a representation collapse
#: how a rank collapse's reason begins (:func:`sslray.eval.health.collapse` writes the reasons)
COLLAPSE_RANK_REASON = "effective rank of pooled res5 features"
COLLAPSE_SCALE_REASON = "raw embedding std"  # the reason eval.health.collapse gives for a shrinking embedding
DATA_CORRUPT_TAG = "sslray.data.corrupt_first"  # the first unreadable training images a source replaced
GROUP_TAG = "sslray.group"  # one configuration's runs over seeds
SEEDS_TAG = "sslray.seeds"

# sweeps
ROLE_TAG = "sslray.role"  # "study", "trial" or "baseline"
STUDY_TAG = "sslray.study"
QUESTION_TAG = "sslray.question"
TRIAL_ID_TAG = "sslray.trial_id"
SEED_INDEX_TAG = "sslray.seed_index"
BEST_RUN_TAG = "sslray.best_run"
BASELINE_TAG = "sslray.baseline"
BASELINE_KEY_TAG = "sslray.baseline_key"
STOP_TAG, STOP_EPOCH_TAG = "sslray.stop", "sslray.stop_epoch"
STOP_ERROR_TAG, STOP_REASON_TAG = "sslray.stop_error", "sslray.stop_reason"


def baseline_run_tag(role: str) -> str:
    """The tag of a study's parent run naming its baseline run of ``role`` (floor, ceiling)."""
    return f"sslray.{role}_run"


def tag_is(tag: str, value: str) -> str:
    """An MLflow search filter: runs whose ``tag`` is ``value``."""
    return f"tags.`{tag}` = '{value}'"


def collapse_of(tag: str) -> tuple[int, str] | None:
    """``(epoch, rule)`` of a :data:`COLLAPSED_TAG` value, the rule ``rank``, ``embedding scale`` or
    ``embedding std``; None for no collapse."""
    if not tag.startswith("epoch "):
        return None
    head, _, reason = tag.partition(":")
    reason = reason.strip()
    rule = ("rank" if reason.startswith(COLLAPSE_RANK_REASON) else
            "embedding scale" if reason.startswith(COLLAPSE_SCALE_REASON) else "embedding std")
    return int(head.split()[1]), rule

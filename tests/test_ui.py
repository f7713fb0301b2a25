"""The MLflow UI as sslray hands it over: experiments marked as training, the addresses it prints."""

from __future__ import annotations

from sslray.tracking import Store
from sslray.tracking.store import KIND_TAG, TRAINING_KIND


def test_new_and_existing_experiments_are_marked_as_training():
    store = Store()
    new = store.experiment("fresh")
    assert store.client.get_experiment(new).tags[KIND_TAG] == TRAINING_KIND == "custom_model_development"
    old = store.client.create_experiment("older")  # as an older sslray (or a user) made it: no kind
    assert KIND_TAG not in store.client.get_experiment(old).tags
    assert store.experiment("older") == old
    assert store.client.get_experiment(old).tags[KIND_TAG] == TRAINING_KIND
    genai = store.client.create_experiment("agent", tags={KIND_TAG: "genai_development"})
    assert store.experiment("agent", create=False) == genai  # a kind someone chose is kept
    assert store.client.get_experiment(genai).tags[KIND_TAG] == "genai_development"
    assert store.experiment("never", create=False) is None and store.client.get_experiment_by_name("never") is None

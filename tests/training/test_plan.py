"""Planning a run (settings and split, new or resumed) and registering its bundle."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from core.training.data import ClipRef
from core.training.labels import DatasetError
from core.training.loop import TrainingConfig
from core.training.plan import RunOptions, default_run_dir, plan_new_run, plan_resumed_run
from core.training.run import RUN_FILE, SPLIT_FILE, ExtractedClips


def _clips(persons: int = 6, per_person: int = 2) -> ExtractedClips:
    refs = {
        f"p{p}_{c}": ClipRef(f"p{p}_{c}", f"clips/p{p}_{c}.npz", (0.5,) * 5, f"p{p}")
        for p in range(persons)
        for c in range(per_person)
    }
    return ExtractedClips(refs=refs, splits=dict.fromkeys(refs))


def test_a_new_run_takes_the_defaults_and_the_options_given() -> None:
    plan = plan_new_run(_clips(), RunOptions(), "person")
    assert plan.config == TrainingConfig()
    plan = plan_new_run(_clips(), RunOptions(epochs=3, learning_rate=0.01, seed=7), "person")
    assert (plan.config.epochs, plan.config.learning_rate, plan.config.seed) == (3, 0.01, 7)
    assert plan.config.batch_size == TrainingConfig().batch_size
    assert plan.split.seed == 7 and plan.shared_groups == []
    everyone = {*plan.split.train, *plan.split.validation, *plan.split.test}
    assert everyone == set(_clips().refs)


def test_a_new_run_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="mixed_precision"):
        plan_new_run(_clips(), RunOptions(mixed_precision="sometimes"), "person")
    with pytest.raises(ValueError, match="split method"):
        plan_new_run(_clips(), RunOptions(split_method="random"), "person")
    with pytest.raises(ValueError, match="fractions"):
        plan_new_run(_clips(), RunOptions(validation_fraction=0.7, test_fraction=0.5), "person")


def test_a_resumed_run_keeps_its_settings_and_split(tmp_path: Path) -> None:
    first = plan_new_run(_clips(), RunOptions(epochs=2, batch_size=4), "person")
    stored = {"dataset": {"name": "demo"}, "config": first.config.to_dict()}
    (tmp_path / RUN_FILE).write_text(json.dumps(stored))
    (tmp_path / SPLIT_FILE).write_text(json.dumps(first.split.to_dict()))
    resumed = plan_resumed_run(tmp_path, RunOptions(epochs=5, mixed_precision="on"))
    assert resumed.config.epochs == 5
    assert resumed.config.batch_size == 4
    assert resumed.config.mixed_precision == first.config.mixed_precision
    assert resumed.split == first.split


def test_resuming_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"run\.json"):
        plan_resumed_run(tmp_path, RunOptions())
    (tmp_path / RUN_FILE).write_text(json.dumps({"config": TrainingConfig().to_dict()}))
    with pytest.raises(DatasetError, match=r"split\.json"):
        plan_resumed_run(tmp_path, RunOptions())


def test_default_run_dir_is_named_after_the_data_set_and_time(tmp_path: Path) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert default_run_dir(tmp_path, "demo", when) == tmp_path / "demo-20240506-070809"


def test_register_trained_bundle_records_and_activates(tmp_path: Path) -> None:
    from db import repository as repo
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_database
    from tests.support.bundles import write_trained_bundle
    from workers.services.training import register_trained_bundle

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    bundle_dir = write_trained_bundle(tmp_path / "bundle", seed=1, dataset="demo", accuracy=0.9)
    version = register_trained_bundle(session_factory, bundle_dir)
    assert register_trained_bundle(session_factory, bundle_dir) == version
    with session_factory() as session:
        assert repo.get_active_model_version(session=session) is None
    assert register_trained_bundle(session_factory, bundle_dir, activate=True) == version
    with session_factory() as session:
        active = repo.get_active_model_version(session=session)
        assert active is not None and active.version == version

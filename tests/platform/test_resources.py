"""The resources follow the library's dataclasses: a field added to `training.plan.TrainingPlan`
reaches the training resource, its run config and back without an edit to `assets/resources.py`;
a world knob of `assets.config.WORLD_KNOBS` reaches the settings and the event source."""

from dataclasses import dataclass, fields
from datetime import date

import dagster as dg

from assets.config import EMBEDDED_WORLD, WORLD_KNOBS, _from_env, load_settings, world_variable
from assets.resources import EventSourceResource, TrainingResource, build_resources, plan_config, to_plan
from training.plan import TrainingPlan


def test_the_resource_holds_every_field_of_the_plan_with_its_default():
    resource = TrainingResource()
    assert set(type(resource.plan).model_fields) == set(TrainingPlan.field_names())
    assert resource.training_plan() == TrainingPlan()


def test_the_environment_reaches_the_resource_through_the_plan(tmp_path):
    env = {"PINREC_DATA_DIR": str(tmp_path), "PINREC_TRAIN_D_MODEL": "16", "PINREC_TRAIN_RANK_WEIGHT": "0.5"}
    training = build_resources(load_settings(env))["training"]
    assert training.training_plan() == load_settings(env).training
    assert (training.plan.d_model, training.plan.rank_weight) == (16, 0.5)
    assert training.models_dir == str(tmp_path / "models")
    sized = training.with_plan(layers=1)
    assert (sized.plan.layers, sized.plan.d_model, sized.models_dir) == (1, 16, training.models_dir)


@dataclass(frozen=True)
class _PlanWithNewFields(TrainingPlan):
    """The plan as another developer extends it: fields of new names and kinds."""

    new_budget: int = 5
    new_outcomes: tuple[str, ...] = ("click", "save")
    new_cap: float | None = None


def test_a_field_added_to_the_plan_reaches_the_resource_and_its_run_config():
    env = {"PINREC_TRAIN_NEW_OUTCOMES": "view, cart", "PINREC_TRAIN_NEW_CAP": "0.5", "PINREC_TRAIN_NEW_BUDGET": ""}
    read = _from_env(env, _PlanWithNewFields(), lambda name: f"PINREC_TRAIN_{name.upper()}")
    assert read == {"new_outcomes": ("view", "cart"), "new_cap": 0.5}  # from the environment as the field's type
    config = plan_config(_PlanWithNewFields)
    assert [name for name in config.model_fields] == [f.name for f in fields(_PlanWithNewFields)]
    assert to_plan(config(), _PlanWithNewFields) == _PlanWithNewFields()

    class Training(dg.ConfigurableResource):
        plan: config = config()

    @dg.asset
    def planned(training: Training) -> None:
        plan = to_plan(training.plan, _PlanWithNewFields)
        assert plan == _PlanWithNewFields(new_budget=9, new_outcomes=("view",), d_model=8)

    plan = {"new_budget": 9, "new_outcomes": ["view"], "d_model": 8}
    run_config = {"resources": {"training": {"config": {"plan": plan}}}}
    assert dg.materialize([planned], resources={"training": Training()}, run_config=run_config).success


WORLD_ENV = {
    "PINREC_SIM_SEED": "3",
    "PINREC_SIM_USERS": "50",
    "PINREC_SIM_ITEMS": "300",
    "PINREC_SIM_EVENTS_PER_DAY": "1000",
    "PINREC_SIM_DAYS": "5",
    "PINREC_SIM_DRIFT_DAY": "2026-01-04",
    "PINREC_SIM_DRIFT_KIND": "interest_shift",
}


def test_every_world_knob_reaches_the_settings_and_the_event_source(tmp_path):
    assert sorted(world_variable(field) for field in WORLD_KNOBS) == sorted(WORLD_ENV)
    settings = load_settings({"PINREC_DATA_DIR": str(tmp_path), **WORLD_ENV})
    world = settings.world
    assert (world.seed, world.n_users, world.n_items, world.events_per_day, world.n_days) == (3, 50, 300, 1000, 5)
    assert (world.drift_day, world.drift_kind) == (date(2026, 1, 4), "interest_shift")
    assert build_resources(settings)["event_source"].world() == world
    # without settings: EMBEDDED_WORLD, the embedded default's world
    assert EventSourceResource(source="simulated", cache_dir=str(tmp_path)).world() == EMBEDDED_WORLD


def test_a_world_knob_set_in_the_environment_is_read_when_the_run_starts(monkeypatch):
    for var, value in WORLD_ENV.items():
        monkeypatch.setenv(var, value)
    resource = build_resources(load_settings(), from_environment=True)[
        "event_source"
    ]  # the code location's: a knob set is a dg.EnvVar

    @dg.asset
    def world(event_source: EventSourceResource) -> None:
        w = event_source.world()
        assert (w.seed, w.n_users, w.drift_day, w.drift_kind) == (3, 50, date(2026, 1, 4), "interest_shift")

    assert dg.materialize([world], resources={"event_source": resource}).success

"""The training resource is generated from the training plan: a field added to
`training.plan.TrainingPlan` reaches the resource, its run config and back without an edit to
`assets/resources.py`."""

from dataclasses import dataclass, fields

import dagster as dg

from assets.config import load_settings
from assets.resources import TrainingResource, build_resources, plan_config, to_plan
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

"""Every example ``/docs`` shows is one the API would accept or could answer, and reaches its model."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from invsaga.api import examples, models

BODIES = {
    **{f"checkout {name}": (models.CheckoutIn, ex) for name, ex in examples.CHECKOUT_BODIES.items()},
    **{f"cancel {name}": (models.CancelIn, ex) for name, ex in examples.CANCEL_BODIES.items()},
}


@pytest.mark.parametrize("name", sorted(examples.MODEL_EXAMPLES))
def test_each_model_example_validates_and_is_in_its_models_schema(name: str) -> None:
    # The examples are found by class name, so a renamed model would silently lose its example.
    model = getattr(models, name, None)
    assert isinstance(model, type) and issubclass(model, BaseModel), f"no model {name} in invsaga.api.models"
    example = examples.MODEL_EXAMPLES[name]
    model.model_validate_json(json.dumps(example))
    assert model.model_json_schema()["examples"] == [example]


@pytest.mark.parametrize("name", sorted(BODIES))
def test_each_named_request_body_validates(name: str) -> None:
    model, example = BODIES[name]
    model.model_validate_json(json.dumps(example["value"]))

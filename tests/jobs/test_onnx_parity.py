"""The trained model, its preprocessing included, exports to ONNX and ONNX Runtime agrees with torch.

This is the promise the feature stage makes to the export stage: raw encoded features in
(NaN for missing values, category codes), predictions out, with nothing else needed.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from optiloop.api.jobs import Architecture, TrainingConfig
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.onnx_export import export_onnx
from optiloop.jobs.training import EncodedSplit, build_model, predict, train_model


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.uniform(0, 5, size=rows),
            "city": rng.choice(["oslo", "lima", "rome"], size=rows),
        }
    )
    frame.loc[::7, "b"] = np.nan
    frame["target"] = rng.integers(0, 3, size=rows)
    return frame


@pytest.mark.parametrize(
    "features",
    [
        {},
        {"categorical": {"encoding": "ordinal"}, "scaling": "robust"},
        {"selection": {"method": "mutualInfo", "maxFeatures": 3}, "reduction": {"method": "pca", "components": 2}},
    ],
)
def test_onnx_runtime_matches_torch_on_raw_inputs(features: dict[str, object]) -> None:
    train = _frame(200, 0)
    dataset = DatasetSpec(uri="builtin://iris", categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec.model_validate(features), DataQualitySpec())
    split = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    model = build_model(
        transform, Architecture(inputs=transform.input_width, outputs=3, hidden=[16, 8], batch_norm=True), split, 0
    )
    # Batch norm with non-trivial statistics, so folding it into the Linear layers is really tested.
    train_model(model, split, split, TrainingConfig(learning_rate=1e-2, batch_size=32, epochs=3))
    exported = export_onnx(model)
    assert not model.training  # exporting leaves the model in eval mode
    assert "BatchNormalization" not in {node.op_type for node in onnx.load_from_string(exported).graph.node}
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])

    test = _frame(64, 1)
    test.loc[0, "city"] = "paris"  # unseen category
    test.loc[1, "a"] = np.nan  # missing value
    raw = encode_raw(transform, test)
    predictions, probabilities = session.run(None, {"features": raw})
    np.testing.assert_allclose(probabilities, predict(model, raw), atol=1e-4)
    np.testing.assert_array_equal(predictions, probabilities.argmax(axis=1))
    assert session.run(None, {"features": raw[:1]})[1].shape == (1, 3)  # the batch axis is dynamic

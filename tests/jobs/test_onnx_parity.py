"""The trained model, its preprocessing included, exports to ONNX and ONNX Runtime agrees with torch.

This is the promise the feature stage makes to the export stage: raw encoded features in
(NaN for missing values, category codes), predictions out, with nothing else needed.
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from optiloop.api.jobs import Architecture
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.training import EncodedSplit, build_model, predict

OPSET = 17


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


# torch 2.13's default (dynamo) exporter needs onnxscript, which is not installed yet; the export
# stage (issue 4) decides between adding it and the TorchScript exporter used here.
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
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
    model.eval()

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, raw: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model(raw), dim=1)

    buffer = io.BytesIO()
    torch.onnx.export(
        Probabilities(),
        (torch.from_numpy(split.raw[:2]),),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=["features"],
        output_names=["probabilities"],
        dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])

    test = _frame(64, 1)
    test.loc[0, "city"] = "paris"  # unseen category
    test.loc[1, "a"] = np.nan  # missing value
    raw = encode_raw(transform, test)
    onnx_out = session.run(None, {"features": raw})[0]
    np.testing.assert_allclose(onnx_out, predict(model, raw), atol=1e-4)
    assert session.run(None, {"features": raw[:1]})[0].shape == (1, 3)  # the batch axis is dynamic

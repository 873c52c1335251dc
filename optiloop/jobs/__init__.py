"""The pipeline stages the cluster's Jobs and the local runner both execute: data quality,
features, models, training, tuning, compression and ONNX export."""

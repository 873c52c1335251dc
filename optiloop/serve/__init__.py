"""The KServe predictor that serves exported models with ONNX Runtime."""

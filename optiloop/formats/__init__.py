"""Formats shared by the export stage, the predictor and the drift monitor, each with one owner.

- :mod:`.model_dir`: the model directory (file names, completion marker with SHA-256s, the
  writer and the verifying reader);
- :mod:`.metadata`: the parts of ``metadata.json`` every reader needs (features, lineage);
- :mod:`.reference`: ``reference.json``, the drift monitor's training sample;
- :mod:`.categories`: how category values are named;
- :mod:`.rows`: v1 instances and v2 inputs read into rows in feature order (predictor and monitor);
- :mod:`.metrics`: the drift metric the operator queries, and its default query;
- :mod:`.onnx`: a structural check that a file is an ONNX model.

This package imports only the standard library and NumPy, so both the main environment and the
drift monitor's (pydantic 1, NumPy 1.24) can import it; an import-linter contract keeps it so.
"""

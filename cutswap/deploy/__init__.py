"""Using a trained detector outside the benchmark: scoring image files (``predict``) and ONNX / torch.export
files (``export``)."""

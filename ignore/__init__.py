"""IGNORE: single positive multi-label learning on HuggingFace Accelerate."""

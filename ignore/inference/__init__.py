"""Use an exported model: `SPMLClassifier.from_export(dir)` then `model.predict(images)`.

    from ignore.inference import SPMLClassifier
    model = SPMLClassifier.from_export("runs/demo/export")   # or a Hub repository, USER/NAME
    model.predict(["a.jpg", PIL.Image.open("b.png")])
    # [{"labels": ["cat", "dog"], "probabilities": {"cat": 0.93, ...}}, ...] at the per-class thresholds
    model.predict("a.jpg", threshold=0.3)                     # one threshold for every class instead

`load_export(dir)` and `predict_probabilities(model, images)` -> (N, C) give the same model and the bare
probabilities.
"""
from ..models.export import SPMLClassifier, load_export
from ..models.predicting import labels_at, predict_probabilities, preprocessing

__all__ = ["SPMLClassifier", "labels_at", "load_export", "predict_probabilities", "preprocessing"]

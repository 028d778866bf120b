"""The model card of an export: Hub metadata (with the test results and the base model), then how to use it, the
decision thresholds, data, method, metrics, limitations and the training command."""
import torchvision
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .predicting import decision_thresholds

# torchvision's ImageNet weights that the Hub holds as they are (timm's ports of them), by backbone and weights
# name; any other starting weights (MobileNetV2's, a local file) are named in the card's text only
HUB_COPIES = {("resnet18", "IMAGENET1K_V1"): "timm/resnet18.tv_in1k",
              ("resnet34", "IMAGENET1K_V1"): "timm/resnet34.tv_in1k",
              ("resnet50", "IMAGENET1K_V1"): "timm/resnet50.tv_in1k",
              ("resnet50", "IMAGENET1K_V2"): "timm/resnet50.tv2_in1k"}
IMAGENET_ALIAS = "imagenet"  # model.pretrained's name for IMAGENET1K_V1 (backbones.py)


def model_card(info):
    """The model card of the export whose config.json is `info`."""
    model, training, names = own_settings(info["model"]), info.get("training", {}), info["class_names"]
    test, thresholds = info.get("test"), decision_thresholds(info)
    starting_weights = pretrained_weights(model.get("backbone", ""), training)
    metadata = ModelCardData(
        library_name="ignore-spml", pipeline_tag="image-classification", license="other",
        tags=["multi-label-classification", "single-positive-multi-label", info.get("method", "")],
        base_model=HUB_COPIES.get((model.get("backbone"), starting_weights)),
        model_name=title(info) if test else None, eval_results=eval_results(info) if test else None)
    lines = [f"# {title(info)}", "",
             f"A multi-label image classifier for {len(names)} classes, trained for single positive multi-label "
             "learning: every training image carried one confirmed label; the model predicts all of them.", ""]
    lines += usage(info)
    lines += ["## Decision thresholds", ""]
    if "decision_thresholds" in info:
        lines += ["A class is predicted at or above its own probability threshold, the one that maximised its F1 on "
                  "the validation split; `predict` uses them unless given `threshold=`. The scores of a model trained "
                  "with one label an image are not calibrated, so 0.5 means nothing in particular for them.", ""]
    else:
        lines += ["This export stores no decision thresholds (trained by an earlier version): 0.5 for every class.", ""]
    ap = test["per_class_AP"] if test else [None] * len(names)
    lines += ["| class | threshold | test AP |", "|---|---|---|"]
    lines += [f"| {name} | {threshold:.4f} | {'-' if value is None else f'{value:.2f}'} |"
              for name, threshold, value in zip(names, thresholds, ap)]
    lines += ["", "## Data", "", f"- source: `{info.get('source', '?')}`",
              f"- input: {info['image_size']}x{info['image_size']} RGB, resized without cropping, normalised with mean "
              f"{info['mean']}, std {info['std']}",
              f"- starting weights: {describe_weights(model.get('backbone', '?'), starting_weights)}", "",
              "## Method", "", f"- `method.name={info.get('method', '?')}`; model: "
              + ", ".join(f"`{key}={value}`" for key, value in model.items() if key != "pretrained"), ""]
    lines += metrics(info)
    lines += limitations(info)
    if training:
        config = training["config"]
        config = {**config, "model": own_settings(config["model"])} if "model" in config else config
        lines += ["", "## Training", "", "```bash", training["command"], "```", "",
                  f"{training.get('num_processes', 1)} process(es). The merged config:", "", "```yaml",
                  yaml.safe_dump(config, sort_keys=False).rstrip(), "```"]
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def title(info):
    return f"{info.get('method', '?')} / {info['model'].get('backbone', '?')} on {info.get('source', '?')}"


def own_settings(model):
    """The model settings of the model's own kind: a CAM model has no Query2Label (q2l_) settings."""
    return {key: value for key, value in model.items() if model.get("name") == "q2l" or not key.startswith("q2l_")}


def pretrained_weights(backbone, training):
    """The torchvision weights name the training started from ("IMAGENET1K_V1", ...), a local file, or ''."""
    pretrained = training.get("config", {}).get("model", {}).get("pretrained", "")
    if not pretrained or backbone == "small_cnn":
        return ""
    members = torchvision.models.get_model_weights(backbone).__members__
    wanted = "IMAGENET1K_V1" if pretrained == IMAGENET_ALIAS else pretrained
    return members[wanted].name if wanted in members else pretrained  # DEFAULT is an alias of a named member


def describe_weights(backbone, weights):
    if not weights:
        return "none (trained from scratch)"
    if weights.startswith("IMAGENET"):
        return f"torchvision's ImageNet `{backbone}` weights `{weights}`"
    return f"a local weights file `{weights}`"


def eval_results(info):
    """The test results for the Hub's model-index: mAP, and CF1 and OF1 at the decision thresholds (at 0.5 for an
    export tested before they were stored)."""
    test, source = info["test"], info.get("source", "?")
    at_thresholds = "CF1_val_thresholds" in test
    suffix = "at the decision thresholds" if at_thresholds else "at 0.5"
    values = [("mAP", "mAP", test["mAP"]),
              ("CF1", f"CF1 {suffix}", test["CF1_val_thresholds" if at_thresholds else "CF1"]),
              ("OF1", f"OF1 {suffix}", test["OF1_val_thresholds" if at_thresholds else "OF1"])]
    return [EvalResult(task_type="image-classification", task_name="multi-label image classification",
                       dataset_type=source, dataset_name=source, dataset_split="test", metric_type=metric,
                       metric_name=name, metric_value=round(float(value), 2)) for metric, name, value in values]


def metrics(info):
    lines = ["## Metrics", "", f"Best validation epoch {info.get('epoch', '?')}: val mAP "
             f"{info.get('val_mAP', float('nan')):.2f}."]
    test = info.get("test")
    if test is None:
        return lines + ["", "Not tested yet (the run stopped before its test)."]
    lines += ["", "| split | mAP | CF1 | OF1 |", "|---|---|---|---|",
              f"| test | {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |"]
    if "CF1_val_thresholds" in test:
        lines += [f"| test, at the decision thresholds | {test['mAP']:.2f} | {test['CF1_val_thresholds']:.2f} | "
                  f"{test['OF1_val_thresholds']:.2f} |"]
    return lines + ["", "CF1 and OF1 are at 0.5 unless the row says otherwise; mAP does not depend on a threshold."]


def limitations(info):
    lines = ["", "## Limitations", "",
             "- Trained with one confirmed label an image and the others assumed absent: the probabilities rank "
             "images well but are not calibrated. Predict at the decision thresholds, or choose your own on labelled "
             "images of yours.",
             "- The thresholds were chosen on the validation split of the training data; on images of another kind "
             "they may predict too much or too little. A class with few validation positives has a rough threshold.",
             "- Only the classes listed are known; anything else in an image is ignored or mistaken for one of them.",
             f"- Images are resized to {info['image_size']}x{info['image_size']} without cropping, as in training: "
             "small objects may vanish."]
    if str(info.get("source", "")).startswith("demo"):
        lines += ["- Trained on the built-in demo data (handwritten digits on synthetic canvases): a demonstration, "
                  "not a model for photographs."]
    return lines


def usage(info):
    return ["## Use", "",
            "Install the `ignore-spml` package (the trainer that wrote this model; `pip install .` in its source "
            "tree), then:", "",
            "```python", "from ignore.inference import SPMLClassifier", "",
            "model = SPMLClassifier.from_export(\"THIS_FOLDER_OR_REPO\")   # eval mode, on the CPU",
            "model.predict([\"a.jpg\", \"b.png\"])   # per image: its labels and every class's probability",
            "model.predict(\"a.jpg\", threshold=0.3)   # one threshold for every class instead", "```", "",
            "```bash", "ignore-predict --model THIS_FOLDER_OR_REPO images/ --out preds.csv", "```", ""]

"""The model card of an export: Hub metadata, then data, method, metrics, the training command and usage."""
import yaml
from huggingface_hub import ModelCard, ModelCardData


def model_card(info):
    """The model card: metadata for the Hub, then data, method, metrics, the training command and usage."""
    model, training = info["model"], info.get("training", {})
    metadata = ModelCardData(library_name="ignore-spml", pipeline_tag="image-classification", license="other",
                             tags=["multi-label-classification", "single-positive-multi-label", info.get("method", "")])
    lines = [f"# {info.get('method', '?')} / {model.get('backbone', '?')}: a multi-label image classifier "
             f"({len(info['class_names'])} classes)", "",
             "Trained for single positive multi-label learning: every training image carried one confirmed label; "
             "the model predicts all of them.", "",
             "## Data", "",
             f"- source: `{info.get('source', '?')}`",
             f"- classes: {', '.join(info['class_names'])}",
             f"- input: {info['image_size']}x{info['image_size']} RGB, normalised with mean {info['mean']}, "
             f"std {info['std']}", "",
             "## Method", "",
             f"- `method.name={info.get('method', '?')}`; model: "
             + ", ".join(f"`{key}={value}`" for key, value in model.items()), ""]
    lines += ["## Metrics", "", f"Best validation epoch {info.get('epoch', '?')}: val mAP "
              f"{info.get('val_mAP', float('nan')):.2f}."]
    if "test" in info:
        test = info["test"]
        lines += ["", "| split | mAP | CF1 | OF1 |", "|---|---|---|---|",
                  f"| test | {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |", "",
                  "| class | test AP |", "|---|---|"]
        lines += [f"| {name} | {ap:.2f} |" for name, ap in zip(info["class_names"], test["per_class_AP"])]
    else:
        lines += ["", "Not tested yet (the run stopped before its test)."]
    if training:
        lines += ["", "## Training", "", "```bash", training["command"], "```", "",
                  f"{training.get('num_processes', 1)} process(es). The merged config:", "", "```yaml",
                  yaml.safe_dump(training["config"], sort_keys=False).rstrip(), "```"]
    lines += ["", "## Use", "", "```python", "from ignore.models.export import SPMLClassifier",
              "model = SPMLClassifier.from_pretrained(\"THIS_FOLDER_OR_REPO\")  # eval mode",
              "```", "", "```bash", "python -m ignore.predict --model THIS_FOLDER_OR_REPO images/ --out preds.csv", "```"]
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")

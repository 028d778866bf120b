"""Upload an export folder (weights, config, model card) to the Hugging Face Hub.

    python -m ignore.export --model runs/demo/export --push-to-hub USER/REPO [--private]
"""
import argparse

from .errors import exit_on_error
from .models.export import load_export


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Upload an export folder (model, config, card) to the Hugging Face Hub.")
    parser.add_argument("--model", required=True, help="an export folder, e.g. runs/demo/export")
    parser.add_argument("--push-to-hub", required=True, metavar="REPO", help="the Hub repository, USER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    model = load_export(args.model)  # refuses a folder that would not load back
    url = model.push_to_hub(args.push_to_hub, private=args.private or None,
                            commit_message=f"Upload {model.export_info.get('method', '')} model from ignore-spml")
    print(f"uploaded {args.model} to {args.push_to_hub}: {url}")


if __name__ == "__main__":
    main()

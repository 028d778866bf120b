"""Build (or find in the cache) the built-in demo dataset and print its statistics.

    python data_scripts/prepare_demo.py [--layout dense|sparse] [--out DIR] [--seed 0] [--num-train 2500] [--num-test 800]

Needs no download: the canvases are drawn from the digits that ship with scikit-learn.
Without --out the dataset lives under $SPML_CACHE (default ~/.cache/spml).
"""
import argparse
import time
from pathlib import Path

from ignore.data.demo import LAYOUTS, demo_statistics, ensure_demo_dataset
from ignore.errors import exit_on_error


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="dense", help="which built-in dataset (data.demo)")
    parser.add_argument("--out", type=Path, default=None, help="dataset directory (default: in $SPML_CACHE)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the canvas generator")
    parser.add_argument("--num-train", type=int, default=2500, help="official-train canvases (split into train/val)")
    parser.add_argument("--num-test", type=int, default=800, help="test canvases")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    path = ensure_demo_dataset(args.out, seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                               layout=args.layout)
    seconds = time.perf_counter() - start
    stats = demo_statistics(path)

    print(f"demo dataset: {path} (ready in {seconds:.1f} s)")
    rows = [(f"{name} images", str(size)) for name, size in stats["sizes"].items()]
    rows += [
        ("classes", str(stats["num_classes"])),
        ("labels per train image", f"{stats['labels_per_image']:.2f}"),
        ("train positives unobserved", f"{100 * stats['positives_unobserved']:.1f}%  (false negatives of 'assume negative')"),
        ("unknown train labels positive", f"{100 * stats['unknown_positive']:.1f}%"),
    ]
    if "object_area" in stats:
        area = stats["object_area"]
        rows.append(("object area (of the image)", f"{100 * area['min']:.1f}% to {100 * area['max']:.1f}%, "
                                                  f"mean {100 * area['mean']:.1f}%"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()

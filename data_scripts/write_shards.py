"""Write the train split of a dataset in our format as Parquet shards, for data.train_shards.

    python data_scripts/write_shards.py --data data/coco2014 --out data/coco2014-shards --shards 64 [--seed 0]

Each shard holds a random sample of the rows (the seed deals them), each record its encoded image, labels,
observed labels and dataset row; shards.json indexes them. `datasets` reads the shards as they are:
`datasets.load_dataset("parquet", data_files="data/coco2014-shards/train-*.parquet")`.
"""
import argparse
import time
from pathlib import Path

from ignore.data.format import load_dataset
from ignore.data.shards import write_shards
from ignore.errors import exit_on_error


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="a dataset in our format (data_scripts/prepare_*.py)")
    parser.add_argument("--out", required=True, type=Path, help="the shard folder to write")
    parser.add_argument("--shards", required=True, type=int,
                        help="how many shards; a multiple of the processes that will train leaves out the fewest rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random order that deals the rows to shards")
    parser.add_argument("--image-root", type=Path, default=None, help="overrides the dataset's stored image root")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    index = write_shards(load_dataset(args.data, args.image_root), args.out, args.shards, args.seed)
    sizes = [shard["rows"] for shard in index["shards"]]
    megabytes = sum(path.stat().st_size for path in args.out.glob("*.parquet")) / 2**20
    print(f"{index['rows']} train rows in {len(sizes)} shards of {min(sizes)} to {max(sizes)} rows, {megabytes:.1f} MB, "
          f"written to {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

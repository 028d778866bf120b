"""Train a single-positive multi-label classifier: `accelerate launch train.py [--config FILE] [key=value ...]`.

The same as `ignore-train` and `python -m ignore.train`; `python train.py --help` lists every setting.
"""
from ignore.train import main

if __name__ == "__main__":
    main()

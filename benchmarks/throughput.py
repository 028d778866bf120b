"""Throughput: the authors' recipe (reference) and our training loop, side by side.

    python benchmarks/throughput.py [--backbone resnet18] [--image-size 224] [--batch-size 16] [--steps 6]
                                    [--repeats 3] [--data DIR] [--shards 8]

Same model, image size, batch and data (the demo dataset, or --data) for both. Each phase
runs in a fresh process, so peak memory is that phase's own:
  loader      decode + views with the configured workers, no model; ours also streamed from
              the train split written into --shards Parquet shards (data.train_shards)
  training    step: batches already on the device, a few in turn (forward, backward, optimiser), and
              end to end: the loader feeding the same steps; timed in alternating blocks of
              --block steps in one process, with the loader's workers idle before each step
              block (a pause, then one untimed step), so a drifting shared host moves both
              figures alike and end to end / step is the pipeline's own cost; --repeats
              processes per variant, reference and ours alternating, pooled
  memory      peak memory of two steps above the model and optimiser state
Ours runs with its defaults (channels_last, masked pass without autograd, one decode per
image, persistent workers; bf16 autocast on a GPU unless --fp32). Runs as is on CPU or CUDA.
A benchmark prints figures; it is not a test.
"""
import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ignore.config import Config
from ignore.data.demo import ensure_demo_dataset
from ignore.data.format import load_dataset
from ignore.data.loading import build_loaders
from ignore.data.shards import open_shards, write_shards
from ignore.data.views import IMAGENET
from ignore.errors import SPMLError, exit_on_error, require_at_least
from ignore.losses.ignore import Ignore
from ignore.models.cam_model import CAMClassifier
from ignore.training.optim import build_optimizer
from ignore.training.precision import resolve_mixed_precision
from reference_recipe import ReferenceDataset, ReferenceStep

PHASES = ("loader", "step", "end_to_end")  # the rows of the table
CHILD_PHASES = ("loader", "training", "memory")  # one fresh process each
RESIDENT_BATCHES = 4  # the step figure's batches, taken in turn: one batch trained on again and again is not a step
SETTLE_S = 2.0  # untimed, before each step block: the workers fill their prefetch queue and go idle
VARIANTS = ("reference", "ours")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="a dataset in our format (default: the built-in demo)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (or batches) per phase and process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--block", type=int, default=3, help="steps a block; step and end-to-end blocks alternate")
    parser.add_argument("--repeats", type=int, default=3,
                        help="training phase processes per variant, reference and ours alternating")
    parser.add_argument("--workers", type=int, default=Config().data.num_workers)
    parser.add_argument("--batched-views", action="store_true", help="ours: weak and strong in one forward")
    parser.add_argument("--fp32", action="store_true", help="ours: no bf16 autocast on a GPU")
    parser.add_argument("--shards", type=int, default=8, help="ours streamed: the train split in this many shards")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PHASE"), help=argparse.SUPPRESS)
    parser.add_argument("--shard-folder", default="", help=argparse.SUPPRESS)  # written once, by the parent
    args = parser.parse_args(argv)
    require_at_least(args, {"--image-size": 8, "--batch-size": 1, "--steps": 1, "--warmup": 0, "--block": 1,
                            "--repeats": 1, "--workers": 0, "--shards": 1})
    return args


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args, *args.child)))
        return
    data = load_dataset(args.data or ensure_demo_dataset())  # a bad dataset is one error line here
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_shards(data, Path(folder) / "shards", args.shards)
        print(f"train split written into {args.shards} shards in {time.perf_counter() - started:.1f} s", flush=True)
        forwarded = list(argv if argv is not None else sys.argv[1:]) + ["--shard-folder", str(Path(folder) / "shards")]
        results = {}
        for phase in CHILD_PHASES:
            repeats = args.repeats if phase == "training" else 1
            measured = {}  # variant: [one child's {row: figures}, ...]
            for repeat in range(repeats):  # the variants alternate, so a drifting host meets both alike
                for variant in VARIANTS + (("streamed",) if phase == "loader" else ()):
                    child = run_child(forwarded, variant, phase)
                    print(f"{phase:<11} {variant:<9} {summary(child)}", flush=True)
                    measured.setdefault(variant, []).append(child)
            for variant, children in measured.items():
                results.update({(variant, row): value for row, value in pool(children, args.batch_size).items()})
    print()
    print_table(args, results)


def print_table(args, results):
    """The side-by-side table from {(variant, phase): {"images_per_s", "peak_mb"}}."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_mixed_precision("no" if args.fp32 else "auto").replace("no", "fp32")
    print(f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.workers} workers, {device}, "
          f"ours {precision}, reference fp32")
    print(f"{'':<22} {'reference':>10} {'ours':>10} {'ours/ref':>9}")
    for phase in PHASES:
        reference, ours = results["reference", phase]["images_per_s"], results["ours", phase]["images_per_s"]
        print(f"{phase + ' images/s':<22} {reference:>10.1f} {ours:>10.1f} {ours / reference:>8.2f}x")
    reference, ours = results["reference", "memory"]["peak_mb"], results["ours", "memory"]["peak_mb"]
    memory_ratio = f"{ours / reference:>8.2f}x" if reference > 0 else f"{'-':>9}"  # a tiny model's can be 0
    print(f"{'step peak memory MB':<22} {reference:>10.0f} {ours:>10.0f} {memory_ratio}"
          "   (above the model and optimiser state)")
    loader, step = results["ours", "loader"]["images_per_s"], results["ours", "step"]["images_per_s"]
    print(f"ours: loader / step images/s = {loader / step:.2f}")
    print("end to end, time spent waiting for the next batch: " + ", ".join(
        f"{variant} {100 * results[variant, 'end_to_end']['batch_wait_share']:.1f}%" for variant in VARIANTS))
    cost = {variant: results[variant, "end_to_end"]["images_per_s"] / results[variant, "step"]["images_per_s"]
            for variant in VARIANTS}
    print("end to end / step, the pipeline's cost measured side by side in one process: " + ", ".join(
        f"{variant} {cost[variant]:.3f} (per block pair: median {statistics.median(ratios):.3f}, "
        f"{min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)})"
        for variant in VARIANTS for ratios in [results[variant, "end_to_end"]["block_ratios"]]))
    ratio = {row: results["ours", row]["images_per_s"] / results["reference", row]["images_per_s"]
             for row in ("step", "end_to_end")}
    print(f"ours / reference: end to end {ratio['end_to_end']:.2f}x, step {ratio['step']:.2f}x: the pipeline costs "
          f"ours {'no more' if cost['ours'] >= cost['reference'] else 'more'} than the reference")
    streamed = results["streamed", "loader"]["images_per_s"]
    print(f"ours streamed from {args.shards} Parquet shards: loader {streamed:.1f} images/s, "
          f"{streamed / loader:.2f}x the in-memory loader")


def run_child(forwarded, variant, phase):
    """One child phase in a fresh process. The memory phase runs the step with large blocks
    taken straight from mmap, so freed activations leave the resident set at once and the CPU
    peak measures live memory rather than malloc's cache (it slows the step: no timing there)."""
    environment = dict(os.environ)
    if phase == "memory":
        environment["MALLOC_MMAP_THRESHOLD_"] = "131072"
    command = [sys.executable, __file__, *forwarded, "--child", variant, phase]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(args, variant, phase):
    """One child phase of one variant in this process: {row: {"images_per_s", "peak_mb"[, "batch_wait_share"]}}
    for the rows it measures ("loader"; "step" and "end_to_end"; "memory")."""
    precision = resolve_mixed_precision("no" if variant == "reference" or args.fp32 else "auto")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    torch.manual_seed(0)
    data = load_dataset(args.data or ensure_demo_dataset())
    loader = make_loader(args, variant, data, accelerator)
    if phase == "loader":
        return {"loader": time_loader(loader, args)}
    needed = RESIDENT_BATCHES + 1 + args.steps
    if len(loader) < needed:
        raise SPMLError(f"--steps {args.steps} needs {needed} batches of {args.batch_size} in one epoch; the train "
                        f"split has {len(loader)}: take fewer steps or a larger --data")
    model, optimizer, step = make_training(args, variant, len(data.class_names), accelerator)
    if variant == "ours":
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    else:
        model = model.to(accelerator.device)
    batches = (to_device(batch, accelerator.device) for batch in loader)  # one epoch: enough for the steps
    resident = [next(batches) for _ in range(RESIDENT_BATCHES)]
    in_turn = itertools.cycle(resident)
    fixed = resident[0]
    for _ in range(args.warmup):  # optimiser state exists after these: the peak above it is the step's own
        step(model, optimizer, fixed)
    if phase == "memory":
        synchronise(accelerator.device)
        memory = PeakMemory(accelerator.device)
        for _ in range(2):
            step(model, optimizer, fixed)
        synchronise(accelerator.device)
        return {"memory": {"images_per_s": 0.0, "peak_mb": memory.peak_mb()}}
    step(model, optimizer, next(batches))  # untimed: the loader's first batch after the warm-up
    blocks = {"step": [], "end_to_end": []}  # [steps, seconds] per block
    waited = 0.0  # timed seconds spent waiting for the next batch
    done = 0
    while done < args.steps:
        block = min(args.block, args.steps - done)
        time.sleep(SETTLE_S)
        step(model, optimizer, next(in_turn))  # untimed: the first step after a pause runs on cold caches
        seconds = timed_steps(block, lambda: next(in_turn), model, optimizer, step, accelerator.device)[0]
        blocks["step"].append([block, seconds])
        elapsed, waiting = timed_steps(block, lambda: next(batches), model, optimizer, step, accelerator.device)
        blocks["end_to_end"].append([block, elapsed])
        waited += waiting
        done += block
    rates = {row: {"images_per_s": rate(row_blocks, args.batch_size), "peak_mb": 0.0, "blocks": row_blocks}
             for row, row_blocks in blocks.items()}
    rates["end_to_end"]["waited_s"] = waited
    return rates


def rate(blocks, batch_size):
    """Images per second over [steps, seconds] blocks."""
    return sum(steps for steps, _ in blocks) * batch_size / sum(seconds for _, seconds in blocks)


def pool(children, batch_size):
    """One variant's rows over its child processes: the training rows' rates over all their blocks, the pipeline's
    cost per (step block, end-to-end block) pair, the share of end-to-end time spent waiting; other rows as measured
    (one child)."""
    if "step" not in children[0]:
        return children[0]
    pooled = {row: {"images_per_s": rate([block for child in children for block in child[row]["blocks"]], batch_size),
                    "peak_mb": 0.0}
              for row in ("step", "end_to_end")}
    pairs = [(step, end_to_end) for child in children
             for step, end_to_end in zip(child["step"]["blocks"], child["end_to_end"]["blocks"])]
    pooled["end_to_end"]["block_ratios"] = [step_seconds / seconds for (_, step_seconds), (_, seconds) in pairs]
    pooled["end_to_end"]["batch_wait_share"] = sum(child["end_to_end"]["waited_s"] for child in children) / sum(
        seconds for child in children for _, seconds in child["end_to_end"]["blocks"])
    return pooled


def summary(child):
    """One child's figures for the progress lines: its rates."""
    return {row: round(figures["images_per_s"], 2) if row != "memory" else round(figures["peak_mb"], 1)
            for row, figures in child.items()}


def timed_steps(count, next_batch, model, optimizer, step, device):
    """(seconds for `count` steps, seconds of it spent in next_batch())."""
    synchronise(device)
    started, waited = time.perf_counter(), 0.0
    for _ in range(count):
        asked = time.perf_counter()
        batch = next_batch()
        waited += time.perf_counter() - asked
        step(model, optimizer, batch)
    synchronise(device)
    return time.perf_counter() - started, waited


def make_loader(args, variant, data, accelerator):
    if variant == "reference":
        dataset = ReferenceDataset(data.splits["train"], data.image_root, args.image_size)
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
                          pin_memory=torch.cuda.is_available())  # the authors pin memory
    config = Config()
    config.data.image_size, config.data.num_workers = args.image_size, args.workers
    if variant == "streamed":
        data.train_shards = open_shards(args.shard_folder, data)
    train_loader, _, _ = build_loaders(data, config.data, ("weak", "strong"), args.batch_size, seed=0,
                                       normalisation=IMAGENET, accelerator=accelerator)
    return train_loader


def make_training(args, variant, num_classes, accelerator):
    """(model, optimiser, step(model, optimizer, batch)) for one variant, rejection active."""
    config = Config()
    model = CAMClassifier(args.backbone, num_classes, channels_last=variant == "ours")
    optimizer = build_optimizer(model, config.optim, config.model.head_lr_multiplier, config.optim.lr)
    if variant == "reference":
        return model, optimizer, ReferenceStep(num_classes)
    config.method.strong_view, config.method.batched_views = True, args.batched_views
    method = Ignore(config.method, num_classes, accelerator).to(accelerator.device)

    def step(model, optimizer, batch):
        output = method.step(model, batch, epoch=config.method.warm_up)
        accelerator.backward(output.loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, optimizer, step


def time_loader(loader, args):
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    for _ in range(args.steps):
        next(iterator)
    return {"images_per_s": args.steps * args.batch_size / (time.perf_counter() - started), "peak_mb": 0.0}


def to_device(batch, device):
    return {name: value.to(device, non_blocking=True) for name, value in batch.items()}


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory above the level at construction: CUDA allocator, or the process's resident set."""

    def __init__(self, device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = proc_status_kb("VmRSS")

    def peak_mb(self):
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        return (proc_status_kb("VmHWM") - self.start) / 1024


def proc_status_kb(field):
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


if __name__ == "__main__":
    main()

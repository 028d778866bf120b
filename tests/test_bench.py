"""The throughput benchmark runs every phase of both variants and prints its table.

A smoke test on tiny data: the figures themselves are the benchmark's business, not a test's.
"""
import re
import sys
from pathlib import Path

import pytest

from ignore.data.format import load_dataset
from ignore.data.shards import write_shards

# the benchmarks are scripts beside the package, not in it
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cam_pointing  # noqa: E402
import fn_features  # noqa: E402
import processes  # noqa: E402
import q2l  # noqa: E402
import throughput as bench  # noqa: E402


def test_every_phase_of_both_variants_measures_and_the_table_prints(tiny_dataset, tmp_path, capsys, monkeypatch):
    write_shards(load_dataset(tiny_dataset), tmp_path / "shards", 2)
    args = bench.parse_args(["--data", str(tiny_dataset), "--backbone", "small_cnn", "--image-size", "32",
                             "--batch-size", "4", "--steps", "3", "--block", "2", "--warmup", "1", "--workers", "0",
                             "--shards", "2", "--shard-folder", str(tmp_path / "shards")])
    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    results = {}
    for phase in bench.CHILD_PHASES:
        for variant in bench.VARIANTS + (("streamed",) if phase == "loader" else ()):
            children = [bench.measure(args, variant, phase) for _ in range(2 if phase == "training" else 1)]
            results.update({(variant, row): value for row, value in bench.pool(children, args.batch_size).items()})
    assert set(results) == {(variant, row) for variant in bench.VARIANTS for row in bench.PHASES + ("memory",)} | {
        ("streamed", "loader")}
    assert all(result["images_per_s"] > 0 for (_, row), result in results.items() if row != "memory")
    assert results["ours", "memory"]["peak_mb"] >= 0 and results["reference", "memory"]["peak_mb"] >= 0
    bench.print_table(args, results)
    results["reference", "memory"]["peak_mb"] = 0.0  # a tiny model's peak above its state can round to nothing
    bench.print_table(args, results)
    table = capsys.readouterr().out
    assert "small_cnn, 32 px, batch 4, 0 workers, cpu, ours fp32, reference fp32" in table
    for row in ("loader images/s", "step images/s", "end_to_end images/s"):
        assert re.search(rf"^{row} +[\d.]+ +[\d.]+ +[\d.]+x", table, re.M), row
    assert re.search(r"^step peak memory MB +\d+ +\d+ +([\d.]+x|-) ", table, re.M)
    assert re.search(r"^step peak memory MB +0 +\d+ +- ", table, re.M)  # no ratio to a zero
    assert re.search(r"^ours: loader / step images/s = [\d.]+$", table, re.M)
    assert re.search(r"^end to end, time spent waiting for the next batch: reference [\d.]+%, ours [\d.]+%$",
                     table, re.M)
    assert all(0 <= results[variant, "end_to_end"]["batch_wait_share"] < 1 for variant in bench.VARIANTS)
    assert all(len(results[variant, "end_to_end"]["block_ratios"]) == 4 for variant in bench.VARIANTS)  # 2 x 2 blocks
    number = r"[\d.]+ \(per block pair: median [\d.]+, [\d.]+-[\d.]+ over 4\)"
    assert re.search(rf"^end to end / step, the pipeline's cost measured side by side in one process: "
                     rf"reference {number}, ours {number}$", table, re.M)
    assert re.search(r"^ours / reference: end to end [\d.]+x, step [\d.]+x: the pipeline costs ours (no more|more) "
                     r"than the reference$", table, re.M)
    assert re.search(r"^ours streamed from 2 Parquet shards: loader [\d.]+ images/s, [\d.]+x the in-memory loader$",
                     table, re.M)


def test_a_missing_dataset_is_one_line_and_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: dataset directory not found\n"


def test_pooling_sums_every_block_of_every_process():
    def child(step_blocks, end_to_end_blocks, waited_s):
        return {"step": {"images_per_s": 0.0, "peak_mb": 0.0, "blocks": step_blocks},
                "end_to_end": {"images_per_s": 0.0, "peak_mb": 0.0, "blocks": end_to_end_blocks, "waited_s": waited_s}}

    pooled = bench.pool([child([[3, 2.0], [1, 1.0]], [[3, 2.5], [1, 1.0]], 0.5),
                         child([[3, 3.0]], [[3, 4.0]], 0.25)], batch_size=4)
    assert pooled["step"]["images_per_s"] == pytest.approx(7 * 4 / 6.0)
    assert pooled["end_to_end"]["images_per_s"] == pytest.approx(7 * 4 / 7.5)
    assert pooled["end_to_end"]["block_ratios"] == pytest.approx([2.0 / 2.5, 1.0, 3.0 / 4.0])
    assert pooled["end_to_end"]["batch_wait_share"] == pytest.approx(0.75 / 7.5)
    memory = {"memory": {"images_per_s": 0.0, "peak_mb": 12.0}}
    assert bench.pool([memory], batch_size=4) == memory


def test_more_steps_than_one_epoch_holds_is_one_line_and_exit_code_2(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data", str(tiny_dataset), "--batch-size", "4", "--steps", "500", "--child", "ours", "training"])
    assert exit_info.value.code == 2
    assert re.fullmatch(r"error: --steps 500 needs 505 batches of 4 in one epoch; the train split has \d+: take fewer "
                        r"steps or a larger --data\n", capsys.readouterr().err)


@pytest.mark.parametrize("script, argv, message", [
    (bench, ["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (bench, ["--steps", "-2"], "--steps must be >= 1, got -2"),
    (bench, ["--workers", "-1"], "--workers must be >= 0, got -1"),
    (processes, ["--batch", "0"], "--batch must be >= 2, got 0"),
    (processes, ["--batch", "5"], "--batch must be even (two processes take half each), got 5"),
    (q2l, ["--parallel", "0"], "--parallel must be >= 1, got 0"),
    (cam_pointing, ["run", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (fn_features, ["run", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_an_out_of_range_flag_is_one_line_naming_it_before_any_work(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"

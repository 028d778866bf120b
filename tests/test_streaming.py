"""Streaming shards: the writer against the tiny dataset, the order and the deal of the shards, bad records,
2 real processes, and a streamed run resumed mid-epoch against one without a break."""
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_script import run_script
from launching import run_worker
from ignore.config import DataConfig
from ignore.data import streaming
from ignore.data.format import load_dataset
from ignore.data.loading import load_spml_data
from ignore.data.shards import INDEX_FILE, open_shards, read_shard, write_shards
from ignore.data.streaming import ShardStream, StreamedRecords
from ignore.data.views import eval_view
from ignore.errors import SPMLError
from ignore.training.resume_settings import require_same_stream
from training_runs import assert_same_state, final_state, run_train, tiny_run_overrides

NUM_TRAIN = 32  # the tiny dataset's train split


@pytest.fixture(scope="module")
def shard_folders(tiny_dataset, tmp_path_factory):
    """{shard count: a shard folder of the tiny dataset's train split} for 3, 4 and 5 shards (seed 0)."""
    root, data = tmp_path_factory.mktemp("shards"), load_dataset(tiny_dataset)
    for count in (3, 4, 5):
        write_shards(data, root / str(count), count)
    return {count: root / str(count) for count in (3, 4, 5)}


def shard_table(folder, name):
    return pq.read_table(folder / name).to_pydict()


def test_the_script_writes_every_train_row_once_as_datasets_reads_it(tiny_dataset, tmp_path):
    out = tmp_path / "shards"
    result = run_script("write_shards", "--data", tiny_dataset, "--out", out, "--shards", 3, "--seed", 7)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("32 train rows in 3 shards of 10 to 11 rows, ")
    index = json.loads((out / INDEX_FILE).read_text())
    names = [f"train-0000{shard}-of-00003.parquet" for shard in range(3)]
    assert [entry["file"] for entry in index["shards"]] == names
    assert [entry["rows"] for entry in index["shards"]] == [11, 11, 10]
    # the rows dealt in the seed's random order, in near-equal parts
    dealt = np.array_split(np.random.default_rng(7).permutation(NUM_TRAIN), 3)
    data = load_dataset(tiny_dataset)
    split = data.splits["train"]
    for name, rows in zip(names, dealt):
        table = shard_table(out, name)
        assert table["row"] == rows.tolist()
        for record, row in enumerate(table["row"]):
            assert table["image"][record]["bytes"] == (data.image_root / split[row]["image"]).read_bytes()
            assert table["image"][record]["path"] == split[row]["image"]
            assert table["labels"][record] == split[row]["labels"]
            assert table["observed"][record] == split[row]["observed"]

    import datasets

    read = datasets.load_dataset("parquet", data_files=str(out / "train-*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "cache"))
    assert isinstance(read.features["image"], datasets.Image) and read.num_rows == NUM_TRAIN
    assert sorted(read["row"]) == list(range(NUM_TRAIN))
    first = read[0]
    original = Image.open(data.image_root / split[first["row"]]["image"])
    assert np.array_equal(np.asarray(first["image"]), np.asarray(original))

    again = run_script("write_shards", "--data", tiny_dataset, "--out", out, "--shards", 2)  # replaces the folder
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in out.iterdir()) == [INDEX_FILE, "train-00000-of-00002.parquet",
                                                           "train-00001-of-00002.parquet"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = run_script("write_shards", "--data", tiny_dataset, "--out", foreign, "--shards", 2)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: {foreign}: exists and is not a shard folder (no {INDEX_FILE}); "
                                      "choose another --out")
    assert (foreign / "notes.txt").read_text() == "keep me"


def streamed_rows(index, epoch, rank=0, world_size=1, batch_size=4, skip=0):
    stream = ShardStream(index, seed=3, rank=rank, world_size=world_size, batch_size=batch_size)
    stream.set_epoch(epoch)
    stream.skip_records(skip)
    return [key[1] for key in stream]


def shard_of_row(folder):
    index = json.loads((folder / INDEX_FILE).read_text())
    return {row: shard for shard, entry in enumerate(index["shards"])
            for row in shard_table(folder, entry["file"])["row"]}


def test_each_process_reads_its_own_shards_and_every_row_once(tiny_dataset, shard_folders):
    data = load_dataset(tiny_dataset)
    index = open_shards(shard_folders[4], data)
    shard = shard_of_row(shard_folders[4])
    orders = {}
    for epoch in (0, 1):
        alone = streamed_rows(index, epoch)
        assert sorted(alone) == list(range(NUM_TRAIN))  # 4 shards of 8 rows: nothing left out
        assert streamed_rows(index, epoch) == alone  # (seed, epoch) fix it
        ranks = [streamed_rows(index, epoch, rank, 2) for rank in (0, 1)]
        assert [len(rows) for rows in ranks] == [16, 16]
        assert sorted(ranks[0] + ranks[1]) == list(range(NUM_TRAIN))
        # one process reads the shards in the epoch's order; two are dealt them alternately, each shard whole,
        # its rows in the same order
        shards_alone = list(dict.fromkeys(shard[row] for row in alone))
        for rank, rows in enumerate(ranks):
            assert list(dict.fromkeys(shard[row] for row in rows)) == shards_alone[rank::2]
            assert rows == [row for row in alone if shard[row] in shards_alone[rank::2]]
        orders[epoch] = alone
    assert orders[0] != orders[1]
    assert list(dict.fromkeys(shard[row] for row in orders[0])) != list(dict.fromkeys(shard[row] for row in orders[1]))


@pytest.mark.parametrize("count, world_size, batch_size, per_process", [
    (5, 2, 4, 12),  # shards of 7, 7, 6, 6, 6: any process is dealt at least 2, at least 12 rows
    (3, 2, 4, 8),   # 11, 11, 10: one process may get only the 10-row shard; 8 is its batches
    (3, 1, 8, 32),
])
def test_uneven_shards_leave_out_the_same_count_from_every_process(tiny_dataset, shard_folders, count, world_size,
                                                                   batch_size, per_process):
    index = open_shards(shard_folders[count], load_dataset(tiny_dataset))
    for epoch in range(4):
        ranks = [streamed_rows(index, epoch, rank, world_size, batch_size) for rank in range(world_size)]
        assert [len(rows) for rows in ranks] == [per_process] * world_size
        seen = [row for rows in ranks for row in rows]
        assert len(set(seen)) == len(seen)  # never a row twice in an epoch


def test_a_resumed_epoch_skips_whole_shards_unread(tiny_dataset, shard_folders, monkeypatch):
    index = open_shards(shard_folders[4], load_dataset(tiny_dataset))
    whole = streamed_rows(index, epoch=2)
    read = []
    monkeypatch.setattr(streaming, "read_shard", lambda index, shard: read.append(shard) or read_shard(index, shard))
    assert streamed_rows(index, epoch=2, skip=20) == whole[20:]
    # 20 rows in: the first two shards of 8 are passed over, the third is read from its record 4
    order = streaming.shards_of_process(3, 2, 4, rank=0, world_size=1)
    assert read == order[2:]
    stream = ShardStream(index, seed=3, rank=0, world_size=1, batch_size=4)
    assert stream.reading_plan(2, 20) == [(order[2], 4, 4), (order[3], 0, 8)]
    uneven = ShardStream(open_shards(shard_folders[3], load_dataset(tiny_dataset)), seed=3, rank=1, world_size=2,
                         batch_size=4)  # shards of 11, 11 and 10 rows: 8 rows a process, from its first shard
    assert uneven.reading_plan(0, 0) == [(streaming.shards_of_process(3, 0, 3, rank=1, world_size=2)[0], 0, 8)]
    assert streamed_rows(index, epoch=2) == whole  # the skip was for one iteration


def test_shards_that_do_not_match_the_dataset_or_the_processes_are_one_line(tiny_dataset, shard_folders, tmp_path):
    data = load_dataset(tiny_dataset)
    with pytest.raises(SPMLError) as error:
        open_shards(tmp_path, data)
    assert str(error.value) == (f"data.train_shards: {tmp_path}: no {INDEX_FILE} "
                                "(write the shards with data_scripts/write_shards.py)")
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    flipped = load_dataset(other)
    flipped.splits["train"] = flipped.splits["train"].map(lambda row: {"observed": row["observed"][::-1]})
    with pytest.raises(SPMLError, match="written from another train split than the dataset's"):
        open_shards(shard_folders[3], flipped)
    with pytest.raises(SPMLError) as error:
        ShardStream(open_shards(shard_folders[3], data), seed=0, rank=0, world_size=4, batch_size=2)
    assert str(error.value) == (f"data.train_shards: {shard_folders[3]} holds 3 shards for 4 processes: each process "
                                "reads shards of its own, so write at least 4")
    with pytest.raises(SPMLError) as error:
        load_spml_data(DataConfig(path=str(tiny_dataset), train_shards=str(shard_folders[3]), train_subset=8), None)
    assert str(error.value) == ("data.train_subset cannot be combined with data.train_shards: the shards hold the "
                                "whole train split")
    copied = tmp_path / "copied"
    shutil.copytree(shard_folders[3], copied)
    (copied / "train-00001-of-00003.parquet").unlink()
    with pytest.raises(SPMLError) as error:
        load_spml_data(DataConfig(path=str(tiny_dataset), train_shards=str(copied)), None)
    assert str(error.value) == f"data.train_shards: {copied}: shard train-00001-of-00003.parquet is missing (1 of 3 in all)"


def rewritten_shard(folder, name, change):
    """Shard `name` of `folder` written again with `change(columns)` applied to its columns (a dict of lists)."""
    path = folder / name
    table = pq.read_table(path)
    columns = table.to_pydict()
    change(columns)
    pq.write_table(pa.table(columns, schema=pa.schema([(field.name, pa.list_(pa.int64()))
                                                       if field.name in ("labels", "observed") else field
                                                       for field in table.schema])), path)
    return path


def test_a_bad_record_or_shard_names_the_file_and_record(tiny_dataset, shard_folders, tmp_path):
    data = load_dataset(tiny_dataset)
    damages = {
        "labels": (lambda columns: columns["labels"].__setitem__(6, [0, 1, 0]),
                   f"record 6: column 'labels' has 3 values, {INDEX_FILE} names 4 classes"),
        "observed": (lambda columns: columns["observed"].__setitem__(2, [0, 2, 0, 0]),
                     "record 2: column 'observed' holds [2], only (-1, 0, 1) are allowed"),
        "row": (lambda columns: columns["row"].__setitem__(4, 32),
                "record 4: row 32 is not a row of the train split (0..31)"),
    }
    for name, (change, message) in damages.items():
        folder = tmp_path / name
        shutil.copytree(shard_folders[3], folder)
        path = rewritten_shard(folder, "train-00002-of-00003.parquet", change)
        with pytest.raises(SPMLError) as error:
            read_shard(open_shards(folder, data), 2)
        assert str(error.value) == f"{path} {message}"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SPMLError, match=f"^{path}: cannot read the shard \\("):
        read_shard(open_shards(folder, data), 2)


def test_an_unreadable_image_in_a_record_stops_or_is_skipped(tiny_dataset, shard_folders):
    index = open_shards(shard_folders[3], load_dataset(tiny_dataset))
    key = next(iter(ShardStream(index, seed=0, rank=0, world_size=1, batch_size=8)))
    epoch, row, entry, labels, observed = key
    assert re.fullmatch(rf"{re.escape(str(index.folder))}/train-0000[0-2]-of-00003\.parquet record \d+", entry["path"])
    records = {policy: StreamedRecords(index.num_rows, {"image": eval_view(8)}, policy, seed=0)
               for policy in ("error", "skip")}
    good = records["error"][key]
    assert good["index"] == row and good["image"].shape == (3, 8, 8)
    assert good["labels"].tolist() == labels.tolist() and good["observed"].tolist() == observed.tolist()
    broken = (epoch, row, {**entry, "bytes": entry["bytes"][:40]}, labels, observed)
    with pytest.raises(SPMLError) as error:
        records["error"][broken]
    assert str(error.value).startswith(f"{entry['path']}: cannot decode image")
    assert records["skip"][broken] == {"skipped": row}


def test_two_processes_read_their_own_shards_and_resume_inside_an_epoch(tiny_dataset, shard_folders, tmp_path):
    out = tmp_path / "ranks.json"
    run_worker("stream_ranks_worker.py", out, tiny_dataset, shard_folders[4], shard_folders[5])
    found = json.loads(out.read_text())
    for count, per_process in ((4, 16), (5, 12)):
        shard = shard_of_row(shard_folders[count])
        ranks = found[str(shard_folders[count])]
        assert [rank["length"] for rank in ranks] == [per_process // 4] * 2  # batches of 4: the same steps
        for epoch in (0, 1):
            rows = [[row for batch in rank["epochs"][epoch] for row in batch] for rank in ranks]
            assert [len(mine) for mine in rows] == [per_process] * 2
            assert not {shard[row] for row in rows[0]} & {shard[row] for row in rows[1]}  # no shard on both
            assert len(set(rows[0] + rows[1])) == 2 * per_process
            if count == 4:
                assert sorted(rows[0] + rows[1]) == list(range(NUM_TRAIN))
        for rank in ranks:
            assert rank["resumed"] == rank["epochs"][1][1:]


def test_require_same_stream():
    stream = {"shards": "abc", "num_processes": 2}
    require_same_stream("ckpt", stream, stream, step_in_epoch=3)
    require_same_stream("ckpt", {"shards": "old", "num_processes": 4}, stream, step_in_epoch=0)  # an epoch's end
    with pytest.raises(SPMLError) as error:
        require_same_stream("ckpt", {"shards": "abc", "num_processes": 4}, stream, step_in_epoch=3)
    assert str(error.value) == ("train.resume: checkpoint ckpt stopped inside an epoch streamed by 4 process(es), "
                                "this run has 2: each process reads its own shards, so finish that epoch with 4")
    with pytest.raises(SPMLError, match="streamed from other shards"):
        require_same_stream("ckpt", {"shards": "old", "num_processes": 2}, stream, step_in_epoch=3)


def test_a_streamed_run_resumed_mid_epoch_gives_the_same_weights(tiny_dataset, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)
    broken_image = load_dataset(dataset).splits["train"]["image"][5]
    (dataset / "images" / broken_image).write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # written into its shard as is
    shards = tmp_path / "shards"
    write_shards(load_dataset(dataset), shards, 3)
    # role keeps a label estimate per dataset row: the rows the records carry index it
    streamed = [f"data.train_shards={shards}", "data.bad_images=skip", "method.name=role"]

    # without a break, loading with 2 worker processes
    straight = run_train(*tiny_run_overrides(dataset, tmp_path / "straight", *streamed, "data.num_workers=2",
                                             "train.checkpoint_every_steps=5", "train.keep_checkpoints=2"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert straight.stdout.splitlines()[1] == (f"train split streamed from 3 shards in {shards}: 32 rows a process "
                                               "and epoch, every row once an epoch")
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2  # once in each of the two epochs
    assert "skipped unreadable images: train rows [5]" in straight.stdout

    # 4 steps an epoch: the checkpoint of step 5, inside epoch 1 and inside its first shard (8 of its 10 or 11 rows
    # to skip), resumed into another folder without workers
    step5 = tmp_path / "straight" / "checkpoints" / "step-000000005"
    resumed = run_train(*tiny_run_overrides(dataset, tmp_path / "broken", *streamed, f"train.resume={step5}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {step5}: epoch 1, step 5" in resumed.stdout
    expected = final_state(tmp_path / "straight")
    assert expected[2]["visits"].tolist() == [0 if row == 5 else 2 for row in range(NUM_TRAIN)]
    assert_same_state(final_state(tmp_path / "broken"), expected)

    # data.bad_images=error, with workers: one line naming the shard and the record
    stopped = run_train(*tiny_run_overrides(dataset, tmp_path / "error", f"data.train_shards={shards}",
                                            "data.num_workers=2"))
    assert stopped.returncode == 2
    last = stopped.stderr.strip().splitlines()[-1]
    holder = next(name for name in sorted(path.name for path in shards.glob("*.parquet"))
                  if 5 in shard_table(shards, name)["row"])
    record = shard_table(shards, holder)["row"].index(5)
    assert last.startswith(f"error: {shards / holder} record {record}: cannot decode image")
    assert "Traceback" not in stopped.stderr and "worker" not in stopped.stderr

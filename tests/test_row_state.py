"""Per-image tables mapped from files (train.row_state_dir), on one process; both ranks of a launch in
test_baselines_ranks.py, a resume through the trainer in test_baselines_train.py."""
import os

import pytest
import torch
from accelerate import Accelerator

from ignore.config import MethodConfig
from ignore.errors import SPMLError
from ignore.losses import row_state
from ignore.losses.registry import build_method
from ignore.losses.row_state import is_mapped, map_file, new_table, read_rows, table_file, write_shared_rows


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def test_a_table_file_written_through_one_mapping_reads_back_through_another(tmp_path):
    path = table_file(tmp_path, (2, 3), torch.float32)
    assert os.path.getsize(path) == 2 * 3 * 4  # its space taken at once
    writer = map_file(path, (2, 3), torch.float32)
    writer[1] = torch.tensor([0.5, -2.0, 1e-30])
    reader = map_file(path, (2, 3), torch.float32)  # as another process of the machine maps it
    assert torch.equal(reader, torch.tensor([[0.0, 0.0, 0.0], [0.5, -2.0, 1e-30]]))


def test_a_mapped_table_holds_its_fill_and_the_written_rows_and_leaves_no_file(accelerator, tmp_path, monkeypatch):
    monkeypatch.setattr(row_state, "BLOCK_BYTES", 24)  # two rows of 3 float32 a block: filled in 3 blocks
    blocks = []

    def fill(start, stop):
        blocks.append((start, stop))
        return torch.arange(3 * start, 3 * stop, dtype=torch.float32).view(-1, 3)

    folder = tmp_path / "tables"  # made if missing
    table = new_table(accelerator, str(folder), (5, 3), fill=fill)
    assert blocks == [(0, 2), (2, 4), (4, 5)]
    assert is_mapped(table) and table.untyped_storage().filename.startswith(str(folder))
    assert os.listdir(folder) == []  # deleted once mapped: the mapping holds it
    write_shared_rows(accelerator, torch.tensor([3, 1]), [table], [torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])])
    assert table.tolist() == [[0, 1, 2], [-4, -5, -6], [6, 7, 8], [-1, -2, -3], [12, 13, 14]]
    assert read_rows(table, torch.tensor([4, 1])).tolist() == [[12, 13, 14], [-4, -5, -6]]
    assert not is_mapped(new_table(accelerator, "", (5, 3), fill=fill))  # "": in memory, filled at once
    assert blocks[-1] == (0, 5)


def test_role_in_files_starts_where_role_in_memory_starts_and_loads_its_state(accelerator, tmp_path, monkeypatch):
    context = dict(num_train_rows=7, positives_per_image=1.0, lr=0.01, seed=3)
    in_memory = build_method(MethodConfig(name="role"), 5, accelerator, **context)
    monkeypatch.setattr(row_state, "BLOCK_BYTES", 40)  # the random start drawn 2 rows at a time
    in_files = build_method(MethodConfig(name="role"), 5, accelerator, **context, row_state_dir=str(tmp_path))
    assert torch.equal(in_files.estimate_logits, in_memory.estimate_logits)
    assert in_files.estimate_logits.abs().max() < 0.406  # uniform in logit(0.4)..logit(0.6)

    state = {name: torch.rand(value.shape, generator=torch.Generator().manual_seed(1))
             for name, value in in_memory.state_dict().items()}
    in_files.load_state_dict(state)  # what a resume does: copied into the files
    in_files.double()  # a move or a cast leaves the mapped tables where they are
    for name, value in in_files.state_dict().items():
        assert is_mapped(value) and value.dtype == torch.float32, name
        assert torch.equal(value, state[name]), name


def test_em_apl_labels_what_a_stable_sort_of_each_column_labels(accelerator, monkeypatch):
    method = build_method(MethodConfig(name="em_apl", warm_up=1, apl_negative_share=0.8), 2, accelerator,
                          num_train_rows=6, epochs=2)
    # class 0: 6 candidates, floor(0.8 x 6 / 1 round) = 4 labelled: the three 0.1s, then the first 0.5 (row 0);
    # class 1: rows 1 and 5 not unknown, row 2 labelled before: floor(0.8 x 4) = 3, all 3 candidates
    method.scores.copy_(torch.tensor([[0.5, 0.75], [0.1, 1.0], [0.5, 0.0], [0.1, 0.75], [0.1, 0.0], [0.9, 0.0]]))
    method.observed_unknown.copy_(torch.tensor([[True, True]] * 5 + [[True, False]]))
    method.observed_unknown[1, 1] = False
    method.visited.fill_(True)
    method.pseudo_negative[2, 1] = True
    method.pseudo_target[2, 1] = 0.25
    for block_bytes in (8, 2**20):  # a row a block, or all at once
        monkeypatch.setattr(row_state, "BLOCK_BYTES", block_bytes)
        method.pseudo_negative.copy_(torch.zeros(6, 2, dtype=torch.bool))
        method.pseudo_negative[2, 1] = True
        method.label_lowest(rounds=1)
        assert method.pseudo_negative.int().tolist() == [[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [0, 0]]
        assert method.pseudo_target[:, 0].tolist() == [0.5, pytest.approx(0.1), 0, pytest.approx(0.1),
                                                       pytest.approx(0.1), 0]
        assert method.pseudo_target[:, 1].tolist() == [0.75, 0, 0.25, 0.75, 0, 0]

    # ties at random levels, blocks of any size: the same labels as a stable sort of whole columns
    generator = torch.Generator().manual_seed(0)
    method = build_method(MethodConfig(name="em_apl", warm_up=1, apl_negative_share=0.7), 9, accelerator,
                          num_train_rows=300, epochs=4)
    levels = torch.tensor([0.0, 1e-30, 0.1, 0.5, 0.50000006, 1.0])
    method.scores.copy_(levels[torch.randint(0, 6, (300, 9), generator=generator)])
    method.observed_unknown.copy_(torch.rand(300, 9, generator=generator) < 0.8)
    method.visited.copy_(torch.rand(300, generator=generator) < 0.9)
    method.pseudo_negative.copy_(torch.rand(300, 9, generator=generator) < 0.2)
    method.pseudo_target.copy_(torch.rand(300, 9, generator=generator))
    expected_target, expected_negative = labels_by_sorting(method, rounds=3)
    before = method.pseudo_negative.clone()
    monkeypatch.setattr(row_state, "BLOCK_BYTES", 9 * 4 * 7)  # 7 rows a block
    method.label_lowest(rounds=3)
    assert torch.equal(method.pseudo_negative, expected_negative) and torch.equal(method.pseudo_target, expected_target)
    labelled = (method.pseudo_negative & ~before).sum(dim=0)
    assert (labelled > 0).all() and (labelled < (method.observed_unknown & ~before).sum(dim=0)).all()


def labels_by_sorting(method, rounds):
    """(pseudo_target, pseudo_negative) after labelling: each class's lowest candidates by a stable argsort."""
    unknown = method.observed_unknown & method.visited[:, None]
    per_round = torch.floor(method.config.apl_negative_share * unknown.sum(dim=0) / rounds)
    candidates = unknown & ~method.pseudo_negative
    scores = torch.where(candidates, method.scores, torch.full_like(method.scores, float("inf")))
    ranks = torch.empty_like(scores, dtype=torch.long)
    ranks.scatter_(0, scores.argsort(dim=0, stable=True),
                   torch.arange(len(scores))[:, None].expand_as(scores).contiguous())
    chosen = (ranks < per_round) & candidates
    return torch.where(chosen, method.scores, method.pseudo_target), method.pseudo_negative | chosen


def test_a_row_state_dir_that_is_a_file_is_one_line_naming_the_key(accelerator, tmp_path):
    (tmp_path / "tables").write_text("")
    with pytest.raises(SPMLError) as error:
        build_method(MethodConfig(name="ll_cp"), 3, accelerator, num_train_rows=4, row_state_dir=str(tmp_path / "tables"))
    assert str(error.value) == f"train.row_state_dir: {tmp_path / 'tables'} is not a folder"

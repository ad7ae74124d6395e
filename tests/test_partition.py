import pytest
import torch

from hessnorm.errors import SelectionError
from hessnorm.partition import Partition
from hessnorm.testing import make_problem


def test_coordinates_and_single():
    p = Partition.coordinates(5)
    assert p.n_blocks == 5 and p.sizes.tolist() == [1] * 5
    s = Partition.single(5)
    assert s.n_blocks == 1 and s.labels.tolist() == [0] * 5
    assert [b.tolist() for b in s.blocks()] == [[0, 1, 2, 3, 4]]


def test_by_tensor_matches_param_slices():
    op = make_problem("mlp")
    p = Partition.by_tensor(op)
    assert p.names == op.param_names
    for b, name in enumerate(op.param_names):
        sl = op.param_slices[name]
        assert torch.equal(p.blocks()[b], torch.arange(sl.start, sl.stop))
    assert Partition.by_tensor(op.param_slices) == p
    assert Partition.by_tensor({n: s for n, s in op.param_shapes.items()}) == p


def test_by_row_rule():
    shapes = {
        "lin.weight": (3, 2),
        "lin.bias": (3,),
        "ln.weight": (4,),
        "ln.bias": (4,),  # no matching >=2-D weight: a block of its own
        "attn.in_proj_weight": (2, 1),
        "attn.in_proj_bias": (2,),
        "odd.bias": (5,),  # weight with other row count
        "odd.weight": (4, 1),
    }
    p = Partition.by_row(shapes)
    lab = p.labels.tolist()
    assert lab[0:6] == [0, 0, 1, 1, 2, 2]  # rows of lin.weight
    assert lab[6:9] == [0, 1, 2]  # lin.bias[i] joins row i
    assert lab[9:13] == [3] * 4 and lab[13:17] == [4] * 4  # LayerNorm tensors
    assert lab[17:19] == [5, 6] and lab[19:21] == [5, 6]  # in_proj weight rows + bias
    assert lab[21:26] == [7] * 5  # unmatched bias
    assert lab[26:30] == [8, 9, 10, 11]
    assert p.names[0] == "lin.weight[0]" and p.names[3] == "ln.weight"


def test_by_row_bias_before_weight_keeps_first_appearance_order():
    p = Partition.by_row({"m.bias": (2,), "m.weight": (2, 3)})
    assert p.labels.tolist() == [0, 1, 0, 0, 0, 1, 1, 1]


def test_by_row_on_models():
    op = make_problem("mlp")
    p = Partition.by_row(op)
    assert p.n_blocks == 12 + 10 and p.sizes.tolist() == [65] * 12 + [13] * 10
    op = make_problem("transformer")
    p = Partition.by_row(op)
    assert int(p.sizes.sum()) == op.d


def test_from_labels_relabels_by_first_appearance():
    p = Partition.from_labels([7, 7, 3, 9, 3])
    assert p.labels.tolist() == [0, 0, 1, 2, 1]


def test_spec_roundtrip():
    op = make_problem("mlp")
    for p in (
        Partition.coordinates(4),
        Partition.single(3),
        Partition.by_tensor(op),
        Partition.by_row(op),
        Partition.from_labels([1, 0, 1]),
    ):
        assert Partition.from_spec(p.spec) == p


@pytest.mark.parametrize(
    "labels, msg",
    [([0, 2, 2], "ids \\[1\\]"), ([-1, 0], ">= 0"), ([0.0, 1.0], "integers"), ([[0, 1]], "1-D")],
)
def test_invalid_labels(labels, msg):
    with pytest.raises(SelectionError, match=msg):
        Partition(torch.tensor(labels))


def test_from_blocks_checks_exactly_one_block():
    assert Partition.from_blocks([[0, 2], [1]]).labels.tolist() == [0, 1, 0]
    with pytest.raises(
        SelectionError, match="2 coordinate\\(s\\) in no block \\(first \\[1, 3\\]\\), 1 in several"
    ):
        Partition.from_blocks([[0, 2], [2]], d=4)
    with pytest.raises(SelectionError, match="empty"):
        Partition.from_blocks([[0], []])


def test_check_dim_and_bad_inputs():
    with pytest.raises(SelectionError, match="covers 3 coordinates but the operator has d = 4"):
        Partition.single(3).check_dim(4)
    with pytest.raises(SelectionError, match="positive"):
        Partition.coordinates(0)
    with pytest.raises(SelectionError, match="mapping name -> shape"):
        Partition.by_tensor(42)
    with pytest.raises(SelectionError, match="unknown partition kind"):
        Partition.from_spec({"kind": "nope"})
    with pytest.raises(SelectionError, match="do not tile"):
        Partition.by_tensor({"a": slice(0, 2), "b": slice(3, 4)})

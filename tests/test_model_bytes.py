"""What a model's weights take in memory: plain, shared and packed tensors."""

import torch
from torch import nn

from autocompress.measure import _tensor_bytes, model_bytes


class Packed(torch.Tensor):
    """A float matrix stored as int8 values and one scale per row: a stand-in for a packed
    quantized weight (torchao's int4 tensors), whose logical shape x dtype overstates what it holds."""

    @staticmethod
    def __new__(cls, values: torch.Tensor, scale: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, values.shape, dtype=torch.float32)

    def __init__(self, values: torch.Tensor, scale: torch.Tensor):
        self.values, self.scale = values, scale

    def __tensor_flatten__(self):
        return ["values", "scale"], None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.detach.default:  # state_dict() detaches: the same packed values
            return Packed(args[0].values, args[0].scale)
        raise NotImplementedError(f"{func} on a packed stand-in")  # only its bytes are counted here


def test_a_packed_tensor_counts_the_tensors_it_holds_not_its_logical_size():
    packed = Packed(torch.zeros(64, 32, dtype=torch.int8), torch.ones(64))
    assert packed.numel() * packed.element_size() == 64 * 32 * 4  # what counting the logical tensor would say
    assert _tensor_bytes(packed) == 64 * 32 + 64 * 4
    assert _tensor_bytes(torch.zeros(64, 32)) == 64 * 32 * 4


def test_a_tied_weight_counts_once():
    embedding, head = nn.Embedding(100, 16), nn.Linear(16, 100, bias=False)
    head.weight = embedding.weight
    assert model_bytes(nn.ModuleList([embedding, head])) == 100 * 16 * 4


def test_packed_weights_of_the_same_shape_count_each_and_a_shared_one_once():
    """A wrapper subclass reports no memory of its own (torchao's int4 tensors: data_ptr 0 for every one),
    so telling two apart by it would count one layer for all the layers of a shape: 30 decoder blocks
    of SmolLM2 read as one (session 9)."""
    first, second = nn.Linear(32, 64, bias=False), nn.Linear(32, 64, bias=False)
    for layer in (first, second):
        del layer.weight
        layer.register_buffer("weight", Packed(torch.randint(-8, 8, (64, 32), dtype=torch.int8), torch.ones(64)))
    one = 64 * 32 + 64 * 4
    assert first.weight.data_ptr() == second.weight.data_ptr() == 0
    assert model_bytes(nn.ModuleList([first, second])) == 2 * one
    assert model_bytes(nn.ModuleList([first, first])) == one  # one module used twice

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

"""Seeded steps must neither depend on nor disturb the caller's global torch RNG."""
import torch

from ofa.seeding import derive_seed, torch_seed


def test_torch_seed_restores_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch_seed(7):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with torch_seed(7):
        assert torch.equal(torch.rand(3), inside)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "teacher", 1) == derive_seed(0, "teacher", 1)
    assert derive_seed(0, "teacher", 1) != derive_seed(0, "teacher", 2)
    assert 0 <= derive_seed("x") < 2 ** 60

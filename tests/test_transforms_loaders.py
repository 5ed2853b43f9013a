"""The seeded BatchLoader and the batched augmentation (fermetric.data.loaders / transforms)."""
from __future__ import annotations

import pytest
import torch

from fermetric.config import AugmentConfig
from fermetric.data import BatchAugment, BatchLoader, FERDataset
from fermetric.data.classes import FER2013_CLASSES
from fermetric.data.transforms import random_affine, random_crop, random_erasing, random_hflip


def _dataset(n: int = 50) -> FERDataset:
    """Distinct images (image i is filled with i, plus a pattern) and labels i % 7."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 48, 48), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # image id, so batches are traceable
    return FERDataset(images=images, labels=torch.arange(n) % 7, class_names=FER2013_CLASSES)


def _batches(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(loader)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 1, 48, 48, generator=_gen(seed))


# ---- BatchLoader -------------------------------------------------------------------------


def test_same_seed_same_batches_with_augmentation():
    ds = _dataset()
    a = _batches(BatchLoader(ds, 8, shuffle=True, augment=BatchAugment(), seed=3))
    b = _batches(BatchLoader(ds, 8, shuffle=True, augment=BatchAugment(), seed=3))
    assert len(a) == len(b) == 7
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    c = _batches(BatchLoader(ds, 8, shuffle=True, augment=BatchAugment(), seed=4))
    assert not torch.equal(torch.cat([i for _, _, i in a]), torch.cat([i for _, _, i in c]))


def test_set_epoch_changes_order_and_is_reproducible():
    loader = BatchLoader(_dataset(), 10, shuffle=True, seed=1)
    order = {}
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        idx = torch.cat([i for _, _, i in loader])
        assert sorted(idx.tolist()) == list(range(50))  # every image once per epoch
        if epoch in order:
            assert torch.equal(idx, order[epoch])
        order[epoch] = idx
    assert not torch.equal(order[0], order[1])


def test_batches_shapes_values_and_alignment():
    ds = _dataset(23)
    loader = BatchLoader(ds, 5, shuffle=True, seed=0)
    batches = _batches(loader)
    assert len(loader) == len(batches) == 5
    assert [len(y) for _, y, _ in batches] == [5, 5, 5, 5, 3]
    for x, y, idx in batches:
        assert x.dtype == torch.float32 and x.shape == (len(y), 1, 48, 48)
        assert y.dtype == torch.int64 and idx.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert torch.equal(y, ds.labels[idx])
        assert torch.allclose(x, ds.images[idx].float() / 255.0)  # no augment: the images themselves
    dropped = BatchLoader(ds, 5, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 4 and all(len(y) == 5 for _, y, _ in dropped)


def test_no_shuffle_keeps_dataset_order():
    idx = torch.cat([i for _, _, i in BatchLoader(_dataset(17), 4)])
    assert idx.tolist() == list(range(17))


def test_augmented_batches_stay_in_unit_range():
    loader = BatchLoader(_dataset(), 16, shuffle=True, augment=BatchAugment(), seed=0)
    for x, y, _ in loader:
        assert x.shape == (len(y), 1, 48, 48)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("world_size", [2, 3])
def test_world_size_shards_disjoint_batches(world_size):
    ds = _dataset(50)
    full = [i for _, _, i in BatchLoader(ds, 4, shuffle=True, seed=5)]  # 13 batches
    usable = len(full) - len(full) % world_size
    shards = [[i for _, _, i in BatchLoader(ds, 4, shuffle=True, seed=5, rank=r, world_size=world_size)]
              for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(set(seen.tolist())) == len(seen)  # disjoint
    assert sorted(seen.tolist()) == sorted(torch.cat(full[:usable]).tolist())  # covers what is usable
    # the ranks together see the same batches as one process (same seed, same epoch)
    assert sorted(tuple(b.tolist()) for s in shards for b in s) == sorted(tuple(b.tolist()) for b in full[:usable])


def test_batch_sampler_is_used():
    ds = _dataset(30)
    calls = []

    def sampler(g: torch.Generator):
        calls.append(g)
        yield [0, 1, 2]
        yield [7, 7, 9, 29]  # a sampler may repeat indices (m-per-class batches do)
        yield [int(torch.randint(0, 30, (1,), generator=g))]

    loader = BatchLoader(ds, 64, shuffle=True, batch_sampler=sampler, seed=2)
    batches = _batches(loader)
    assert calls and all(isinstance(g, torch.Generator) for g in calls)
    assert [i.tolist()[:4] for _, _, i in batches[:2]] == [[0, 1, 2], [7, 7, 9, 29]]
    assert len(batches) == 3
    for _, y, i in batches:
        assert torch.equal(y, ds.labels[i])
    # the sampler's draws come from the loader's seeded generator
    again = _batches(BatchLoader(ds, 64, batch_sampler=sampler, seed=2))
    assert torch.equal(batches[2][2], again[2][2])
    # and the sampler's batches are sharded like any others
    shard = _batches(BatchLoader(ds, 64, batch_sampler=sampler, seed=2, rank=1, world_size=2))
    assert [i.tolist() for _, _, i in shard] == [[7, 7, 9, 29]]


def test_bad_batch_size():
    with pytest.raises(ValueError):
        BatchLoader(_dataset(5), 0)


# ---- transforms ----------------------------------------------------------------------------


def test_hflip_is_a_flip():
    x = _batch()
    assert torch.equal(random_hflip(x, 1.0, _gen()), x.flip(-1))
    assert torch.equal(random_hflip(x, 0.0, _gen()), x)
    x = _batch(20)
    y = random_hflip(x, 0.5, _gen(3))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_padding_zero_is_identity():
    x = _batch()
    assert torch.equal(random_crop(x, 0, _gen()), x)


def test_crop_is_a_window_of_the_zero_padded_image():
    x = _batch(8)
    pad = 3
    y = random_crop(x, pad, _gen(2))
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = []
    for i in range(len(x)):
        hits = [(oy, ox) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)
                if torch.equal(y[i], padded[i, :, oy:oy + 48, ox:ox + 48])]
        assert hits, f"image {i} is not a crop of its padded input"
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # offsets are drawn per image


def test_affine_with_negligible_parameters_is_identity_and_no_op_returns_input():
    x = _batch()
    assert random_affine(x, 0.0, 0.0, 0.0, _gen()) is x
    y = random_affine(x, 1e-6, 1e-6, 1e-6, _gen())  # goes through affine_grid / grid_sample
    assert torch.allclose(y, x, atol=1e-4)


def test_affine_moves_pixels_but_keeps_the_batch_shape():
    x = _batch()
    y = random_affine(x, 10.0, 0.1, 0.05, _gen())
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
    assert torch.equal(y, random_affine(x, 10.0, 0.1, 0.05, _gen()))  # seeded


def test_erasing_replaces_one_rectangle():
    x = torch.zeros(10, 1, 48, 48)  # noise in [0, 1) replaces zeros: the changed pixels are the rectangle
    y = random_erasing(x, 1.0, (0.02, 0.15), _gen(4))
    for i in range(len(x)):
        changed = (y[i, 0] != 0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        # a solid rectangle (allowing a noise draw of exactly 0, which has probability ~0)
        assert int(changed.sum()) >= h * w - 1
        assert 0.01 <= h * w / 48**2 <= 0.2
    assert torch.equal(random_erasing(x, 0.0, (0.02, 0.15), _gen()), x)


def test_batch_augment_disabled_is_identity_and_inputs_are_left_unchanged():
    x = _batch()
    x_copy = x.clone()
    assert torch.equal(BatchAugment(AugmentConfig(enabled=False))(x, _gen()), x)
    y = BatchAugment()(x, _gen())
    assert torch.equal(x, x_copy)
    assert y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert torch.equal(y, BatchAugment()(x, _gen()))
    assert not torch.equal(y, BatchAugment()(x, _gen(1)))


def test_augment_never_changes_the_callers_tensor():
    import torch

    from fermetric.config import AugmentConfig
    from fermetric.data.transforms import BatchAugment

    x = torch.full((2, 1, 48, 48), 1.5)
    noop = AugmentConfig(crop_padding=0, hflip=0, rotation=0, scale=0, shift=0, erasing=0)
    out = BatchAugment(noop)(x, torch.Generator().manual_seed(0))
    assert float(x.max()) == 1.5 and float(out.max()) == 1.0


def test_loader_rejects_bad_rank():
    import pytest
    import torch

    from fermetric.data import BatchLoader, FERDataset

    ds = FERDataset(torch.zeros(4, 1, 48, 48, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ("a",))
    for rank, world in ((2, 2), (0, 0), (-1, 2)):
        with pytest.raises(ValueError, match="rank"):
            BatchLoader(ds, 2, rank=rank, world_size=world)

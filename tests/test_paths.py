"""Scan paths, cross_scan and cross_merge against explicit constructions."""
import pytest
import torch

from ssm_kernels import (ATROUS, BIDIRECTIONAL, CROSS, MULTISCALE_LOW, ROW, ScanPaths, ScanPattern, column_major,
                         cross_merge, cross_scan, row_major)


def explicit_orders(height, width):
    """The four VMamba directions written out position by position."""
    row = [(h, w) for h in range(height) for w in range(width)]
    col = [(h, w) for w in range(width) for h in range(height)]
    return [row, col, row[::-1], col[::-1]]


@pytest.mark.parametrize("height,width", [(3, 5), (5, 3), (1, 4), (4, 4)])
def test_cross_scan_visits_positions_in_vmamba_order(height, width):
    x = torch.randn(2, height, width, 6)
    seq = cross_scan(x, CROSS(height, width))
    assert seq.shape == (2, 4, 6, height * width)
    for k, order in enumerate(explicit_orders(height, width)):
        expected = torch.stack([x[:, h, w, :] for h, w in order], dim=-1)
        torch.testing.assert_close(seq[:, k], expected)


@pytest.mark.parametrize("height,width", [(3, 5), (2, 7)])
def test_cross_merge_sums_each_direction_back_onto_its_position(height, width):
    y = torch.randn(2, 4, 6, height * width)
    out = cross_merge(y, CROSS(height, width))
    expected = torch.zeros(2, height, width, 6)
    for k, order in enumerate(explicit_orders(height, width)):
        for t, (h, w) in enumerate(order):
            expected[:, h, w, :] += y[:, k, :, t]
    torch.testing.assert_close(out, expected)
    # a full 4-direction scan visits every position once per direction
    x = torch.randn(2, height, width, 6)
    torch.testing.assert_close(cross_merge(cross_scan(x, CROSS(height, width)), CROSS(height, width)), 4 * x)


def test_per_direction_maps_are_read_by_their_own_direction():
    height, width = 3, 4
    x = torch.randn(2, height, width, 4, 5)
    seq = cross_scan(x, CROSS(height, width))
    for k, order in enumerate(explicit_orders(height, width)):
        expected = torch.stack([x[:, h, w, k, :] for h, w in order], dim=-1)
        torch.testing.assert_close(seq[:, k], expected)


def test_merge_is_the_adjoint_of_scan():
    paths = CROSS(4, 6)
    x = torch.randn(2, 4, 6, 3, requires_grad=True)
    y = torch.randn(2, 4, 3, 24)
    (grad,) = torch.autograd.grad((cross_scan(x, paths) * y).sum(), x)
    torch.testing.assert_close(grad, cross_merge(y, paths))


def test_split_channels_and_strided_subsets():
    """Per-group paths (direction k owns channel group k) on a strided sub-grid each."""
    height, width = 4, 4
    subgrids = [row_major(height, width).view(height, width)[dh::2, dw::2].reshape(-1)
                for dh in (0, 1) for dw in (0, 1)]
    paths = ScanPaths.from_orders(subgrids, height, width, split_channels=True)
    x = torch.randn(1, height, width, 8)
    seq = cross_scan(x, paths)
    assert seq.shape == (1, 4, 2, 4)
    torch.testing.assert_close(seq[0, 3, :, 0], x[0, 1, 1, 6:8])
    # each position is visited by one direction only, so merge inverts scan on its channel group
    out = cross_merge(seq, paths)
    groups = torch.zeros(1, height, width, 4, 2)
    for k, idx in enumerate(subgrids):
        for p in idx.tolist():
            groups[0, p // width, p % width, k] = x[0, p // width, p % width, 2 * k:2 * k + 2]
    torch.testing.assert_close(out, groups.flatten(-2))


@pytest.mark.parametrize("height,width", [(4, 3), (1, 5), (2, 2)])
def test_multiscale_low_path_visits_three_orders_in_one_sequence(height, width):
    """MSVMamba's half-resolution branch: row-major reversed, column-major, column-major reversed, one after
    the other in ONE direction; merging sums the three visits of every position."""
    row = [(h, w) for h in range(height) for w in range(width)]
    col = [(h, w) for w in range(width) for h in range(height)]
    order = row[::-1] + col + col[::-1]
    paths = MULTISCALE_LOW(height, width)
    assert paths.num_directions == 1 and paths.length == 3 * height * width and paths.repeats == 3
    assert paths.index[0].tolist() == [h * width + w for h, w in order]
    x = torch.randn(2, height, width, 5)
    seq = cross_scan(x, paths)
    torch.testing.assert_close(seq[:, 0], torch.stack([x[:, h, w] for h, w in order], dim=-1))
    y = torch.randn(2, 1, 5, 3 * height * width)
    expected = torch.zeros(2, height, width, 5)
    for t, (h, w) in enumerate(order):
        expected[:, h, w] += y[:, 0, :, t]
    torch.testing.assert_close(cross_merge(y, paths), expected)
    assert ROW(height, width).index.tolist() == [list(range(height * width))] and ROW(height, width).repeats == 1
    assert CROSS(height, width).repeats == 1


def test_pattern_and_orders():
    assert CROSS.num_directions == 4 and CROSS(3, 5).length == 15
    assert CROSS(3, 5) is CROSS(3, 5)
    assert column_major(2, 3).tolist() == [0, 3, 1, 4, 2, 5]
    bad = ScanPattern("bad", 2, lambda h, w: CROSS(h, w))
    with pytest.raises(ValueError, match="exists already"):
        ScanPattern("bad", 2, lambda h, w: CROSS(h, w))
    with pytest.raises(ValueError, match="declared 2"):
        bad(2, 2)


def test_bad_maps_raise_clear_errors():
    with pytest.raises(ValueError, match="H x W = 3 x 5"):
        cross_scan(torch.randn(1, 5, 3, 2), CROSS(3, 5))
    with pytest.raises(ValueError, match="K = 4 maps"):
        cross_scan(torch.randn(1, 3, 5, 2, 2), CROSS(3, 5))
    with pytest.raises(ValueError, match="cross_merge"):
        cross_merge(torch.randn(1, 4, 2, 14), CROSS(3, 5))
    with pytest.raises(ValueError, match="outside the 2x2 map"):
        ScanPaths(torch.tensor([[0, 4]]), 2, 2)


def test_bidirectional_token_sequence():
    """Vim's paths over a 1 x L sequence: direction 0 reads channel group 0 forward, direction 1 group 1
    backward; merge puts each result back at its position, the groups side by side."""
    L = 7
    paths = BIDIRECTIONAL(1, L)
    assert paths.split_channels and paths.num_directions == 2
    assert paths.index.tolist() == [list(range(L)), list(range(L))[::-1]]
    x = torch.randn(2, 1, L, 6)
    seq = cross_scan(x, paths)
    torch.testing.assert_close(seq[:, 0], x[:, 0, :, :3].transpose(1, 2))
    torch.testing.assert_close(seq[:, 1], x[:, 0, :, 3:].flip(1).transpose(1, 2))
    torch.testing.assert_close(cross_merge(seq, paths), x)


def explicit_atrous(height, width):
    """EfficientVMamba's four sub-grids written out: (even, even) row-major, (odd, even) column-major,
    (even, odd) row-major, (odd, odd) column-major."""
    return [[(h, w) for h in range(0, height, 2) for w in range(0, width, 2)],
            [(h, w) for w in range(0, width, 2) for h in range(1, height, 2)],
            [(h, w) for h in range(0, height, 2) for w in range(1, width, 2)],
            [(h, w) for w in range(1, width, 2) for h in range(1, height, 2)]]


@pytest.mark.parametrize("height,width", [(2, 2), (4, 6), (6, 4), (2, 8)])
def test_atrous_paths_are_the_four_subgrids_in_the_official_order(height, width):
    paths = ATROUS(height, width)
    assert paths.disjoint and not paths.split_channels and paths.length == height * width // 4
    for k, order in enumerate(explicit_atrous(height, width)):
        assert paths.index[k].tolist() == [h * width + w for h, w in order]
        # direction k visits its own 2x2 phase: row parity + 2 * column parity = k
        assert all(h % 2 + 2 * (w % 2) == k for h, w in order)
    x = torch.randn(2, height, width, 3)
    seq = cross_scan(x, paths)
    for k, order in enumerate(explicit_atrous(height, width)):
        torch.testing.assert_close(seq[:, k], torch.stack([x[:, h, w] for h, w in order], dim=-1))
    # each position visited once: merge inverts scan
    torch.testing.assert_close(cross_merge(seq, paths), x)


def test_atrous_needs_an_even_map_and_disjoint_paths_are_checked():
    with pytest.raises(ValueError, match="even-sized map, got 5x4"):
        ATROUS(5, 4)
    with pytest.raises(ValueError, match="exactly once"):
        ScanPaths.from_orders([torch.arange(4), torch.arange(4)], 2, 4, disjoint=True)
    with pytest.raises(ValueError, match="exactly once"):
        ScanPaths.from_orders([torch.arange(2), torch.arange(2)], 2, 2, disjoint=True)

"""EdgeTensorProduct reproduces e3nn.o3.TensorProduct ('uvu', per-edge weights) exactly."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from multiscale.models.tensor_product import EdgeTensorProduct


@pytest.mark.parametrize(
    "irreps_in, irreps_target",
    [
        ("4x0e", "4x0e + 4x1o + 4x2e"),  # first layer: scalars in
        ("3x0e + 2x1o + 2x2e", "3x0e + 5x0e"),  # last layer: scalars out
        ("2x0e + 3x1o + 2x1e + 2x2e", "2x0e + 2x1o + 2x1e + 2x2e + 2x2o + 1x0o"),  # general
    ],
)
def test_matches_e3nn_tensor_product(irreps_in, irreps_target):
    torch.manual_seed(0)
    irreps_in = o3.Irreps(irreps_in)
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    ours = EdgeTensorProduct(irreps_in, irreps_sh, o3.Irreps(irreps_target)).to(torch.float64)
    instructions = [(p.i_in, p.i_sh, k, "uvu", True) for k, p in enumerate(ours.paths)]
    # e3nn's own product, with the same instructions in the same order (one output slot each)
    reference = o3.TensorProduct(
        irreps_in, irreps_sh, ours.irreps_out, instructions, shared_weights=False, internal_weights=False
    ).to(torch.float64)
    assert reference.weight_numel == ours.weight_numel
    n_edges = 17
    x = irreps_in.randn(n_edges, -1, dtype=torch.float64)
    y = o3.spherical_harmonics(irreps_sh, torch.randn(n_edges, 3, dtype=torch.float64), normalize=True)
    w = torch.randn(n_edges, ours.weight_numel, dtype=torch.float64)
    expected = reference(x, y, w)
    assert expected.abs().max() > 1e-3
    # e3nn's generated code holds its Wigner-3j constants rounded to float32 for paths with
    # l_in, l_out > 0 (ours uses e3nn.o3.wigner_3j in float64, exact to 1e-16), hence 1e-6.
    torch.testing.assert_close(ours(x, y, w), expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
    receivers = torch.randint(0, 5, (n_edges,))
    summed = torch.zeros(5, expected.shape[1], dtype=torch.float64).index_add(0, receivers, ours(x, y, w))
    torch.testing.assert_close(ours.aggregate(x, y, w, receivers, 5), summed, rtol=1e-12, atol=1e-12)


def wigner_d(l: int, rot: torch.Tensor) -> torch.Tensor:
    """D_l(R) solved exactly (float64 least squares) from Y_l(R x) = D_l(R) Y_l(x): independent of
    e3nn's D_from_matrix, which is only float32-accurate."""
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(l))
    y = o3.spherical_harmonics(l, x, normalize=True)
    y_rot = o3.spherical_harmonics(l, x @ rot.T, normalize=True)
    return torch.linalg.lstsq(y, y_rot).solution.T


def block_d(irreps: o3.Irreps, rot: torch.Tensor) -> torch.Tensor:
    return torch.block_diag(*[wigner_d(ir.l, rot) for mul, ir in irreps for _ in range(mul)])


def test_equivariance_under_rotation():
    torch.manual_seed(1)
    irreps_in = o3.Irreps("2x0e + 2x1o + 2x2e")
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    tp = EdgeTensorProduct(irreps_in, irreps_sh, irreps_in).to(torch.float64)
    rot = o3.rand_matrix(dtype=torch.float64)
    x = irreps_in.randn(9, -1, dtype=torch.float64)
    vec = torch.randn(9, 3, dtype=torch.float64)
    w = torch.randn(9, tp.weight_numel, dtype=torch.float64)
    sh = lambda v: o3.spherical_harmonics(irreps_sh, v, normalize=True)  # noqa: E731
    d_in = block_d(irreps_in, rot)
    d_out = block_d(tp.irreps_out, rot)
    torch.testing.assert_close(tp(x @ d_in.T, sh(vec @ rot.T), w), tp(x, sh(vec), w) @ d_out.T, rtol=1e-11, atol=1e-11)

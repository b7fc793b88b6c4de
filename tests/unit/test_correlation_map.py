"""The correlation map, its fixed point and depth scale, and the critical line, against independent
computations: Gauss-Hermite quadrature written here, the arc-cosine kernel of ReLU in closed form,
finite differences, and a wide network's measured correlations."""

import itertools
import math

import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet

import vglib


def hermite_pair(f, q, c, points=80):
    """``E[f(u1) f(u2)]`` by a Gauss-Hermite product rule (probabilists' weights), independent of vglib."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    w = w / w.sum()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    return float(np.sum(np.outer(w, w) * f(u1) * f(u2)))


def hermite_q_star(sigma_w2, sigma_b2, points=80):
    z, w = np.polynomial.hermite_e.hermegauss(points)
    w = w / w.sum()
    q = 1.0
    for _ in range(2000):
        q = sigma_w2 * float(np.sum(w * np.tanh(math.sqrt(q) * z) ** 2)) + sigma_b2
    return q


@pytest.mark.parametrize(
    ("sigma_w2", "sigma_b2", "c"), [(1.5, 0.05, 0.3), (3.0, 0.05, 0.9), (1.0, 0.2, -0.4)]
)
def test_tanh_correlation_map_matches_gauss_hermite(sigma_w2, sigma_b2, c):
    q = hermite_q_star(sigma_w2, sigma_b2)
    expected = (sigma_w2 * hermite_pair(np.tanh, q, c) + sigma_b2) / q
    assert vglib.correlation_map("tanh", sigma_w2, sigma_b2, c) == pytest.approx(expected, abs=1e-7)


def test_relu_correlation_map_is_the_arc_cosine_kernel():
    # E[relu(u1) relu(u2)] = q (sqrt(1 - c^2) + (pi - arccos c) c) / (2 pi)  (Cho & Saul 2009)
    sigma_w2, sigma_b2 = 1.5, 0.1
    q = sigma_b2 / (1 - sigma_w2 / 2)
    for c in (0.0, 0.3, 0.8, 0.99):
        pair = q * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / (2 * math.pi)
        expected = (sigma_w2 * pair + sigma_b2) / q
        assert vglib.correlation_map("relu", sigma_w2, sigma_b2, c) == pytest.approx(expected, abs=2e-4)


def test_the_map_fixes_one():
    for sigma_w2 in (0.8, 1.5, 3.0):
        assert vglib.correlation_map("tanh", sigma_w2, 0.05, 1.0) == pytest.approx(1.0, abs=1e-10)


def test_ordered_phase_converges_to_one_with_chi_c_equal_to_chi_1():
    assert vglib.correlation_fixed_point("tanh", 1.2, 0.05) == 1.0
    assert vglib.chi_c("tanh", 1.2, 0.05) == pytest.approx(vglib.chi_1("tanh", 1.2, 0.05), rel=1e-9)
    # ReLU's chi_1 = sigma_w2 / 2 whatever q*, so xi_c = -1 / ln(sigma_w2 / 2) in the ordered phase
    assert vglib.correlation_depth_scale("relu", 1.5, 0.1) == pytest.approx(-1 / math.log(0.75), rel=1e-6)


def test_chaotic_fixed_point_and_its_slope_by_finite_differences():
    sigma_w2, sigma_b2 = 3.0, 0.05
    c_star = vglib.correlation_fixed_point("tanh", sigma_w2, sigma_b2)
    assert 0 < c_star < 1
    assert vglib.correlation_map("tanh", sigma_w2, sigma_b2, c_star) == pytest.approx(c_star, abs=1e-9)
    h = 1e-4
    slope = (
        vglib.correlation_map("tanh", sigma_w2, sigma_b2, c_star + h)
        - vglib.correlation_map("tanh", sigma_w2, sigma_b2, c_star - h)
    ) / (2 * h)
    assert vglib.chi_c("tanh", sigma_w2, sigma_b2) == pytest.approx(slope, rel=1e-5)
    xi_c = vglib.correlation_depth_scale("tanh", sigma_w2, sigma_b2)
    assert xi_c == pytest.approx(-1 / math.log(slope), rel=1e-4)


def test_odd_activation_without_bias_decorrelates_completely():
    assert vglib.correlation_fixed_point("tanh", 2.0, 0.0) == pytest.approx(0.0, abs=1e-12)


def test_depth_scale_diverges_at_the_critical_line():
    critical = vglib.critical_sigma_w2("tanh", 0.05)
    assert vglib.chi_1("tanh", critical, 0.05) == pytest.approx(1.0, abs=1e-9)
    below = vglib.correlation_depth_scale("tanh", critical * 0.98, 0.05)
    above = vglib.correlation_depth_scale("tanh", critical * 1.02, 0.05)
    far = vglib.correlation_depth_scale("tanh", 4.0, 0.05)
    assert below > 50 and above > 50 and far < 10


def test_critical_line_of_tanh_starts_at_one_and_rises_with_the_bias():
    assert vglib.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    values = [vglib.critical_sigma_w2("tanh", b) for b in (0.0, 0.01, 0.05, 0.1)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert vglib.critical_sigma_w2("relu", 0.05) == pytest.approx(2.0, abs=1e-6)


def test_correlation_propagation_matches_a_wide_network():
    depth, width, sigma_w2, sigma_b2, c0 = 12, 2000, 1.5, 0.05, 0.5
    net = vglib.build_gaussian_mlp(depth, width, "tanh", sigma_w2, sigma_b2, seed=0).double()
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, width, generator=g, dtype=torch.float64)
    x2 = c0 * a + math.sqrt(1 - c0 * c0) * b
    x1 = a * (x2.norm() / a.norm())  # equal norms; correlation as measured, not c0 exactly
    c_in = float(x1 @ x2 / (x1.norm() * x2.norm()))
    q_in = float(x1 @ x1 / width)
    measured = []
    h = torch.stack([x1, x2])
    for module in net:
        with torch.no_grad():
            h = module(h)
        if isinstance(module, torch.nn.Linear) and len(measured) < depth:
            measured.append(float(h[0] @ h[1] / (h[0].norm() * h[1].norm())))
    predicted = vglib.correlation_propagation("tanh", sigma_w2, sigma_b2, c_in, depth=depth, q0=q_in)
    np.testing.assert_allclose(measured, predicted, atol=0.05)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        vglib.correlation_map("tanh", 1.5, 0.05, 1.5)
    with pytest.raises(ValueError, match="sigma_b2 > 0"):
        vglib.correlation_map("tanh", 0.5, 0.0, 0.5)  # q* = 0: the map is undefined
    with pytest.raises(ValueError, match="tanh"):
        vglib.correlation_fixed_point("tanhh", 1.5, 0.05)
    with pytest.raises(ValueError, match="sigma_w2"):
        vglib.chi_c("tanh", -1.0, 0.05)
    with pytest.raises(ValueError, match="sigma_b2"):
        vglib.critical_sigma_w2("tanh", -0.1)
    with pytest.raises(ValueError, match="depth"):
        vglib.correlation_propagation("tanh", 1.5, 0.05, 0.5, depth=0)


def test_phase_diagram_draws_the_critical_line_where_chi_1_is_one():
    fig = vglib.plot_phase_diagram(
        "tanh", np.linspace(0.5, 3.0, 11), np.linspace(0.0, 0.2, 5), {"x": (1.0, 0.0)}
    )
    ax = fig.axes[0]
    # the contour chi_1 = 1 passes through sigma_w2 = 1 at sigma_b2 = 0
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    paths = [p for contour in contours for p in contour.get_paths()]
    vertices = np.concatenate([p.vertices for p in paths if len(p.vertices)])
    bottom = vertices[np.argmin(vertices[:, 1])]
    assert bottom[1] == pytest.approx(0.0, abs=1e-9) and bottom[0] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="at least two"):
        vglib.plot_phase_diagram("tanh", [1.0], [0.0, 0.1])


def test_trainable_depth_plot_checks_its_shapes():
    fig = vglib.plot_trainable_depth(
        np.array([1.0, 2.0]), np.array([6, 12, 24]), np.array([[1, 0.5, 0], [1, 1, 0.5]]),
        {"6 xi_c": (np.array([1.0, 2.0]), np.array([20.0, 40.0]))}, {1.0: 12.0, 2.0: float("inf")},
    )  # fmt: skip
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="shape"):
        vglib.plot_trainable_depth(np.array([1.0]), np.array([6, 12]), np.zeros((2, 2)), {})

"""The activation registry: names, derivatives against autograd-free formulas, and their bounds."""

import math

import pytest
import torch

import vglib
from vglib.activations import activation_derivative, get_activation

REQUIRED = {"sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"}
GRID = torch.linspace(-20.0, 20.0, 400_001, dtype=torch.float64)


def test_registry_holds_the_required_activations():
    assert REQUIRED <= set(vglib.ACTIVATIONS)
    assert all(isinstance(name, str) for name in vglib.ACTIVATIONS)


@pytest.mark.parametrize("name", vglib.ACTIVATIONS)
def test_declared_bound_is_the_supremum_of_the_derivative(name):
    derivative = activation_derivative(name, GRID)
    bound = get_activation(name).derivative_bound
    assert derivative.abs().max() <= bound + 1e-9  # never exceeded ...
    assert derivative.abs().max() >= bound - 1e-3  # ... and reached on the grid: it is tight


def test_sigmoid_and_tanh_derivative_bounds_are_a_quarter_and_one():
    assert activation_derivative("sigmoid", GRID).max() <= 0.25
    assert activation_derivative("tanh", GRID).max() <= 1.0
    assert get_activation("sigmoid").derivative_bound == 0.25
    assert get_activation("tanh").derivative_bound == 1.0


def test_derivatives_match_closed_forms():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    s = torch.sigmoid(x)
    torch.testing.assert_close(activation_derivative("sigmoid", x), s * (1 - s))
    torch.testing.assert_close(activation_derivative("tanh", x), 1 - torch.tanh(x) ** 2)
    relu = activation_derivative("relu", x[x != 0])
    torch.testing.assert_close(relu, (x[x != 0] > 0).double())
    gelu_prime = 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    torch.testing.assert_close(activation_derivative("gelu", x), gelu_prime)


def test_only_sigmoid_and_tanh_saturate():
    saturating = {name for name in vglib.ACTIVATIONS if get_activation(name).saturating}
    assert saturating == {"sigmoid", "tanh"}
    far = torch.tensor([-30.0, 30.0], dtype=torch.float64)
    for name in saturating:
        assert activation_derivative(name, far).abs().max() < 1e-12


def test_activation_applies_elementwise_and_keeps_shape():
    x = torch.randn(3, 4)
    act = get_activation("tanh")
    torch.testing.assert_close(act(x), torch.tanh(x))
    assert act.derivative(x).shape == x.shape


def test_unknown_activation_names_the_valid_choices():
    with pytest.raises(ValueError) as info:
        get_activation("sigmod")
    message = str(info.value)
    assert "'sigmod'" in message and "Did you mean 'sigmoid'" in message
    for name in vglib.ACTIVATIONS:
        assert repr(name) in message


def test_activation_name_must_be_a_string():
    with pytest.raises(TypeError, match="sigmoid"):
        get_activation(torch.nn.Sigmoid)


def test_derivative_rejects_non_float_input():
    with pytest.raises(TypeError, match="floating-point"):
        activation_derivative("relu", torch.arange(3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        activation_derivative("relu", [1.0, 2.0])

"""The harness tasks need a nonlinear model: checked against the theory of why (an even function has
no linear part) and against their linear baselines."""

import numpy as np
import pytest
import torch

import vglib
from vglib.tasks import TASKS, harness_task, one_hidden_layer_width, product_teacher


def test_the_product_teacher_is_even_so_it_has_no_linear_part():
    x, y = product_teacher(256, seed=3)
    a, b = (vglib.build_mlp(4, 32, "tanh", "xavier", seed=1234 + i, in_features=16) for i in range(2))
    with torch.no_grad():
        product, mirrored = a(x) * b(x), a(-x) * b(-x)
    torch.testing.assert_close(mirrored, product)  # each factor is odd, so y(-x) = y(x)
    # y is that product, centred and scaled: an exact affine function of it
    design = torch.cat([product, torch.ones_like(product)], 1).double()
    coef = torch.linalg.lstsq(design, y.double()).solution
    torch.testing.assert_close(design @ coef, y.double(), atol=1e-5, rtol=0)
    assert torch.equal(y, product_teacher(256, seed=3)[1])


def test_the_teacher_task_leaves_a_linear_fit_at_least_80_percent_unexplained():
    task = harness_task("teacher")
    for split in ("validation", "test"):
        _, y = getattr(task, split)
        unexplained = task.linear_baseline(split) / float(y.double().var())
        assert unexplained > 0.8, (split, unexplained)  # measured about 1: no linear part at all
    # the teacher-student task the harness used before, for contrast, is mostly linear
    (x, y), (x_test, y_test) = (vglib.teacher_student(n, 16, seed=s) for n, s in ((2048, 0), (1024, 1)))
    design, test_design = (
        torch.cat([v.double(), torch.ones(len(v), 1, dtype=torch.float64)], 1) for v in (x, x_test)
    )
    coef = torch.linalg.lstsq(design, y.double()).solution
    assert float(((test_design @ coef - y_test.double()) ** 2).mean()) / float(y_test.pow(2).mean()) < 0.2
    assert vglib.harness_data() == (task.train, task.test)  # the harness's default task is this one
    assert abs(float(task.train[1].var()) - 1) < 0.1  # unit variance, as scaled on the probe
    assert abs(float(task.train[1].mean())) < 0.1  # and centred


def test_digits_splits_are_standardised_on_the_training_set_only():
    task = harness_task("digits")
    sizes = [len(task.train[0]), len(task.validation[0]), len(task.test[0])]
    assert sizes == [1000, 397, 400] and task.metric == "accuracy" and task.in_features == 64
    for _, y in (task.train, task.validation, task.test):
        assert set(y.tolist()) == set(range(10))
    x = task.train[0]
    varying = x.std(0) > 0
    torch.testing.assert_close(x.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    assert float(task.test[0].mean(0).abs().max()) > 1e-3  # the test set's own statistics were not used
    # every image in exactly one split (load_digits' 1797 images are all distinct)
    parts = (task.train, task.validation, task.test)
    rows = {tuple(np.round(r.numpy(), 4)) for x_part, _ in parts for r in x_part}
    assert sum(sizes) == 1797 and len(rows) == 1797


def test_digits_linear_baseline_is_a_real_classifier():
    accuracy = harness_task("digits").linear_baseline()
    assert 0.9 < accuracy < 1.0  # logistic regression on 8x8 digits: about 0.96


def test_one_hidden_layer_twin_has_the_same_parameter_count():
    deep = vglib.Remedy("ReLU, He").build()
    count = sum(p.numel() for p in deep.parameters())
    width = one_hidden_layer_width(count, 16, 1)
    shallow = vglib.build_mlp(1, width, "relu", "he", seed=0, in_features=16)
    shallow_count = sum(p.numel() for p in shallow.parameters())
    assert abs(shallow_count - count) <= (16 + 1 + 1) / 2


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="'teacher', 'digits'"):
        harness_task("mnist")
    assert TASKS == ("teacher", "digits")

"""train_ensemble: K networks trained as one batched ensemble follow the runs vglib.train gives
them one by one (same seeds, same minibatches, same update rules), up to float32 rounding."""

import numpy as np
import pytest
import torch
from torch import nn

import vglib
from vglib.ensemble import train_ensemble

MEMBERS = [(0, 0.01), (1, 0.01), (2, 0.003)]


@pytest.fixture(scope="module")
def data():
    return vglib.teacher_student(512, seed=0), vglib.teacher_student(256, seed=1)


def plain(seed):
    return vglib.build_mlp(6, 32, "tanh", "xavier", seed=seed, in_features=16)


def batch_normed(seed):
    return vglib.build_network(6, 32, "relu", "he", seed=seed, norm="batch", in_features=16)


def one_by_one(build, data, optimizer, momentum=0.0, **kwargs):
    (x, y), (x_test, y_test) = data
    runs = []
    for seed, lr in MEMBERS:
        with vglib.torch_seed(seed):
            model = build(seed)
        history = vglib.train(model, x, y, steps=20, lr=lr, optimizer=optimizer, momentum=momentum, seed=seed,
                              x_eval=x_test, y_eval=y_test, eval_every=5, **kwargs)  # fmt: skip
        runs.append((model, history))
    return runs


def together(build, data, optimizer, momentum=0.0, **kwargs):
    (x, y), (x_test, y_test) = data
    return train_ensemble(build, x, y, members=MEMBERS, steps=20, optimizer=optimizer, momentum=momentum,
                          x_eval=x_test, y_eval=y_test, eval_every=5, **kwargs)  # fmt: skip


def assert_same_runs(run, runs, skip=lambda name: False, atol=2e-5):
    assert run.loss.shape == (3, 20) and list(run.eval_steps) == [5, 10, 15, 20]
    for k, (model, history) in enumerate(runs):
        np.testing.assert_allclose(run.loss[k], history.loss, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(run.eval_loss[k], history.eval_loss, rtol=1e-5, atol=1e-7)
        trained = run.model(k).state_dict()
        for name, value in model.state_dict().items():
            if not skip(name):
                torch.testing.assert_close(trained[name], value, atol=atol, rtol=1e-4, msg=name)
    # the members really differ (other seeds and learning rates), so agreement is not trivial
    assert np.abs(run.loss[0] - run.loss[2]).max() > 1e-2


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_members_follow_their_single_runs(data, momentum):
    assert_same_runs(together(plain, data, "sgd", momentum), one_by_one(plain, data, "sgd", momentum))


def test_adam_members_follow_their_single_runs_with_clipping(data):
    kwargs = {"clip_norm": 0.5, "clip_value": 0.05}
    assert_same_runs(together(plain, data, "adam", **kwargs), one_by_one(plain, data, "adam", **kwargs))


def test_clipping_is_per_member(data):
    # a clip that binds: every member is clipped by its own gradient norm, as clip_grad_norm_ does
    kwargs = {"clip_norm": 1e-3}
    run = together(plain, data, "sgd", 0.9, **kwargs)
    assert_same_runs(run, one_by_one(plain, data, "sgd", 0.9, **kwargs))


def test_batch_norm_members_keep_their_own_running_statistics(data):
    run, runs = together(batch_normed, data, "sgd", 0.9), one_by_one(batch_normed, data, "sgd", 0.9)
    assert_same_runs(run, runs)  # running_mean, running_var and num_batches_tracked included
    assert int(run.model(0).state_dict()["norm1.num_batches_tracked"]) == 20  # evaluation left them alone


def test_batch_norm_with_adam(data):
    # A bias just before batch norm has a gradient of exactly 0 in exact arithmetic (the norm takes
    # the batch mean away) and of rounding noise in float32, which Adam scales up to full steps of
    # either sign: those biases (and the running means that follow them) drift apart between any
    # two summation orders. Everything that reaches the output in training mode agrees. In eval mode
    # the output sees the running means, which follow the drifting biases a few steps late: there
    # the held-out losses agree only to about 1 %.
    run = together(batch_normed, data, "adam", eval_mode=False)
    runs = one_by_one(batch_normed, data, "adam", eval_mode=False)

    def before_norm(name):
        return (name.startswith("linear") and name.endswith(".bias")) or name.endswith("running_mean")

    assert_same_runs(run, runs, skip=before_norm)
    in_eval_mode = together(batch_normed, data, "adam").eval_loss
    alone = np.array([h.eval_loss for _, h in one_by_one(batch_normed, data, "adam")])
    np.testing.assert_allclose(in_eval_mode, alone, rtol=2e-2)


def test_class_targets_report_accuracy():
    digits_x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    digits_y = (digits_x[:, 0] > 0).long() + (digits_x[:, 1] > 0).long()  # 3 classes
    build = lambda seed: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))  # noqa: E731
    x_test, y_test = digits_x[:50] * 1.1, digits_y[:50]  # a second held-out set, unlike the first
    run = train_ensemble(build, digits_x, digits_y, members=[(0, 0.05), (1, 0.05)], steps=30,
                         optimizer="adam", eval_every=10, x_test=x_test, y_test=y_test)  # fmt: skip
    assert run.eval_accuracy.shape == run.test_accuracy.shape == run.test_loss.shape == (2, 3)
    with torch.no_grad():
        accuracy = (run.model(1)(digits_x).argmax(1) == digits_y).float().mean().item()
        test_loss = nn.functional.cross_entropy(run.model(1)(x_test), y_test).item()
    assert run.eval_accuracy[1, -1] == pytest.approx(accuracy)
    assert run.test_loss[1, -1] == pytest.approx(test_loss, rel=1e-5)
    assert run.test_loss[1, -1] != pytest.approx(run.eval_loss[1, -1])
    assert run.eval_accuracy[1, -1] > run.eval_accuracy[1, 0] - 0.1 and accuracy > 0.6


def test_bad_input_is_refused_with_the_choices():
    x, y = vglib.teacher_student(32, seed=0)
    with pytest.raises(ValueError, match="'sgd', 'adam'"):
        train_ensemble(plain, x, y, members=MEMBERS, steps=2, optimizer="rmsprop")
    with pytest.raises(TypeError, match=r"\(seed, lr\) pair"):
        train_ensemble(plain, x, y, members=[0, 1], steps=2)
    with pytest.raises(ValueError, match="learning rate must be a finite number > 0"):
        train_ensemble(plain, x, y, members=[(0, -1.0)], steps=2)
    with pytest.raises(ValueError, match="at least one member"):
        train_ensemble(plain, x, y, members=[], steps=2)
    widths = lambda seed: vglib.build_mlp(2, 8 + seed, "relu", seed=seed, in_features=16)  # noqa: E731
    with pytest.raises(ValueError, match="same architecture"):
        train_ensemble(widths, x, y, members=[(0, 0.1), (1, 0.1)], steps=2)
    with pytest.raises(ValueError, match="does not fit the model's output"):
        train_ensemble(plain, x, y[:, :0], members=[(0, 0.1)], steps=2)


def test_batch_norm_members_evaluated_in_training_mode_follow_their_single_runs_too(data):
    run = together(batch_normed, data, "sgd", 0.9, eval_mode=False)
    assert_same_runs(run, one_by_one(batch_normed, data, "sgd", 0.9, eval_mode=False))
    # and the two evaluation modes differ for a batch-normalised network (running vs batch statistics)
    assert np.abs(run.eval_loss - together(batch_normed, data, "sgd", 0.9).eval_loss).max() > 1e-4


def test_a_diverged_member_scores_nan_accuracy_not_the_share_of_class_zero():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    build = lambda seed: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))  # noqa: E731
    run = train_ensemble(build, x, y, members=[(0, 0.05), (1, 1e30)], steps=5, optimizer="sgd", eval_every=5)
    assert 0.0 <= run.eval_accuracy[0, -1] <= 1.0  # the sane member is scored
    assert np.isnan(run.eval_accuracy[1, -1])  # the diverged one is flagged, not scored as class 0


def test_warmed_up_members_follow_their_warmed_up_single_runs(data):
    # vglib.train's linear warm-up: update s uses lr * min(1, s / 5), for each member's own lr
    run = together(plain, data, "adam", warmup_steps=5)
    assert_same_runs(run, one_by_one(plain, data, "adam", warmup_steps=5))
    assert run.diverged_at == (None, None, None)
    # and the warm-up matters: without it the first losses differ by far more than rounding
    assert np.abs(run.loss[:, 1:5] - together(plain, data, "adam").loss[:, 1:5]).max() > 1e-3


def _two_members(stop: bool):
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    build = lambda seed: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))  # noqa: E731
    return train_ensemble(build, x, y, members=[(0, 0.05), (1, 1e30)], steps=12, optimizer="sgd",
                          eval_every=3, stop_at_divergence=stop)  # fmt: skip


def test_a_diverged_member_is_marked_and_nan_from_then_on_without_disturbing_the_others():
    kept, stopped = _two_members(False), _two_members(True)
    d = stopped.diverged_at[1]
    assert stopped.diverged_at == kept.diverged_at and stopped.diverged_at[0] is None
    # diverged_at is the first update whose training loss was not finite (the losses as computed)
    assert d == int(np.argmax(~np.isfinite(kept.loss[1]))) + 1 and 1 < d <= 12
    assert np.isfinite(kept.loss[1, : d - 1]).all()
    # stopped: NaN from that update on, every evaluation at or after it NaN, nothing before touched
    assert np.isnan(stopped.loss[1, d - 1 :]).all()
    np.testing.assert_array_equal(stopped.loss[1, : d - 1], kept.loss[1, : d - 1])
    after = stopped.eval_steps >= d
    for name in ("eval_loss", "eval_accuracy"):
        assert np.isnan(getattr(stopped, name)[1, after]).all()
        np.testing.assert_array_equal(getattr(stopped, name)[1, ~after], getattr(kept, name)[1, ~after])
    # the sane member is the same whatever its partner did, and the same as trained alone
    for name in ("loss", "eval_loss", "eval_accuracy"):
        np.testing.assert_array_equal(getattr(stopped, name)[0], getattr(kept, name)[0])
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    build = lambda seed: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))  # noqa: E731
    alone = train_ensemble(build, x, (x[:, 0] > 0).long(), members=[(0, 0.05)], steps=12,
                           optimizer="sgd", eval_every=3, stop_at_divergence=True)  # fmt: skip
    np.testing.assert_allclose(alone.loss[0], stopped.loss[0], rtol=1e-6)
    assert alone.diverged_at == (None,)


def test_warmup_and_divergence_arguments_are_checked():
    x, y = vglib.teacher_student(32, seed=0)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        train_ensemble(plain, x, y, members=MEMBERS, steps=2, warmup_steps=-1)
    with pytest.raises(TypeError, match="stop_at_divergence must be True or False"):
        train_ensemble(plain, x, y, members=MEMBERS, steps=2, stop_at_divergence=1)

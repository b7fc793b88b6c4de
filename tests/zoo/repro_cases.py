# Copied unchanged from shared/reviews/repro/cases.py (imports 'mymodels': models.py aliases it to repro_mymodels).
"""The models x inputs a practitioner would try."""
import torch
import torch.nn.functional as F

import mymodels as M

B = 16


def tokens(b=B, t=12, vocab=M.VOCAB, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def classes(n, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (n,), generator=g)


def out_of(o):
    if isinstance(o, dict):
        return o["logits"]
    if isinstance(o, tuple):
        return o[0]
    return o


def ce(o, y):
    return F.cross_entropy(out_of(o), y)


def mse(o, y):
    return F.mse_loss(out_of(o), y)


def dict_ce(o, y):
    return F.cross_entropy(o["logits"], y)


def make_cases():
    """name -> (factory, x, y, vglib_loss (None=default), train_loss)."""
    torch.manual_seed(0)
    C = {}
    C["transformer post-norm (nn.TransformerEncoder, tokens)"] = (
        lambda: M.TorchTransformerClassifier(norm_first=False), tokens(), classes(B, 5), None, ce)
    C["transformer pre-norm (nn.TransformerEncoder, tokens)"] = (
        lambda: M.TorchTransformerClassifier(norm_first=True), tokens(), classes(B, 5), None, ce)
    C["hand attention pre-norm"] = (
        lambda: M.HandTransformer(pre_norm=True), randn(B, 10, 16), classes(B, 3), None, ce)
    C["hand attention post-norm"] = (
        lambda: M.HandTransformer(pre_norm=False), randn(B, 10, 16), classes(B, 3), None, ce)
    C["ResNet-BN (from scratch)"] = (
        lambda: M.ResNet(), randn(B, 3, 16, 16), classes(B, 10), None, ce)
    C["LSTM LM (Embedding, (B,T,V) logits)"] = (
        lambda: M.RNNLM(kind="lstm"), tokens(), tokens(seed=3), M.lm_loss, M.lm_loss)
    C["GRU LM (Embedding, (B,T,V) logits)"] = (
        lambda: M.RNNLM(kind="gru"), tokens(), tokens(seed=3), M.lm_loss, M.lm_loss)
    C["GRU last-token classifier"] = (
        lambda: M.LastTokenRNN(kind="gru"), tokens(), classes(B, 5), None, ce)
    C["Sequential in ModuleList (residual tanh)"] = (
        lambda: M.SeqInModuleList(), randn(B, 32), randn(B, 3, seed=2), None, mse)
    C["shared layer used twice"] = (
        lambda: M.SharedTwice(), randn(B, 16), randn(B, 3, seed=2), None, mse)
    C["weight-tied LSTM LM (out.weight = emb.weight)"] = (
        lambda: M.RNNLM(kind="lstm", tie=True, layers=1), tokens(), tokens(seed=3), M.lm_loss, M.lm_loss)
    C["tied autoencoder (F.linear(h, enc.weight.T))"] = (
        lambda: M.TiedMLP(), randn(B, 16), randn(B, 16, seed=2), None, mse)
    C["frozen backbone"] = (
        lambda: M.Frozen(), randn(B, 16), classes(B, 3), None, ce)
    C["tuple output (logits, aux)"] = (
        lambda: M.TupleOut(), randn(B, 16), classes(B, 3), None, ce)
    C["dict output, default loss"] = (
        lambda: M.DictOut(), randn(B, 16), classes(B, 3), None, dict_ce)
    C["dict output, loss_fn given"] = (
        lambda: M.DictOut(), randn(B, 16), classes(B, 3), dict_ce, dict_ce)
    C["eval mode (BN + Dropout)"] = (
        lambda: M.EvalModeNet().eval(), randn(B, 16), classes(B, 3), None, ce)
    C["train mode (BN + Dropout)"] = (
        lambda: M.EvalModeNet(), randn(B, 16), classes(B, 3), None, ce)
    C["float64 model"] = (
        lambda: M.ResNet().double(), randn(B, 3, 16, 16, dtype=torch.float64), classes(B, 10), None, ce)
    C["Conv1d net"] = (
        lambda: M.Conv1dNet(), randn(B, 4, 50), classes(B, 5), None, ce)
    C["BigMLP 4.5M params"] = (
        lambda: M.BigMLP(), randn(64, 256), classes(64, 10), None, ce)
    C["deep sigmoid MLP, small init (vanishing)"] = (
        lambda: M.DeepSigmoid(depth=20, std=0.05), randn(B, 16), randn(B, 3, seed=2), None, mse)
    C["deep ReLU MLP, He init (healthy)"] = (
        lambda: M.DeepReLU(depth=20, gain=1.0), randn(B, 16), randn(B, 3, seed=2), None, mse)
    C["deep ReLU MLP, 1.5x He (exploding)"] = (
        lambda: M.DeepReLU(depth=20, gain=1.5), randn(B, 16), randn(B, 3, seed=2), None, mse)
    return C

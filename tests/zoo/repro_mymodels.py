# Copied unchanged from shared/reviews/repro/mymodels.py (the practitioner's models); do not edit.
"""Models written by a practitioner, not by vglib's authors. CPU, small."""
import math

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 200


# ---------------------------------------------------------------- transformers
class TorchTransformerClassifier(nn.Module):
    """nn.TransformerEncoder on token ids, mean-pooled, linear head."""

    def __init__(self, vocab=VOCAB, d=64, heads=4, layers=2, classes=5, norm_first=False, dropout=0.0):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 64, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=dropout, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False,
                                             norm=nn.LayerNorm(d) if norm_first else None)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        h = self.emb(tokens) + self.pos[:, : tokens.shape[1]]
        h = self.encoder(h)
        return self.head(h.mean(dim=1))


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads

        def split(z):
            return z.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        out = att.softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d, heads, pre_norm):
        super().__init__()
        self.pre_norm = pre_norm
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.att = Attention(d, heads)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        if self.pre_norm:
            x = x + self.att(self.ln1(x))
            return x + self.ff(self.ln2(x))
        x = self.ln1(x + self.att(x))
        return self.ln2(x + self.ff(x))


class HandTransformer(nn.Module):
    """Hand-written attention, LayerNorm, pre- or post-norm. Float inputs (B, T, d_in)."""

    def __init__(self, d_in=16, d=64, heads=4, depth=2, out=3, pre_norm=True):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList([Block(d, heads, pre_norm) for _ in range(depth)])
        self.final = nn.LayerNorm(d) if pre_norm else nn.Identity()
        self.head = nn.Linear(d, out)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.final(h).mean(1))


# ---------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """torchvision-style: one nn.ReLU instance used twice."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    def __init__(self, widths=(8, 16, 32), blocks=2, classes=10, zero_init_last_bn=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)
        if zero_init_last_bn:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class PlainCNNView(nn.Module):
    """CNN that flattens with view (fixed spatial size) -> error location test."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))
        return self.fc(h.view(-1, 8 * 8 * 8))


# ---------------------------------------------------------------- recurrent LMs
class RNNLM(nn.Module):
    """Embedding -> LSTM/GRU -> Linear; returns (B, T, V) logits."""

    def __init__(self, vocab=VOCAB, d=32, hidden=64, layers=2, kind="lstm", tie=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d if not tie else hidden)
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(d if not tie else hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)
        if tie:
            self.out.weight = self.emb.weight

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.out(h)


class LastTokenRNN(nn.Module):
    """Embedding -> GRU -> last step -> Linear (B, classes): fits vglib's default CE."""

    def __init__(self, vocab=VOCAB, d=32, hidden=48, classes=5, kind="gru"):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.head(h[:, -1])


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------- structure variants
class SeqInModuleList(nn.Module):
    def __init__(self, d=32, depth=4, out=3):
        super().__init__()
        self.stages = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d), nn.Tanh()) for _ in range(depth)])
        self.head = nn.Linear(d, out)

    def forward(self, x):
        for s in self.stages:
            x = x + s(x)
        return self.head(x)


class SharedTwice(nn.Module):
    """One Linear used twice in the forward pass (shared layer)."""

    def __init__(self, d=32, out=3):
        super().__init__()
        self.inp = nn.Linear(16, d)
        self.shared = nn.Linear(d, d)
        self.act = nn.Tanh()
        self.head = nn.Linear(d, out)

    def forward(self, x):
        h = self.act(self.inp(x))
        h = self.act(self.shared(h))
        h = self.act(self.shared(h))
        return self.head(h)


class TiedMLP(nn.Module):
    """Autoencoder-ish: decoder weight is encoder weight (tied), plus an extra head."""

    def __init__(self, d_in=16, d=32):
        super().__init__()
        self.enc = nn.Linear(d_in, d)
        self.mid = nn.Linear(d, d)
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.act(self.enc(x))
        h = self.act(self.mid(h))
        return F.linear(h, self.enc.weight.t())  # tied: uses enc.weight directly


class Frozen(nn.Module):
    def __init__(self, d=32, out=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(16, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.mid = nn.Linear(d, d)
        self.act = nn.ReLU()
        self.head = nn.Linear(d, out)
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.head(self.act(self.mid(self.backbone(x))))


class TupleOut(nn.Module):
    def __init__(self, d=32, out=3):
        super().__init__()
        self.l1 = nn.Linear(16, d)
        self.l2 = nn.Linear(d, d)
        self.act = nn.ReLU()
        self.head = nn.Linear(d, out)
        self.aux = nn.Linear(d, 1)

    def forward(self, x):
        h = self.act(self.l2(self.act(self.l1(x))))
        return self.head(h), self.aux(h)


class DictOut(TupleOut):
    def forward(self, x):
        logits, aux = super().forward(x)
        return {"logits": logits, "aux": aux}


class EvalModeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(64, 3))

    def forward(self, x):
        return self.net(x)


class Conv1dNet(nn.Module):
    def __init__(self, cin=4, classes=5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(cin, 16, 5, padding=2), nn.ReLU(), nn.Conv1d(16, 16, 5, padding=2), nn.ReLU(),
            nn.Conv1d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
            nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


class BigMLP(nn.Module):
    """~4.5M parameters."""

    def __init__(self, d_in=256, width=1024, depth=4, out=10):
        super().__init__()
        layers = [nn.Linear(d_in, width), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.GELU()]
        layers += [nn.Linear(width, out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class DeepSigmoid(nn.Module):
    def __init__(self, depth=20, d=64, std=0.05, act=nn.Sigmoid):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16 if i == 0 else d, d) for i in range(depth)])
        self.acts = nn.ModuleList([act() for _ in range(depth)])
        self.head = nn.Linear(d, 3)
        for l in self.layers:
            nn.init.normal_(l.weight, std=std)
            nn.init.zeros_(l.bias)

    def forward(self, x):
        for l, a in zip(self.layers, self.acts):
            x = a(l(x))
        return self.head(x)


class DeepReLU(nn.Module):
    def __init__(self, depth=20, d=64, gain=1.0):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16 if i == 0 else d, d) for i in range(depth)])
        self.act = nn.ReLU()
        self.head = nn.Linear(d, 3)
        for l in self.layers:
            nn.init.kaiming_normal_(l.weight, nonlinearity="relu")
            l.weight.data.mul_(gain)
            nn.init.zeros_(l.bias)

    def forward(self, x):
        for l in self.layers:
            x = self.act(l(x))
        return self.head(x)


class NoParams(nn.Module):
    def forward(self, x):
        return torch.tanh(x)

# Classes Net, DictNet copied unchanged from shared/reviews/repro/bug_tuple_output_profile.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head, self.aux = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2), nn.Linear(8, 1)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        return self.head(h), self.aux(h)


class DictNet(Net):
    def forward(self, x):
        logits, aux = super().forward(x)
        return {"logits": logits, "aux": aux}

"""One small model per hard case of the dimension graph (used by tests; usable downstream)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TOY_MODELS"]


class Residual(nn.Module):
    """Two convs writing into one stream: one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        x = x + F.relu(self.branch(x))
        return self.head(x)


class Concat(nn.Module):
    """The consumer's input is the union of two producers' segments."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 10, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


class Chunk(nn.Module):
    """chunk(2) into branches; equal chunks stay equal."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.left = nn.Conv2d(4, 5, 1)
        self.right = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        return torch.cat([self.left(a), self.right(b)], 1)


class Shuffle(nn.Module):
    """ShuffleNet's view(g, C/g) -> transpose -> view."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return self.head(y)


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.dw(F.relu(self.bn(self.pw(x)))))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.gc = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.head(self.gc(self.pw(x)))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.conv(x)
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return self.head(x * s)


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.conv(x), 2)
        return self.fc(torch.flatten(x, 1))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.gn(self.conv(x)))


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.act(self.a(x))
        y += self.b(x)
        return self.head(y)


class Unwrapped(nn.Module):
    """A bare parameter (layer scale) multiplied into the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.scale = nn.Parameter(torch.rand(6) + 0.5)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x) * self.scale)


TOY_MODELS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "residual": (Residual, (1, 3, 6, 6)),
    "concat": (Concat, (1, 3, 6, 6)),
    "chunk": (Chunk, (1, 3, 6, 6)),
    "shuffle": (Shuffle, (1, 3, 6, 6)),
    "depthwise": (Depthwise, (1, 3, 6, 6)),
    "grouped": (Grouped, (1, 3, 6, 6)),
    "squeeze_excite": (SqueezeExcite, (1, 3, 6, 6)),
    "flatten_linear": (FlattenLinear, (1, 3, 6, 6)),
    "group_norm": (GroupNormNet, (1, 3, 6, 6)),
    "in_place": (InPlace, (1, 3, 6, 6)),
    "unwrapped": (Unwrapped, (2, 4)),
}

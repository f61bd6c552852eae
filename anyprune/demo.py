"""``make demo``: prune torchvision ResNet-50 (random weights) by 50% through the low-level API.

Builds the dependency graph, prints a few groups, checks one group with the
mask-equivalence oracle, prunes half of every group by L2 magnitude, re-runs the
forward pass, and prints parameters and MACs before and after.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main(argv: list[str] | None = None) -> None:
    import torchvision

    import anyprune as tp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="torchvision classification model name")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of every group to remove")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model).eval()
    x = torch.randn(1, 3, 224, 224)
    macs0, params0 = tp.utils.count_ops_and_params(model, x)
    with torch.no_grad():
        ref = model(x)

    t0 = time.perf_counter()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    groups = dg.groups()
    build_s = time.perf_counter() - t0
    print(f"{args.model}: graph built in {build_s * 1000:.0f} ms; {len(dg.ops.calls)} calls traced, "
          f"{len(groups)} prunable groups ({sum(g.exact for g in groups)} exact)\n")
    for g in groups[:3]:
        print(g.details(), "\n")

    # the oracle on one group, in float64: pruned == masked
    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    dg64 = tp.DependencyGraph().build_dependency(m64, x64)
    g64 = dg64.groups()[1]
    res = tp.verify_group(dg64, g64, idxs=list(range(0, g64.size, 2)), example_inputs=x64, atol=1e-9)
    print(f"oracle on group rooted at {g64.root.fqn}: exact={res.exact}, max |pruned - masked| = "
          f"{res.max_abs_diff:.2e} -> {'OK' if res.ok else 'FAILED'}\n")

    imp = tp.importance.GroupMagnitudeImportance(p=2)
    t0 = time.perf_counter()
    for g in groups:
        n = int(g.size * args.ratio)
        if n == 0 or n >= g.size:
            continue
        scores = imp(g)
        if scores is None:
            continue
        g.prune(idxs=scores.argsort()[:n].tolist())
    prune_s = time.perf_counter() - t0
    out = tp.verify_forward(model, x)
    assert out.shape == ref.shape, "output shape changed"
    macs1, params1 = tp.utils.count_ops_and_params(model, x)
    print(f"pruned {args.ratio:.0%} of every group by L2 magnitude in {prune_s * 1000:.0f} ms; "
          f"forward re-run OK, output shape {tuple(out.shape)}")
    print(f"{'':10}{'before':>12}{'after':>12}{'ratio':>8}")
    print(f"{'params':10}{params0 / 1e6:>11.2f}M{params1 / 1e6:>11.2f}M{params1 / params0:>8.2f}")
    print(f"{'MACs':10}{macs0 / 1e9:>11.2f}G{macs1 / 1e9:>11.2f}G{macs1 / macs0:>8.2f}")


if __name__ == "__main__":
    main()

"""The seed README's pruner and importance snippets, run with ``import anyprune as tp`` (random weights)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

import anyprune as tp


def _classifier(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000]


def _stage_widths(model):
    return [model.conv1.out_channels] + [layer[0].conv1.out_channels for layer in
                                         (model.layer1, model.layer2, model.layer3, model.layer4)]


def _sizes_by_root(pruner):
    """``{root fqn: (atom, size)}`` of the pruner's groups now (atoms keep their ids when pruned)."""
    return {g.root.fqn: (g.atoms[0], g.size) for g in pruner.DG.groups()}


def test_high_level_pruner_resnet18_half():
    model = resnet18()
    example_inputs = torch.randn(1, 3, 224, 224)
    # 1. Importance criterion, here we calculate the L2 Norm of grouped weights as the importance score
    imp = tp.importance.GroupNormImportance(p=2)
    # 2. Initialize a pruner with the model and the importance criterion
    ignored_layers = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == 1000:
            ignored_layers.append(m)  # DO NOT prune the final classifier!
    pruner = tp.pruner.MetaPruner(  # We can always choose MetaPruner if sparse training is not required.
        model,
        example_inputs,
        importance=imp,
        pruning_ratio=0.5,  # remove 50% channels, ResNet18 = {64, 128, 256, 512} => ResNet18_Half = {32, 64, 128, 256}
        ignored_layers=ignored_layers,
        round_to=8,
    )
    # 3. Prune the model
    base_macs, base_nparams = tp.utils.count_ops_and_params(model, example_inputs)
    pruner.step()
    macs, nparams = tp.utils.count_ops_and_params(model, example_inputs)
    assert abs(base_macs / 1e9 - 1.82) < 0.01, base_macs
    assert base_nparams == 11_689_512
    assert _stage_widths(model) == [32, 32, 64, 128, 256]
    assert {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)} == {32, 64, 128, 256}
    assert model.fc.in_features == 256
    assert model.fc.out_features == 1000
    # both dims of most weights halve: roughly a quarter of the MACs and parameters remain
    assert 0.2 < macs / base_macs < 0.3, macs / base_macs
    assert 0.2 < nparams / base_nparams < 0.3, nparams / base_nparams
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_pruning_ratio_dict_from_the_commented_line():
    model = resnet18()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupNormImportance(p=2), pruning_ratio=0.5,
                                  pruning_ratio_dict={model.conv1: 0.2, model.layer2: 0.8},
                                  ignored_layers=_classifier(model))
    pruner.step()
    assert model.conv1.out_channels == int(64 * 0.8)  # conv1's group (the layer1 stream): ratio 0.2
    assert [b.conv1.out_channels for b in model.layer2] == [int(128 * 0.2)] * 2  # inside layer2: 0.8
    assert model.layer2[0].conv2.out_channels == int(128 * 0.2)  # layer2's stream is rooted in layer2
    assert [b.conv1.out_channels for b in model.layer3] == [128, 128]  # everything else: 0.5
    assert model.layer4[1].conv2.out_channels == 256


def test_global_and_isomorphic_pruning():
    model = resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupNormImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=_classifier(model),
                                  isomorphic=True,  # enable isomorphic pruning to improve global ranking
                                  global_pruning=True)  # global pruning
    groups = pruner.DG.groups()
    classes: dict = {}
    for g in groups:
        classes.setdefault(pruner._signature(g), []).append((g, g.size))
    assert len(classes) > 1, "resnet18 has groups of different structure"
    pruner.step()
    for members in classes.values():  # every isomorphic class loses half of its channels, as one pool
        before = sum(n for _, n in members)
        after = sum(g.size for g, _ in members)
        assert after == before - before // 2, (before, after)
    assert model(x).shape == (1, 1000)


def test_pruning_ratio_dict_tuple_scopes_share_one_ratio():
    model = resnet18()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # make layer1's groups clearly more important than layer2's
        for m in model.layer1.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(10)
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.GroupNormImportance(p=2, normalizer=None),
        ignored_layers=_classifier(model), global_pruning=True, pruning_ratio=0.5,
        # layer1 & layer2 will share a total pruning ratio of 0.4 while layer 3 will have a pruning ratio of 0.2
        pruning_ratio_dict={(model.layer1, model.layer2): 0.4, model.layer3: 0.2},
    )
    groups = _sizes_by_root(pruner)
    scope = {k: n for k, (_, n) in groups.items() if k.startswith(("layer1", "layer2"))}
    l3 = {k: n for k, (_, n) in groups.items() if k.startswith("layer3")}
    pruner.step()
    after = {k: pruner.DG.dims.atoms.atom_size(a) for k, (a, _) in groups.items()}
    kept = sum(after[k] for k in scope)
    assert kept == sum(scope.values()) - int(sum(scope.values()) * 0.4 + 1e-6) or \
        kept == int(sum(scope.values()) * 0.6)
    assert sum(after[k] for k in l3) == int(sum(l3.values()) * 0.8)
    # the shared ratio is not applied group by group: layer1's strong groups are pruned less than layer2's
    l1 = [after[k] / scope[k] for k in scope if k.startswith("layer1")]
    l2 = [after[k] / scope[k] for k in scope if k.startswith("layer2")]
    assert min(l1) > 0.6 > min(l2), (l1, l2)


@pytest.mark.parametrize("pruner_cls", [tp.pruner.BNScalePruner, tp.pruner.GroupNormPruner,
                                        tp.pruner.GrowingRegPruner])
def test_sparse_training_loop(pruner_cls):
    model = resnet18(num_classes=10)
    example_inputs = torch.randn(1, 3, 32, 32)
    pruner = pruner_cls(model, example_inputs, pruning_ratio=0.5, ignored_layers=[model.fc], reg=1e-2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: only the gradients are checked
    train_loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    device = "cpu"
    changed = []
    for _epoch in range(1):
        model.train()
        pruner.update_regularizer()  # <== initialize regularizer
        for _i, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            out = model(data)
            loss = F.cross_entropy(out, target)
            loss.backward()  # after loss.backward()
            before = {n: p.grad.clone() for n, p in model.named_parameters()}
            pruner.regularize(model)  # <== for sparse training
            changed.append({n for n, p in model.named_parameters() if not torch.equal(p.grad, before[n])})
            optimizer.step()  # before optimizer.step()
    for names in changed:
        assert "bn1.weight" in names
        assert "fc.bias" not in names, "the ignored classifier's outputs are not regularised"
        if pruner_cls is tp.pruner.BNScalePruner:  # only batch-norm scales
            assert all(n.endswith(("bn1.weight", "bn2.weight", "downsample.1.weight")) for n in names), names
        else:  # every slice of every group, the classifier's input columns included
            assert {"layer1.0.conv1.weight", "layer4.1.conv2.weight", "fc.weight"} <= names
    pruner.step()
    assert _stage_widths(model) == [32, 32, 64, 128, 256]


def test_interactive_pruning():
    model = resnet18().eval()
    example_inputs = torch.randn(1, 3, 32, 32)
    iterative_steps = 2
    imp = tp.importance.GroupNormImportance(p=2)
    pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, pruning_ratio=0.5,
                                  iterative_steps=iterative_steps, ignored_layers=_classifier(model))
    seen = []
    widths = []
    for _i in range(iterative_steps):
        scores_now = {g.root.fqn: imp(g) for g in pruner.DG.groups()}  # what the step ranks by
        for group in pruner.step(interactive=True):  # groups must be handled sequentially
            # do whatever you like with the group
            dep, idxs = group[0]  # get the idxs
            target_module = dep.target.module  # get the root module
            pruning_fn = dep.handler  # get the pruning function
            scores = scores_now[group.root.fqn]
            lowest = scores.argsort()[:len(idxs)].sort().values.tolist()
            assert sorted(idxs) == lowest, "the chosen indices are the lowest-scoring ones"
            assert isinstance(target_module, nn.Conv2d)
            assert pruning_fn is tp.prune_conv_out_channels
            before = target_module.out_channels
            group.prune()
            assert target_module.out_channels == before - len(idxs)
            seen.append(len(idxs))
        macs, nparams = tp.utils.count_ops_and_params(model, example_inputs)
        widths.append(_stage_widths(model))
        assert macs > 0
        assert nparams > 0
    assert widths == [[48, 48, 96, 192, 384], [32, 32, 64, 128, 256]]
    assert sum(seen) == (64 + 64 * 2 + 128 * 3 + 256 * 3 + 512 * 3) // 2  # half of every group's channels


def test_interactive_pruning_with_other_indices():
    model = resnet18()
    pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 32, 32), pruning_ratio=0.5,
                                  ignored_layers=_classifier(model))
    for group in pruner.step(interactive=True):
        if group.root.fqn == "conv1.weight":
            group.prune(idxs=[0, 2, 6])  # It is even possible to change the pruning behaviour with the idxs
        else:
            group.prune()
    assert model.conv1.out_channels == 61
    assert model.layer2[0].conv1.out_channels == 64


def test_pruning_by_masking_matches_pruning():
    """Soft pruning through interactive=True: zero every slice instead of removing it."""
    model = resnet18().eval().double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    pruned = copy.deepcopy(model)
    soft = tp.pruner.MetaPruner(model, x, pruning_ratio=0.3, ignored_layers=_classifier(model))
    hard = tp.pruner.MetaPruner(pruned, x, pruning_ratio=0.3, ignored_layers=_classifier(pruned))
    with torch.no_grad():
        for group in soft.step(interactive=True):
            for dep, idxs in group:
                for s in dep.slices:
                    if s.tensor.is_floating_point() and not s.attr.startswith("running"):
                        s.tensor.index_fill_(s.dim, torch.tensor(idxs, dtype=torch.long), 0.0)
    hard.step()
    assert model.conv1.out_channels == 64, "masking keeps the shapes"
    assert pruned.conv1.out_channels == int(64 * 0.7)
    torch.testing.assert_close(model(x), pruned(x), rtol=1e-9, atol=1e-9)


def test_deprecated_ch_sparsity_warns_and_works():
    model = resnet18()
    with pytest.warns(FutureWarning, match="pruning_ratio"):
        pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 32, 32), ch_sparsity=0.5,
                                      ignored_layers=_classifier(model))
    with pytest.warns(FutureWarning, match="pruning_ratio_dict"):
        tp.pruner.MetaPruner(resnet18(), torch.randn(1, 3, 32, 32), ch_sparsity_dict={})
    pruner.step()
    assert _stage_widths(model) == [32, 32, 64, 128, 256]

"""Encoding round trip, the MLP on a known function, the accuracy dataset, bad files."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pandas as pd
import pytest
import torch

from ofa.encoding import GeneLayout, encode, from_genes, to_genes
from ofa.errors import OFAError
from ofa.predictor import load_predictor, read_dataset, sample_configs
from ofa.predictor.fit import fit_predictor, split_indices
from ofa.predictor.model import AccuracyMLP, Predictor, fit_mlp, fit_ridge, metrics


@pytest.mark.parametrize("seed", range(6))
def test_encoding_round_trips(space, seed):
    layout = GeneLayout.of(space)
    cfgs = [space.sample(random.Random(seed * 100 + i)) for i in range(20)]
    genes = to_genes(space, cfgs)
    assert from_genes(space, genes) == cfgs
    feats = encode(layout, genes)
    assert feats.shape == (20, layout.n_features)
    # the features see exactly the canonical config: equal for equal subnets, distinct otherwise
    canon = [space.canonical(c) for c in cfgs]
    assert np.array_equal(encode(layout, to_genes(space, canon)), feats)
    rows = {tuple(f) for f in feats}
    assert len(rows) == len(set(canon))
    # skipped slots are all zeros; active slots hold exactly one kernel and one expand bit
    nk = len(layout.kernels)
    kbits = feats[:, :layout.n_slots * nk].reshape(20, layout.n_slots, nk).sum(-1)
    assert np.array_equal(kbits, layout.active(genes).astype(np.float32))


def _synthetic(space, n: int, seed: int):
    """Accuracy-like targets: a linear function of the features plus an interaction."""
    layout = GeneLayout.of(space)
    rng = random.Random(seed)
    cfgs = list({space.canonical(space.sample(rng)) for _ in range(n)})
    x = encode(layout, to_genes(space, cfgs))
    w = np.random.default_rng(1).normal(0, 0.004, x.shape[1])
    depth = x[:, :layout.n_slots * 3].sum(1)
    y = 0.85 + x @ w + 0.002 * (depth - 11) ** 2
    return cfgs, x, y


def test_mlp_learns_a_known_function_better_than_ridge(params, space):
    _, x, y = _synthetic(space, 700, 0)
    pc = dataclasses.replace(params.predictor, epochs=150)
    net, _ = fit_mlp(x[:500], y[:500], x[500:600], y[500:600], pc, seed=0)
    with torch.no_grad():
        pred = net(torch.from_numpy(x[600:]).float()).double().numpy()
    ridge, _ = fit_ridge(x[:500], y[:500], x[500:600], y[500:600])
    m, r = metrics(pred, y[600:]), metrics(ridge(x[600:]), y[600:])
    assert m["rmse_points"] < 0.35 * 100 * y.std()
    assert m["kendall_tau"] > 0.8
    assert m["rmse_points"] < r["rmse_points"]  # the interaction is beyond a linear model


def test_fit_is_seeded_and_saved_weights_predict_the_same(params, space, tmp_path):
    cfgs, _, y = _synthetic(space, 120, 1)
    pc = dataclasses.replace(params.predictor, epochs=20,
                             dataset_path=str(tmp_path / "acc.parquet"),
                             weights_path=str(tmp_path / "mlp.safetensors"),
                             report_path=str(tmp_path / "predictor.json"))
    p = dataclasses.replace(params, predictor=pc)
    pd.DataFrame({"config": [str(c) for c in cfgs], "accuracy": y}).to_parquet(pc.dataset_path)
    a = fit_predictor(p)
    first = load_predictor(p).predict(cfgs)
    b = fit_predictor(p)
    assert a["mlp"] == b["mlp"] and a["chosen"] == b["chosen"]
    np.testing.assert_allclose(load_predictor(p).predict(cfgs), first)
    assert (tmp_path / "predictor_parity.png").is_file()
    assert {"rmse_points", "kendall_tau", "spearman"} <= set(a["ridge"])
    # the saved predictor is the chosen model: it reproduces that model's test metrics
    te_idx = split_indices(len(cfgs), pc.split, pc.seed)[2]
    saved = metrics(load_predictor(p).predict([cfgs[i] for i in te_idx]), y[te_idx])
    assert saved["rmse_points"] == pytest.approx(a[a["chosen"]]["rmse_points"], rel=1e-5)
    assert a["predictor"]["rmse_points"] == pytest.approx(a[a["chosen"]]["rmse_points"])
    assert a["resplits"] == b["resplits"] and a["resplits"]["repeats"] == 100


def test_resplits_tell_a_stage_level_accuracy_apart(space):
    """On an accuracy made of stage counts, the pooled ridge beats the one-hot ridge over
    random re-splits, and every summary is ordered p10 <= mean <= p90."""
    from ofa.predictor.fit import learning_curve, resplit_metrics
    from ofa.predictor.pooled import pooling_matrix

    layout = GeneLayout.of(space)
    rng = random.Random(5)
    x = encode(layout, to_genes(space, [space.sample(rng) for _ in range(120)])).astype(np.float64)
    counts = x @ pooling_matrix(layout)
    y = 0.9 + counts @ np.random.default_rng(5).normal(0, 0.002, counts.shape[1])
    r = resplit_metrics(layout, x, y, (0.6, 0.2, 0.2), seed=0, repeats=6)
    assert r["repeats"] == 6
    # on a noiseless linear accuracy, more training subnets help and the fitted error is ~0
    lc = learning_curve(layout, x, y, (0.6, 0.2, 0.2), seed=0, repeats=6)
    assert lc["n_train"] == [18, 36, 54, 72]
    assert lc["test_rmse_points_mean"][-1] < lc["test_rmse_points_mean"][0]
    assert lc["fitted_rmse_points"] < 0.05 * 100 * y.std()
    assert r["pooled_ridge"]["rmse_points_mean"] < r["ridge"]["rmse_points_mean"]
    for model in ("pooled_ridge", "ridge"):
        for key in ("rmse_points", "kendall_tau"):
            m = r[model]
            assert m[f"{key}_p10"] <= m[f"{key}_mean"] <= m[f"{key}_p90"]


@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_ridge_is_a_linear_model_of_the_paper_features(space, seed):
    """The stage-pooled ridge, stored as a no-hidden-layer AccuracyMLP over the one-hot
    features, predicts what a ridge on the pooled counts predicts; on an accuracy that depends
    on per-stage counts only, it beats the one-hot ridge from few subnets."""
    from ofa.predictor.model import ridge_weights
    from ofa.predictor.pooled import fit_pooled_ridge, pooling_matrix

    layout = GeneLayout.of(space)
    rng = random.Random(seed)
    cfgs = [space.sample(rng) for _ in range(160)]
    x = encode(layout, to_genes(space, cfgs)).astype(np.float64)
    pool = pooling_matrix(layout)
    assert pool.shape[0] == layout.n_features and (pool.sum(1) == 1).all()
    counts = x @ pool
    w_true = np.random.default_rng(seed).normal(0, 0.002, counts.shape[1])
    y = 0.9 + counts @ w_true + np.random.default_rng(seed + 1).normal(0, 0.001, len(x))
    net, alpha = fit_pooled_ridge(layout, x[:80], y[:80], x[80:120], y[80:120])
    with torch.no_grad():
        pred = net(torch.from_numpy(x[120:]).float()).double().numpy()
    w, b, _ = ridge_weights(counts[:80], y[:80], counts[80:120], y[80:120])
    np.testing.assert_allclose(pred, counts[120:] @ w + b, atol=1e-5)
    onehot, _ = fit_ridge(x[:80], y[:80], x[80:120], y[80:120])
    assert metrics(pred, y[120:])["rmse_points"] < metrics(onehot(x[120:]), y[120:])["rmse_points"]
    assert net.layers == 0 and alpha > 0


@pytest.mark.parametrize("layers,hidden,skip", [(0, 0, False), (1, 16, False), (3, 400, False),
                                               (2, 32, True)])
def test_the_search_scoring_path_equals_the_module(space, layers, hidden, skip):
    """Predictor.predict_genes (packed weights) gives what the nn.Module computes."""
    layout = GeneLayout.of(space)
    torch.manual_seed(layers)
    net = AccuracyMLP(layout.n_features, hidden, layers, 0.9, skip=skip).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    genes = to_genes(space, [space.sample(random.Random(i)) for i in range(40)])
    with torch.no_grad():
        expected = net(torch.from_numpy(encode(layout, genes))).double().numpy()
    got = Predictor(net, layout, space).predict_genes(genes)
    assert got.shape == (40,) and np.ptp(got) > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_the_average_of_an_mlp_and_a_linear_model_is_one_saved_net(params, space, tmp_path):
    """average(mlp, linear) predicts the mean of the two, and survives save and load."""
    from ofa.predictor.model import average, save_predictor

    layout = GeneLayout.of(space)
    torch.manual_seed(3)
    mlp = AccuracyMLP(layout.n_features, 16, 2, 0.9).eval()
    linear = AccuracyMLP(layout.n_features, 0, 0, 0.8).eval()
    with torch.no_grad():
        for p in list(mlp.parameters()) + list(linear.parameters()):
            p.normal_(0.0, 0.1)
    both = average(mlp, linear)
    genes = to_genes(space, [space.sample(random.Random(i)) for i in range(30)])
    x = torch.from_numpy(encode(layout, genes))
    with torch.no_grad():
        want = (mlp(x) + linear(x)) / 2
        torch.testing.assert_close(both(x), want)
    path = tmp_path / "avg.safetensors"
    save_predictor(both, space, params.predictor, path)
    got = load_predictor(params, path).predict_genes(genes)
    np.testing.assert_allclose(got, want.double().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="must be linear"):
        average(mlp, mlp)


def test_a_predictor_from_another_space_is_refused(params, space, tmp_path):
    cfgs, _, y = _synthetic(space, 60, 2)
    pc = dataclasses.replace(params.predictor, epochs=2,
                             dataset_path=str(tmp_path / "acc.parquet"),
                             weights_path=str(tmp_path / "mlp.safetensors"),
                             report_path=str(tmp_path / "predictor.json"))
    p = dataclasses.replace(params, predictor=pc)
    pd.DataFrame({"config": [str(c) for c in cfgs], "accuracy": y}).to_parquet(pc.dataset_path)
    fit_predictor(p)
    other = dataclasses.replace(p, space=dataclasses.replace(p.space, resolutions=(20, 24)))
    with pytest.raises(OFAError, match="another search space"):
        load_predictor(other)
    (tmp_path / "mlp.safetensors").write_bytes(b"garbage")
    with pytest.raises(OFAError, match="not a safetensors file"):
        load_predictor(p)


@pytest.mark.parametrize("mutation,message", [
    (lambda df: df.drop(columns=["accuracy"]), "lacks the column 'accuracy'"),
    (lambda df: df.assign(accuracy=df["accuracy"] * 100), "outside \\[0, 1\\]"),
    (lambda df: df.assign(config="r99" + df["config"].str[3:]), "resolution 99"),
    (lambda df: df.head(3), "needs >= 10"),
])
def test_a_malformed_dataset_is_refused(params, space, tmp_path, mutation, message):
    cfgs, _, y = _synthetic(space, 30, 3)
    df = pd.DataFrame({"config": [str(c) for c in cfgs], "accuracy": y})
    mutation(df).to_parquet(tmp_path / "acc.parquet")
    with pytest.raises(OFAError, match=message):
        read_dataset(params, tmp_path / "acc.parquet")


def test_sampled_configs_are_distinct_and_include_the_extremes(space):
    cfgs = sample_configs(space, 50, seed=0)
    assert len(set(cfgs)) == 50
    assert space.canonical(space.min_config()) in cfgs and space.max_config() in cfgs
    assert sample_configs(space, 50, seed=0) == cfgs


def test_accuracy_dataset_on_a_tiny_supernet(params, space, tmp_path):
    from ofa.data import Dataset, Split, load_dataset
    from ofa.evaluate import EvalSettings
    from ofa.nn.supernet import OFAMobileNetV3
    from ofa.predictor.dataset import measure_configs, write_dataset

    full = load_dataset(params.data)
    cut = lambda s, n: Split(s.images[:n], s.labels[:n])  # noqa: E731
    data = Dataset(cut(full.train, 32), cut(full.val, 40), cut(full.test, 8), full.mean, full.std, 10)
    torch.manual_seed(0)
    net = OFAMobileNetV3(space).eval()
    cfgs = sample_configs(space, 4, seed=0)
    settings = EvalSettings(batch_size=32, calib_images=32, channels_last=False)
    rows = measure_configs(net, cfgs, data, settings, val_images=40)
    # chunked measurement gives the same rows (what the Dask fan-out relies on)
    assert measure_configs(net, cfgs[2:], data, settings, 40) == rows[2:]
    df = write_dataset(rows, tmp_path / "acc.parquet")
    assert list(df["config"]) == [str(c) for c in cfgs]
    assert df["accuracy"].between(0, 1).all() and (df["macs"] > 0).all()
    # ONNX Runtime's validation pass counts the same images right, up to a near-tie each
    by_ort = measure_configs(net, cfgs, data, settings, 40, backend="onnxruntime")
    for a, b in zip(rows, by_ort):
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 40 + 1e-9, (a, b)
        assert {k: v for k, v in a.items() if "accuracy" not in k} == \
            {k: v for k, v in b.items() if "accuracy" not in k}
    assert sum(a["accuracy"] == b["accuracy"] for a, b in zip(rows, by_ort)) >= len(rows) - 1


def test_local_workers_give_the_sequential_dataset(tmp_path):
    """predictor.workers: 2 measures in two processes; the rows equal one sequential run's."""
    import pandas as pd

    from ofa.checkpoint import save_checkpoint
    from ofa.config import to_dict
    from ofa.nn.supernet import OFAMobileNetV3
    from ofa.predictor import build_acc_dataset
    from ofa.space import SearchSpace
    from tests.conftest import tiny_space_params

    def params(workers: int):
        return tiny_space_params(tmp_path, predictor={"n_subnets": 10, "val_images": 64,
                                                      "workers": workers},
                                 train={"bn_calib_images": 32, "eval_batch_size": 64})

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt" / "expand2.pt"
    seq_params = params(1)
    save_checkpoint(ckpt, OFAMobileNetV3(SearchSpace(seq_params.space)).state_dict(),
                    {"space": to_dict(seq_params.space), "complete": True})
    sequential = build_acc_dataset(seq_params, ckpt, tmp_path / "seq.parquet", show_progress=False)
    parallel = build_acc_dataset(params(2), ckpt, tmp_path / "par.parquet", show_progress=False)
    pd.testing.assert_frame_equal(parallel, sequential)
    assert len(sequential) == 10

"""The paper authors' pretrained supernets (their package `ofa`, OFAMobileNetV3 w1.0 and w1.2).

Imported, they compute what the authors' own code computes: the golden logits in
tests/fixtures/official/ were made by their class (make_fixture.py, run beside their package;
it is not needed here) with stand-in weights that tests/official_weights.py rebuilds from the
key list and a seed. Exported back, the file is theirs again, bit for bit; bad files are
refused in one line and write nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch

from ofa.bn import recalibrate
from ofa.checkpoint import load_checkpoint, save_checkpoint
from ofa.cli import OFFLINE_ENV
from ofa.config import load_params, to_dict
from ofa.errors import OFAError
from ofa.nn.supernet import OFAMobileNetV3
from ofa.official import (config_from_official, export_official, import_official,
                          official_tensors)
from ofa.space import SearchSpace
from ofa.weights import load_supernet
from tests.cli_support import assert_clean_error, cli
from tests.official_weights import (calibration_batches, fixture_input, state_digest,
                                    weights_from_keys)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
PRESETS = {"1.0": "imagenet", "1.2": "imagenet_w12"}
TOLERANCE = 1e-5  # max |ours - theirs| / max |theirs| per subnet and resolution


def _golden(width: str) -> dict:
    return json.loads((FIXTURES / f"ofa_mbv3_w{width}.json").read_text())


def _stand_in(golden: dict) -> dict[str, torch.Tensor]:
    state = weights_from_keys(golden["keys"], golden["weights"]["seed"])
    assert state_digest(state) == golden["weights"]["sha256"], \
        "the stand-in weights come out differently here than where the fixture was made"
    return state


@pytest.fixture(scope="module", params=list(PRESETS))
def width(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def golden(width: str) -> dict:
    return _golden(width)


@pytest.fixture(scope="module")
def preset_params(width: str):
    return load_params(ROOT / "params.yaml", PRESETS[width])


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    """width -> (the stand-in state dict, its file as the authors publish theirs:
    {"state_dict": ...}), each made once."""
    made: dict[str, tuple[dict, Path]] = {}

    def get(width: str) -> tuple[dict, Path]:
        if width not in made:
            state = _stand_in(_golden(width))
            path = tmp_path_factory.mktemp(f"authors-{width}") / f"ofa_mbv3_d234_e346_k357_w{width}"
            torch.save({"state_dict": state}, path)
            made[width] = (state, path)
        return made[width]

    return get


@pytest.fixture(scope="module")
def authors_state(authors, width: str) -> dict[str, torch.Tensor]:
    return authors(width)[0]


@pytest.fixture(scope="module")
def authors_file(authors, width: str) -> Path:
    return authors(width)[1]


@pytest.fixture(scope="module")
def imported(authors_file: Path, preset_params, width: str, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"imported-{width}") / "supernet.pt"
    import_official(authors_file, preset_params.space, out, PRESETS[width])
    return out


# -- the presets are the authors' class --------------------------------------------------------
def test_preset_is_the_authors_class(golden: dict, preset_params):
    arch, sp, acts = golden["architecture"], preset_params.space, {"h_swish": "hswish", "relu": "relu"}
    fc = arch["first_conv"]
    assert (sp.in_channels, sp.stem.width, sp.stem.stride, sp.stem.act) == \
        (fc["in_channels"], fc["out_channels"], fc["stride"], acts[fc["act_func"]])
    fb, first = arch["first_block"], sp.first_block
    assert (first.width, first.stride, first.act, first.se) == \
        (fb["out_channels"], fb["stride"], acts[fb["act_func"]], fb["use_se"])
    assert (fb["kernel_size"], fb["expand_ratio"]) == (3, 1)  # ours: a fixed 3x3, no expansion
    assert arch["first_block_residual"] == (sp.stem.width == first.width and first.stride == 1)
    assert [(s.width, s.stride, s.act, s.se) for s in sp.stages] == \
        [(s["width"], s["stride"], acts[s["act"]], s["se"]) for s in arch["stages"]]
    assert {s["blocks"] for s in arch["stages"]} == {max(sp.depth_choices)}
    assert sp.final_expand_width == arch["final_expand_layer"]["out_channels"]
    assert acts[arch["final_expand_layer"]["act_func"]] == "hswish"
    mix = arch["feature_mix_layer"]
    assert (sp.feature_width, sp.feature_bias, mix["use_bn"], acts[mix["act_func"]]) == \
        (mix["out_channels"], mix["bias"], False, "hswish")
    assert sp.num_classes == arch["classifier"]["out_features"]
    assert (sp.bn_eps, sp.bn_momentum) == (arch["bn"]["eps"], arch["bn"]["momentum"])
    assert [sp.bn_momentum, sp.bn_eps] == arch["class_defaults"]["bn_param"]
    assert sp.dropout == arch["class_defaults"]["dropout_rate"]  # their training default
    net = golden["net"]
    assert (list(sp.kernel_choices), list(sp.expand_choices), list(sp.depth_choices)) == \
        (net["ks_list"], net["expand_ratio_list"], net["depth_list"])


def test_layout_is_the_authors_state_dict(golden: dict, preset_params):
    """Every key, in order, with its shape (SE squeeze widths included) and dtype."""
    got = official_tensors(SearchSpace(preset_params.space))
    assert [(k, list(shape)) for k, (shape, _) in got.items()] == [tuple(k) for k in golden["keys"]]
    assert {k for k, (_, dt) in got.items() if dt == torch.int64} == \
        {k for k, _ in golden["keys"] if k.endswith("num_batches_tracked")}


# -- the imported supernet computes the authors' function --------------------------------------
def test_imported_supernet_and_its_exports_compute_the_authors_logits(imported, golden,
                                                                      preset_params):
    net, meta = load_supernet(preset_params, imported)  # the step every later one takes
    net.eval()
    space = SearchSpace(preset_params.space)
    inputs = {r: fixture_input(golden["input"]["seed"], golden["input"]["batch"], 3, r)
              for r in golden["input"]["resolutions"]}
    assert {r: state_digest({"x": x}) for r, x in inputs.items()} == \
        {int(r): d for r, d in golden["input"]["sha256"].items()}
    worst = {}
    with torch.no_grad():
        for case in golden["cases"]:
            cfg = config_from_official(case["ks"], case["e"], case["d"], case["r"], space)
            want = torch.tensor(case["logits"], dtype=torch.float64)
            x = inputs[case["r"]]
            for how, logits in (("supernet", net(x, cfg)), ("export", net.export(cfg).eval()(x))):
                diff = float((logits.double() - want).abs().max() / want.abs().max())
                worst[how] = max(worst.get(how, 0.0), diff)
                assert diff <= TOLERANCE, f"{how} {case['name']} r{case['r']}: {diff:.2e}"
    assert len(golden["cases"]) >= 20 and len(inputs) == 2
    assert meta["imported"]["sha256"] and meta["complete"]


def test_authors_bn_recalibration_reproduces_theirs(imported, golden, preset_params):
    """data.bn_recal: authors (the imagenet presets) gives their set_running_statistics' logits
    on the same batches (a short last one included); the exact mode (unbiased variances) does
    not, so the fixture tells the two apart."""
    if "bn_recal" not in golden:
        pytest.skip("the fixture records the authors' BN recalibration for w1.0")
    assert preset_params.data.bn_recal == "authors"
    recal = golden["bn_recal"]
    batches = [x.double() for x in calibration_batches()]
    assert [len(x) for x in batches] == recal["sizes"]
    assert state_digest({"x": torch.cat(calibration_batches())}) == recal["sha256"]
    net, _ = load_supernet(preset_params, imported)
    space = SearchSpace(preset_params.space)
    x = fixture_input(golden["input"]["seed"], golden["input"]["batch"], 3, recal["r"]).double()
    for case in recal["cases"]:
        cfg = config_from_official(case["ks"], case["e"], case["d"], case["r"], space)
        want = torch.tensor(case["logits"], dtype=torch.float64)
        diffs = {}
        for mode in ("authors", "exact"):
            static = recalibrate(net.export(cfg).double(), batches, mode).eval()
            with torch.no_grad():
                diffs[mode] = float((static(x) - want).abs().max() / want.abs().max())
        assert diffs["authors"] <= TOLERANCE, (case["name"], diffs)
        assert diffs["exact"] > 10 * TOLERANCE, (case["name"], diffs)


def test_config_convention_is_the_authors_block_order(preset_params):
    """Their ks/e lists run over the possible blocks stage after stage (4 each): slot i."""
    space = SearchSpace(preset_params.space)
    ks = [3, 5, 7, 3] * 5
    cfg = config_from_official(ks, 4, [2, 3, 4, 2, 3], 160, space)
    assert cfg.ks == tuple(ks) and cfg.e == (4,) * 20 and cfg.d == (2, 3, 4, 2, 3)
    assert [cfg.ks[s] for s in space.active_slots(cfg)][:5] == [3, 5, 3, 5, 7]
    with pytest.raises(OFAError, match="kernel size 9"):
        config_from_official(9, 4, 2, 160, space)


def _spelled(state: dict, how: str) -> dict:
    if how == "bare":
        return state
    out = {re.sub(r"^(blocks\.\d+)\.conv\.", r"\1.mobile_inverted_conv.", k): v
           for k, v in state.items()}
    if how == "old-nesting":  # their older dynamic layers: `.bn.` and `.conv.weight` once
        out = {k.replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight"): v
               for k, v in out.items()}
    return out


@pytest.mark.parametrize("how", ["bare", "mobile-inverted-conv", "old-nesting"])
def test_other_spellings_import_the_same_tensors(how, authors_state, imported, preset_params,
                                                 width, tmp_path):
    state = _spelled(authors_state, how)
    assert how == "bare" or set(state) != set(authors_state)
    src = tmp_path / "theirs.pth"
    torch.save(state if how == "bare" else {"state_dict": state}, src)
    meta = import_official(src, preset_params.space, tmp_path / "ours.pt", PRESETS[width])
    assert meta["imported"]["wrapped"] == (how != "bare")
    assert meta["imported"]["old_spelling"] == (how != "bare")
    ref, got = load_checkpoint(imported)["model"], load_checkpoint(tmp_path / "ours.pt")["model"]
    assert list(got) == list(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


# -- export: the authors' format, bit for bit -----------------------------------------------------
def _assert_authors_file(path: Path, golden: dict, authors_state: dict) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert list(payload) == ["state_dict"]
    state = payload["state_dict"]
    assert [[k, list(v.shape)] for k, v in state.items()] == golden["keys"]
    assert all(state[k].dtype == v.dtype and torch.equal(state[k], v)
               for k, v in authors_state.items())


def test_round_trip_is_bit_identical(imported, golden, authors_state, preset_params, width,
                                     tmp_path):
    back = tmp_path / "back.pth"
    rng = torch.get_rng_state()
    res = export_official(imported, back)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert res["width_mult"] == float(width) and res["tensors"] == len(golden["keys"])
    _assert_authors_file(back, golden, authors_state)
    again = tmp_path / "again.pt"
    import_official(back, preset_params.space, again, PRESETS[width])
    first, second = load_checkpoint(imported)["model"], load_checkpoint(again)["model"]
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
    export_official(again, tmp_path / "back2.pth")
    assert (tmp_path / "back2.pth").read_bytes() == back.read_bytes()


def test_cli_imports_and_exports(authors, tmp_path, monkeypatch, capsys):
    """`ofa-cli import-official` as a user runs it (a real process: nothing but its line on
    stdout, nothing on stderr), then export-official (in this process: seconds of imports
    saved) back to the authors' file."""
    state, theirs = authors("1.0")
    ours, back = tmp_path / "ours.pt", tmp_path / "back.pth"
    proc = cli(["--params", str(ROOT / "params.yaml"), "import-official", str(theirs),
                "--preset", "imagenet", "--output", str(ours)], tmp_path)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    record = tmp_path / "ours.json"  # what params' supernet.record names for this supernet
    assert proc.stdout.startswith(f"wrote {ours} and its record {record}: the authors' "
                                  "OFAMobileNetV3 width_mult 1.0")
    meta = load_checkpoint(ours, to_dict(load_params(ROOT / "params.yaml", "imagenet").space))["meta"]
    assert meta["imported"]["file"] == str(theirs)
    assert meta["imported"]["sha256"] == hashlib.sha256(theirs.read_bytes()).hexdigest()
    assert json.loads(record.read_text()) == {"imported": meta["imported"]}
    from ofa.cli import main

    monkeypatch.setattr(sys, "argv", ["ofa-cli", "export-official", str(ours), "--output", str(back)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0 and capsys.readouterr().err == ""
    _assert_authors_file(back, _golden("1.0"), state)


# -- refusals: one line, exit 2, nothing written ---------------------------------------------------
def _run(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`ofa-cli` in this process (a subprocess per refusal would cost seconds of imports)."""
    from ofa.cli import main

    for k, v in OFFLINE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("OFA_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["ofa-cli", "--params", str(ROOT / "params.yaml"), *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return exc.value.code, lines[0]


class _Code:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


def _bad_import_file(kind: str, tmp: Path, authors) -> Path:
    path = tmp / "bad.pth"
    state, good = authors("1.0")
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "code":
        path.write_bytes(pickle.dumps({"state_dict": _Code()}))
    elif kind == "code-in-torch-file":
        torch.save({"state_dict": {"first_conv.conv.weight": _Code()}}, path)
    elif kind == "not-a-state-dict":
        torch.save([1, 2, 3], path)
    elif kind == "non-tensor":
        torch.save({"state_dict": {**state, "epoch": 3}}, path)
    elif kind == "ours":
        save_checkpoint(path, {}, {"space": {}})
    elif kind == "missing-key":
        torch.save({"state_dict": {k: v for k, v in state.items() if "blocks.7." not in k}}, path)
    elif kind == "extra-key":
        torch.save({"state_dict": {**state, "feature_mix_layer.conv.bias": torch.zeros(1280)}}, path)
    elif kind == "wrong-shape":
        torch.save({"state_dict": {**state, "classifier.linear.weight": torch.zeros(10, 1280),
                                   "classifier.linear.bias": torch.zeros(10)}}, path)
    elif kind == "wrong-dtype":
        torch.save({"state_dict": {**state, "classifier.linear.bias": torch.zeros(1000).half()}},
                   path)
    elif kind == "nan":
        torch.save({"state_dict": {**state, "classifier.linear.bias": torch.full((1000,), float("nan"))}},
                   path)
    elif kind == "width-1.2":
        return authors("1.2")[1]
    elif kind in ("proxyless", "resnet50"):  # their real key lists (keys tell spaces apart)
        name = "ofa_proxyless_d234_e346_k357_w1.3" if kind == "proxyless" else "ofa_resnet50"
        keys = json.loads((FIXTURES / "other_nets.json").read_text())[name]
        torch.save({"state_dict": {k: torch.zeros(1) for k, _ in keys}}, path)
    return path


@pytest.mark.parametrize("kind, needle", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("truncated", "truncated or not a torch file"),
    ("empty", "truncated or not a torch file"),
    ("code", "refused by torch.load(weights_only=True)"),
    ("code-in-torch-file", "GLOBAL posix.system"),
    ("not-a-state-dict", "holds no state dict"),
    ("non-tensor", "'epoch' holds int, not a tensor"),
    ("ours", "already this project's supernet checkpoint"),
    ("missing-key", "missing (first: blocks.7.conv.inverted_bottleneck.conv.conv.weight)"),
    ("extra-key", "1 unexpected (first: feature_mix_layer.conv.bias) of 475 keys"),
    ("wrong-shape", "classifier.linear.weight has shape (10, 1280), the space wants (1000, 1280)"),
    ("wrong-dtype", "classifier.linear.bias is torch.float16"),
    ("nan", "NaN"),
    ("width-1.2", "does not fit preset imagenet's space (the authors' width_mult 1.0): it holds "
                  "widths 24/24/32/48/96/136/192, 1152, 1536 (the authors' width_mult 1.2), the "
                  "space 16/16/24/40/80/112/160, 960, 1280"),
    ("proxyless", "OFAProxylessNASNets"),
    ("resnet50", "OFAResNets"),
])
def test_bad_import_is_refused(kind, needle, authors, tmp_path, monkeypatch, capsys):
    bad = _bad_import_file(kind, tmp_path, authors)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "supernet.pt").write_bytes(b"previous")
    code, line = _run(["import-official", str(bad), "--preset", "imagenet", "--output",
                       str(out_dir / "supernet.pt")], monkeypatch, capsys)
    assert code == 2 and needle in line, line
    assert str(bad) in line
    assert [p.name for p in out_dir.iterdir()] == ["supernet.pt"]  # no temporary left
    assert (out_dir / "supernet.pt").read_bytes() == b"previous"


def test_import_into_a_space_that_is_not_the_authors(authors, tmp_path, monkeypatch, capsys):
    authors_file = authors("1.0")[1]
    code, line = _run(["import-official", str(authors_file), "--output", str(tmp_path / "x.pt")],
                      monkeypatch, capsys)  # the default (Fashion-MNIST) space
    assert code == 2 and "not the authors' OFAMobileNetV3 space" in line
    assert "space.in_channels is 1, theirs 3" in line and not (tmp_path / "x.pt").exists()
    code, line = _run(["--preset", "smoke", "import-official", str(authors_file), "--preset",
                       "imagenet", "--output", str(tmp_path / "x.pt")], monkeypatch, capsys)
    assert code == 2 and "two presets" in line


def _ours_with(space_cfg, path: Path) -> Path:
    torch.manual_seed(0)
    net = OFAMobileNetV3(SearchSpace(space_cfg))
    save_checkpoint(path, net.state_dict(), {"space": to_dict(space_cfg), "complete": True})
    return path


@pytest.mark.parametrize("kind, needle", [
    ("bias-on", "space.feature_bias on"),
    ("not-the-authors", "is not the authors' OFAMobileNetV3 space"),
    ("authors-file", "is not an OFA supernet checkpoint"),
    ("missing", "does not exist"),
])
def test_bad_export_is_refused(kind, needle, params, authors, tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    authors_file = authors("1.0")[1]

    ckpt = {"bias-on": lambda: _ours_with(params.space, tmp_path / "c.pt"),
            "not-the-authors": lambda: _ours_with(replace(params.space, feature_bias=False),
                                                  tmp_path / "c.pt"),
            "authors-file": lambda: authors_file,
            "missing": lambda: tmp_path / "none.pt"}[kind]()
    out = tmp_path / "out" / "theirs.pth"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    code, line = _run(["export-official", str(ckpt), "--output", str(out)], monkeypatch, capsys)
    assert code == 2 and needle in line, line
    assert [p.name for p in out.parent.iterdir()] == ["theirs.pth"]
    assert out.read_bytes() == b"previous"


def test_a_missing_output_folder_is_made_and_a_folder_as_output_refused(authors, tmp_path,
                                                                         monkeypatch, capsys):
    imported = tmp_path / "ours.pt"
    import_official(authors("1.0")[1], load_params(ROOT / "params.yaml", "imagenet").space,
                    imported, "imagenet")
    export_official(imported, tmp_path / "new" / "theirs.pth")
    assert (tmp_path / "new" / "theirs.pth").is_file()
    (tmp_path / "dir").mkdir()
    code, line = _run(["export-official", str(imported), "--output", str(tmp_path / "dir")],
                      monkeypatch, capsys)
    assert code == 2 and "is a directory" in line


def test_an_output_named_like_its_record_is_refused(authors, tmp_path, monkeypatch, capsys):
    """The record goes beside the checkpoint as <name>.json, so a .json checkpoint would be
    overwritten by its own record: refused before anything is read or written."""
    code, line = _run(["import-official", str(authors("1.0")[1]), "--preset", "imagenet",
                       "--output", str(tmp_path / "ours.json")], monkeypatch, capsys)
    assert code == 2 and "record is written beside it" in line, line
    assert list(tmp_path.glob("ours*")) == []

"""Where training and evaluation run (`train.device`, ofa/device.py): the resolution rules on
any machine, and the same function and accuracy on every device this machine has (the CUDA
cases run where a GPU exists and are skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

from ofa.bn import recalibrate
from ofa.device import eval_device, local_workers, module_device, resolve_device
from ofa.errors import OFAError
from ofa.inference import hits, split_hits
from tests.cli_support import assert_clean_error, cli, params_dict, write_params

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA,
                                                                  reason="no CUDA GPU here"))]


def _gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize("gpus, pref, rank, expected", [
    (0, "auto", 0, "cpu"), (0, "cpu", 0, "cpu"), (2, "cpu", 1, "cpu"),
    (1, "auto", 0, "cuda:0"), (2, "auto", 1, "cuda:1"), (2, "cuda", 0, "cuda:0"),
])
def test_the_device_follows_the_preference_and_the_gpus_present(monkeypatch, gpus, pref, rank,
                                                               expected):
    _gpus(monkeypatch, gpus)
    assert resolve_device(pref, rank) == torch.device(expected)


@pytest.mark.parametrize("gpus, rank, needle", [(0, 0, "no CUDA GPU is available"),
                                                (1, 1, "train.processes to at most 1")])
def test_cuda_that_is_not_there_is_refused_naming_the_key(monkeypatch, gpus, rank, needle):
    _gpus(monkeypatch, gpus)
    with pytest.raises(OFAError, match="train.device") as err:
        resolve_device("cuda", rank)
    assert needle in str(err.value)


@pytest.mark.parametrize("gpus, processes, expected", [(0, 2, 2), (0, 1, 1), (1, 2, 1), (4, 2, 2),
                                                       (4, 8, 4)])
def test_local_workers_are_one_per_gpu_at_most_on_cuda(monkeypatch, gpus, processes, expected):
    _gpus(monkeypatch, gpus)
    assert local_workers(processes, "auto") == expected


def test_onnxruntime_passes_stay_on_the_cpu(monkeypatch):
    _gpus(monkeypatch, 1)
    assert eval_device("auto", "onnxruntime") == torch.device("cpu")
    assert eval_device("auto", "torch") == torch.device("cuda", 0)


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is here: train.device cuda is valid")
def test_training_on_cuda_without_a_gpu_is_one_clean_line(tmp_path):
    path = write_params(tmp_path, params_dict(tmp_path, {"train": {"device": "cuda"}}))
    proc = cli(["--params", str(path), "train", "--phase", "teacher", "--no-progress"], tmp_path)
    assert_clean_error(proc, "train.device", "no CUDA GPU")
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.pt"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", ["min", "max"])
def test_a_subnet_exported_on_a_device_computes_what_the_supernet_does(supernet, space, device,
                                                                       which):
    net = supernet.to(device).eval()
    cfg = getattr(space, f"{which}_config")(space.cfg.resolutions[-1])
    static = net.export(cfg).eval()
    assert {t.device for t in [*static.parameters(), *static.buffers()]} == {module_device(net)}
    x = torch.randn(4, space.cfg.in_channels, cfg.r, cfg.r, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = net(x.to(device), cfg), static(x.to(device))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_recalibration_and_passes_take_cpu_batches_wherever_the_model_is(supernet, space, device):
    cfg = space.mid_config(space.cfg.resolutions[1])
    gen = torch.Generator().manual_seed(5)
    calib = [torch.randn(8, space.cfg.in_channels, cfg.r, cfg.r, generator=gen) for _ in range(3)]
    labelled = [(torch.randn(8, space.cfg.in_channels, cfg.r, cfg.r, generator=gen),
                 torch.randint(0, space.cfg.num_classes, (8,), generator=gen)) for _ in range(2)]
    on_cpu = recalibrate(supernet.export(cfg), calib).eval()
    there = recalibrate(supernet.to(device).export(cfg), calib).eval()
    for a, b in zip(on_cpu.buffers(), there.buffers()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    assert torch.equal(hits(there, labelled), hits(on_cpu, labelled))
    ort = split_hits(there, [labelled], "onnxruntime", threads=1)[0]  # exported from a CPU copy
    assert ort.device.type == "cpu" and len(ort) == 16
    assert module_device(there).type == device  # the pass left the model where it was


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_on_a_device_give_the_cpus_gradients(space, device):
    """Forward and backward of the min and max subnets at the smallest resolution (maps
    smaller than 7x7 kernels: the CPU's dense depthwise route, not taken on a GPU) match the
    CPU's gradients; on the CPU itself, those of torch's own ops (native_kernel=False)."""
    from ofa.nn.supernet import OFAMobileNetV3

    torch.manual_seed(0)
    cpu = OFAMobileNetV3(space).train()
    there = OFAMobileNetV3(space, native_kernel=False).train()
    there.load_state_dict(cpu.state_dict())
    there = there.to(device)
    for m in [*cpu.modules(), *there.modules()]:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # the same function on both sides (their random masks would differ)
    r = min(space.cfg.resolutions)
    x = torch.randn(4, space.cfg.in_channels, r, r, generator=torch.Generator().manual_seed(1))
    for cfg in (space.max_config(r), space.min_config(r)):
        cpu.zero_grad(), there.zero_grad()
        cpu(x, cfg).square().mean().backward()
        there(x.to(device), cfg).square().mean().backward()
        for (name, a), b in zip(cpu.named_parameters(), there.parameters()):
            if a.grad is not None:
                torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_a_checkpoint_keeps_a_cpu_state_dict_as_it_is(tmp_path, space):
    from ofa.checkpoint import _on_cpu, load_checkpoint, save_checkpoint
    from ofa.nn.supernet import OFAMobileNetV3

    state = OFAMobileNetV3(space).state_dict()
    assert _on_cpu(state) is state
    save_checkpoint(tmp_path / "c.pt", state, {"phase": "t"})
    back = load_checkpoint(tmp_path / "c.pt")["model"]
    assert all(torch.equal(back[k], v) and back[k].device.type == "cpu" for k, v in state.items())

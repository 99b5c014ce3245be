"""The same model, data and training on a CUDA device (run where a GPU is present)."""
import math

import pytest
import torch

from tvae_sweep import ModelConfig, build_model
from tvae_sweep.data import build_data
from tvae_sweep.data.transforms import rotate_hue
from tvae_sweep.training import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_energy_and_model_match_the_cpu():
    u_sq = torch.rand(2, 18, 18, 18, dtype=torch.float64)
    full = build_model(ModelConfig()).double()  # W: 13 frames, neighbourhood 1, shift 1
    cpu = full.energy(u_sq)
    gpu = full.cuda().energy(u_sq.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu)
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_caps=4, cap_dim=6, seq_len=6, coherence_window=3)).double()
    x = torch.rand(2, 6, 3, 28, 28, dtype=torch.float64)
    q_cpu = model.encode(x)
    q_gpu = model.cuda().encode(x.cuda())
    torch.testing.assert_close(q_gpu.z_mean.cpu(), q_cpu.z_mean)
    torch.testing.assert_close(model.decode(q_gpu.z_mean).cpu(), model.cpu().decode(q_cpu.z_mean))


def test_sequences_are_generated_on_the_device_and_seeded(tiny_config):
    cfg = tiny_config()
    data = build_data(cfg.data, cfg.model.seq_len, "cuda")
    a = data.sample_train(4, torch.Generator("cuda").manual_seed(1))
    b = data.sample_train(4, torch.Generator("cuda").manual_seed(1))
    assert a.x.is_cuda and torch.equal(a.x, b.x)


def test_training_on_cuda_resumes_exactly(tiny_config, tmp_path):
    cfg = tiny_config(train={"device": "cuda", "epochs": 2})
    straight = Trainer(cfg)
    list(straight.epochs())
    history = straight.history
    first = Trainer(cfg)
    next(first.epochs())
    first.save_checkpoint(tmp_path)
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path)
    list(resumed.epochs())
    assert resumed.history[-1]["log_likelihood"] == history[-1]["log_likelihood"]
    assert all(p.is_cuda for p in resumed.model.parameters())


def test_a_cuda_graph_step_trains_like_the_eager_step_and_is_reproducible(tiny_config):
    cfg = tiny_config(train={"device": "cuda", "epochs": 2}, data={"train_sequences": 48})
    graph_cfg = tiny_config(train={"device": "cuda", "epochs": 2, "cuda_graph": True}, data={"train_sequences": 48})
    losses, trainers = {}, {}
    for name, config in (("eager", cfg), ("graphed", graph_cfg), ("again", graph_cfg)):
        trainers[name] = trainer = Trainer(config)  # seeds the global RNGs: build each just before it runs
        losses[name] = []
        list(trainer.epochs(on_step=lambda step, loss, name=name: losses[name].append(loss)))
    eager, graphed = trainers["eager"], trainers["graphed"]
    assert graphed.graphed.graph is not None  # the step was captured and replayed
    assert losses["graphed"][:3] == losses["eager"][:3]  # the eager warm-up steps are the same steps
    assert losses["graphed"] == losses["again"]  # seeded replays give the same numbers
    assert all(math.isfinite(v) for v in losses["graphed"])
    last = graphed.history[-1]["train_loss"], eager.history[-1]["train_loss"]
    assert abs(last[0] - last[1]) < 0.05 * abs(last[1])
    assert graphed.history[-1]["train_loss"] < 0.9 * graphed.history[0]["train_loss"] or \
        losses["graphed"][-1] < losses["graphed"][0]


def test_a_cuda_graph_is_captured_again_after_loading_a_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config(train={"device": "cuda", "epochs": 2, "cuda_graph": True, "optimizer": "sgd"})
    first = Trainer(cfg)
    next(first.epochs())
    first.save_checkpoint(tmp_path)
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path)
    assert resumed.graphed.graph is None
    list(resumed.epochs())
    assert resumed.graphed.graph is not None and math.isfinite(resumed.history[-1]["train_loss"])


def test_hue_turn_on_the_gpu_matches_the_cpu():
    images = torch.rand(32, 3, 8, 8)
    angles = torch.arange(32.0) * 20
    torch.testing.assert_close(rotate_hue(images.cuda(), angles.cuda()).cpu(), rotate_hue(images, angles),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_fused_members_train_on_cuda_alone_and_together(tiny_config, cuda_graph, precision):
    train = {"device": "cuda", "epochs": 2, "cuda_graph": cuda_graph, "precision": precision}
    cfgs = [tiny_config(train={**train, "seed": s}, data={"train_sequences": 48}) for s in (0, 1, 2)]
    fused = Trainer(cfgs)
    list(fused.epochs())
    assert fused.errors == [None] * 3
    assert all(p.is_cuda for p in fused.model.parameters())
    if cuda_graph:
        assert fused.graphed.graph is not None
    for m, cfg in enumerate(cfgs):
        single = Trainer(cfg)
        list(single.epochs())
        history = fused.histories[m]
        assert math.isfinite(history[-1]["log_likelihood"])
        if not cuda_graph and precision == "fp32":  # the same noise, batches and start: the same run
            assert history[-1]["log_likelihood"] == pytest.approx(single.history[-1]["log_likelihood"], rel=1e-3)

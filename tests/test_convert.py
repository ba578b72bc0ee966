"""torch -> Orbax -> torch conversion: CLIs, round trips, fairseq DinoSR, and errors on bad checkpoints."""

from __future__ import annotations

import dataclasses
import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from spidr.models.utils import state_dict_from_dinosr_fairseq_checkpoint

from spidr_jax.convert import cli as convert_cli
from spidr_jax.convert.conversion import orbax_to_torch, torch_to_orbax
from spidr_jax.pretrained import load_pretrained, read_pretrained
from tests.faults import modes, read_only_directory, umask, with_file_size_limit
from tests.reference import SMALL, reference_model, save_release

ROOT = Path(__file__).resolve().parents[1]


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "convert" / script), *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("model_type", ["spidr", "dinosr"])
@pytest.mark.slow
def test_cli_round_trip_is_bit_exact_and_loads_strict(tmp_path, model_type):
    model, cfg = reference_model(model_type, seed=1, **SMALL, encoder_qkv_bias=True)
    pt = save_release(model, cfg, tmp_path / "release", model_type)
    result = run_cli("torch_to_orbax.py", "--model", model_type, str(pt), str(tmp_path / "orbax"))
    assert result.returncode == 0, result.stderr
    result = run_cli("orbax_to_torch.py", str(tmp_path / "orbax"), str(tmp_path / "back" / "model.pt"), "--config-json")
    assert result.returncode == 0, result.stderr

    original = model.state_dict()
    restored = torch.load(tmp_path / "back" / "model.pt", weights_only=True)["model"]
    assert list(restored) == list(original) or set(restored) == set(original)
    for key, value in original.items():
        assert restored[key].dtype == value.dtype, key
        assert torch.equal(restored[key], value), key
    fresh, _ = reference_model(model_type, seed=2, **SMALL, encoder_qkv_bias=True)
    fresh.load_state_dict(restored, strict=True)
    # The reference reads the config written beside the file (asked for), the converter the one under its name.
    assert (tmp_path / "back" / "model.config.json").read_text() == (tmp_path / "back" / "config.json").read_text()
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["run"]["model_type"] == model_type
    assert written["model"]["encoder_num_layers"] == SMALL["encoder_num_layers"]


def test_converted_directory_keeps_everything_training_needs(tmp_path):
    model, cfg = reference_model("spidr", seed=3, **SMALL)
    with torch.no_grad():
        model.current_step.fill_(1234)
        model.codebooks[1].counts.mul_(3.0)
    out = torch_to_orbax(save_release(model, cfg, tmp_path, "spidr"), tmp_path / "orbax", "spidr")
    loaded_cfg, tree = read_pretrained(out)
    assert loaded_cfg.encoder_num_layers == SMALL["encoder_num_layers"]
    assert int(tree["current_step"]) == 1234
    np.testing.assert_array_equal(tree["codebooks"]["counts"][1], model.codebooks[1].counts.numpy())
    np.testing.assert_array_equal(tree["mask_embedding"], model.mask_embedding.detach().numpy())
    teacher_qkv = model.teacher.layers[0].attention.qkv.weight.numpy().T
    np.testing.assert_array_equal(tree["teacher"]["layers"][0]["attention"]["qkv"]["kernel"], teacher_qkv)
    np.testing.assert_array_equal(tree["heads"]["kernel"][2], model.heads[2][0].weight.detach().numpy().T)


def test_bare_state_dict_with_module_prefix_and_defaults(tmp_path):
    model, _ = reference_model("dinosr", seed=4, **SMALL)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "bare.pt")  # no config.json: overrides give the config
    overrides = dict(SMALL)
    out = torch_to_orbax(tmp_path / "bare.pt", tmp_path / "orbax", "dinosr", overrides)
    _, tree = read_pretrained(out)
    np.testing.assert_array_equal(tree["mask_embedding"], model.mask_embedding.detach().numpy())


def invert_fairseq_mapping(state: dict[str, torch.Tensor]) -> dict:
    """Build a fairseq DinoSR checkpoint from a reference state_dict (the inverse of the reference's mapping)."""
    model, ema = {}, {}
    for key, value in state.items():
        parts = key.split(".")
        if key == "current_step":
            continue
        if key == "mask_embedding":
            model["mask_emb"] = value
        elif key.startswith("feature_projection.layer_norm"):
            model[f"layer_norm.{parts[-1]}"] = value
        elif key.startswith("feature_projection.projection"):
            model[f"post_extract_proj.{parts[-1]}"] = value
        elif key.startswith("feature_extractor"):
            sub = "0" if parts[3] == "conv" else "2.1"
            model[f"feature_extractor.conv_layers.{parts[2]}.{sub}.{parts[-1]}"] = value
        elif key.startswith("codebooks"):
            name = "_codebook" if parts[2] == "codebook" else "_codebook_cnts"
            model[f"{name}{parts[1]}"] = value
        elif key.startswith("heads"):
            model[f"heads.{parts[1]}.{parts[-1]}"] = value
        else:
            target, prefix = (model, "encoder.") if parts[0] == "student" else (ema, "")
            rest = ".".join(parts[1:])
            if rest.startswith("pos_conv_embed.convs"):
                target[f"{prefix}pos_conv.{parts[3]}.0.{parts[-1]}"] = value
            elif rest.startswith("layer_norm"):
                target[f"{prefix}layer_norm.{parts[-1]}"] = value
            else:
                layer, name = parts[2], ".".join(parts[3:-1])
                leaf = parts[-1]
                base = f"{prefix}layers.{layer}"
                if name == "attention.qkv":
                    for piece, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                        target[f"{base}.self_attn.{piece}_proj.{leaf}"] = chunk.clone()
                else:
                    fairseq_name = {
                        "attention.proj": "self_attn.out_proj",
                        "layer_norm": "self_attn_layer_norm",
                        "feed_forward.intermediate_dense": "fc1",
                        "feed_forward.output_dense": "fc2",
                        "final_layer_norm": "final_layer_norm",
                    }[name]
                    target[f"{base}.{fairseq_name}.{leaf}"] = value
    model["_ema"] = ema
    return {"model": model, "last_optimizer_state": {"state": {0: {"step": 4321}}}}


@pytest.mark.slow
def test_fairseq_dinosr_checkpoint(tmp_path):
    model, _ = reference_model("dinosr", seed=5, encoder_qkv_bias=True)
    fairseq = invert_fairseq_mapping(model.state_dict())
    # The inversion is right if the reference's own mapping gives the original state_dict back.
    mapped = state_dict_from_dinosr_fairseq_checkpoint(fairseq)
    for key, value in model.state_dict().items():
        if key != "current_step":
            assert torch.equal(mapped[key], value), key
    torch.save(fairseq, tmp_path / "dinosr.ckpt")
    out = run_cli("torch_to_orbax.py", "--model", "dinosr_fairseq", str(tmp_path / "dinosr.ckpt"), str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    loaded_cfg, tree = read_pretrained(tmp_path / "o")
    assert loaded_cfg.encoder_qkv_bias
    assert int(tree["current_step"]) == 4321
    orbax_to_torch(tmp_path / "o", tmp_path / "back.pt")
    restored = torch.load(tmp_path / "back.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        if key != "current_step":
            assert torch.equal(restored[key], value), key
    assert load_pretrained(tmp_path / "o").config.encoder_qkv_bias


def test_corrupt_file_fails_cleanly(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    result = run_cli("torch_to_orbax.py", "--model", "spidr", str(tmp_path / "bad.pt"), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "bad.pt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.pt"]


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    model, cfg = reference_model("spidr", seed=6, **SMALL)
    state = model.state_dict()
    del state["heads.1.0.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["student.layers.0.attention.proj.weight"] = torch.zeros(5, 5)
    torch.save({"model": state}, tmp_path / "model.pt")
    save_release(model, cfg, tmp_path / "unused", "spidr")
    (tmp_path / "config.json").write_text((tmp_path / "unused" / "config.json").read_text())
    result = run_cli("torch_to_orbax.py", "--model", "spidr", str(tmp_path / "model.pt"), str(tmp_path / "out"))
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "heads.1.0.bias" in message
    assert "extra.weight" in message
    assert "student.layers.0.attention.proj.weight: (5, 5) (expected (48, 48))" in message
    assert not (tmp_path / "out").exists()


def test_config_beside_must_match_model_flag(tmp_path):
    model, cfg = reference_model("dinosr", seed=7, **SMALL)
    pt = save_release(model, cfg, tmp_path, "dinosr")
    result = run_cli("torch_to_orbax.py", "--model", "spidr", str(pt), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "model_type" in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_directory_is_refused(tmp_path):
    model, cfg = reference_model("spidr", seed=8, **SMALL)
    pt = save_release(model, cfg, tmp_path, "spidr")
    (tmp_path / "out").mkdir()
    result = run_cli("torch_to_orbax.py", "--model", "spidr", str(pt), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "already exists" in result.stderr


def convert_in_process(capsys, *args: str) -> tuple[int, str]:
    """Run convert/torch_to_orbax.py's main here (no interpreter start): (exit code, stderr)."""
    main = runpy.run_path(str(ROOT / "convert" / "torch_to_orbax.py"))["main"]
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


def test_int64_buffers_are_cast_to_the_model_dtypes(tmp_path):
    model, cfg = reference_model("spidr", seed=9, **SMALL)
    state = model.state_dict()
    state["codebooks.0.counts"] = torch.arange(SMALL["codebook_size"], dtype=torch.int64)
    state["current_step"] = torch.tensor([77], dtype=torch.int64)
    pt = save_release(model, cfg, tmp_path, "spidr")
    torch.save({"model": state}, pt)
    _, tree = read_pretrained(torch_to_orbax(pt, tmp_path / "orbax", "spidr"))
    assert tree["codebooks"]["counts"].dtype == np.float32
    np.testing.assert_array_equal(tree["codebooks"]["counts"][0], np.arange(SMALL["codebook_size"]))
    assert tree["current_step"].dtype == np.int32
    assert int(tree["current_step"]) == 77


def test_non_finite_weights_are_refused(tmp_path, capsys):
    model, cfg = reference_model("spidr", seed=10, **SMALL)
    with torch.no_grad():
        model.student.layers[1].feed_forward.output_dense.weight[0, 0] = float("nan")
    pt = save_release(model, cfg, tmp_path, "spidr")
    code, err = convert_in_process(capsys, "--model", "spidr", str(pt), str(tmp_path / "out"))
    assert code == 1
    tensor = "student.layers.1.feed_forward.output_dense.weight"
    assert err.strip().splitlines() == [
        f"error: {pt}: tensor {tensor} has 1 non-finite values (NaN or inf); refusing to convert"
    ]
    assert not (tmp_path / "out").exists()


def test_outputs_follow_the_umask(tmp_path, monkeypatch):
    model, cfg = reference_model("dinosr", seed=11, **SMALL)
    save_release(model, cfg, tmp_path / "release", "dinosr")
    monkeypatch.chdir(tmp_path)  # relative paths too
    with umask(0o027):
        out = torch_to_orbax("release/model.pt", "orbax", "dinosr")
        back = orbax_to_torch("orbax", "back/model.pt")
    found = modes(out)
    assert found["."] == 0o750  # built in a mkdtemp directory (0700) and renamed
    assert all(mode == (0o750 if (out / path).is_dir() else 0o640) for path, mode in found.items()), found
    assert back.stat().st_mode & 0o777 == 0o640  # written with mkstemp (0600) and renamed


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("encoder_num_layers", "four", "an integer"), ("extractor_conv_layer_config", 5, "a list of [int, int, int]")],
)
def test_wrong_typed_config_field_names_file_and_field(tmp_path, capsys, field, value, expected):
    model, cfg = reference_model("spidr", seed=12, **SMALL)
    pt = save_release(model, cfg, tmp_path, "spidr")
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"][field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, err = convert_in_process(capsys, "--model", "spidr", str(pt), str(tmp_path / "out"))
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'config.json'}: model.{field} must be {expected}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_disk_full_leaves_nothing(tmp_path):
    model, cfg = reference_model("spidr", seed=13, **SMALL)
    pt = save_release(model, cfg, tmp_path / "release", "spidr")
    command = [sys.executable, str(ROOT / "convert" / "torch_to_orbax.py"), "--model", "spidr", str(pt),
               str(tmp_path / "out" / "model")]  # fmt: skip
    result = subprocess.run(with_file_size_limit(20_000, command), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: cannot write {tmp_path / 'out' / 'model'}: File too large"]
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert [name for name in left if name.split("/")[0] != "release"] == []  # no output, no temporary directory


def test_read_only_output_directory(tmp_path, capsys):
    model, cfg = reference_model("spidr", seed=14, **SMALL)
    pt = save_release(model, cfg, tmp_path / "release", "spidr")
    with read_only_directory(tmp_path / "ro") as ro:
        code, err = convert_in_process(capsys, "--model", "spidr", str(pt), str(ro / "out"))
        assert code == 1
        assert len(err.strip().splitlines()) == 1
        assert f"cannot write {ro / 'out'}: " in err
        assert list(ro.iterdir()) == []


def test_orbax_to_torch_refuses_an_existing_output_and_keeps_no_other_models_config(tmp_path, capsys):
    model, cfg = reference_model("spidr", seed=12, **SMALL)
    orbax = torch_to_orbax(save_release(model, cfg, tmp_path / "release", "spidr"), tmp_path / "orbax", "spidr")
    pt = tmp_path / "out" / "model.pt"
    orbax_to_torch(orbax, pt)
    assert (tmp_path / "out" / "model.config.json").is_file()  # under the .pt's own name
    assert not (tmp_path / "out" / "config.json").exists()  # only when asked
    code, err = convert_back_in_process(capsys, str(orbax), str(pt))
    assert code == 1
    assert err.strip().splitlines() == [f"error: {pt} exists; pass --overwrite to replace it"]
    # A config.json there of another model: refused with --config-json, replaced with --overwrite.
    other, other_cfg = reference_model("dinosr", seed=13, **SMALL)
    save_release(other, other_cfg, tmp_path / "out", "dinosr", name="other.pt")
    code, err = convert_back_in_process(capsys, str(orbax), str(tmp_path / "out" / "new.pt"), "--config-json")
    assert code == 1
    assert "config.json exists and describes another model" in err
    assert not (tmp_path / "out" / "new.pt").exists()
    assert not (tmp_path / "out" / "new.config.json").exists()  # together or not at all
    code, err = convert_back_in_process(capsys, str(orbax), str(tmp_path / "out" / "new.pt"), "--config-json",
                                        "--overwrite")  # fmt: skip
    assert code == 0, err
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["run"]["model_type"] == "spidr"
    # What the converter reads back: the config under the .pt's name, before any config.json.
    again = torch_to_orbax(tmp_path / "out" / "model.pt", tmp_path / "again", "spidr")
    assert read_pretrained(again)[0] == read_pretrained(orbax)[0]


@pytest.mark.slow
def test_the_defaults_used_are_said_and_the_other_models_config_is_refused(tmp_path, capsys):
    model, cfg = reference_model("dinosr", seed=14)  # base DinoSR: the same keys and shapes as base SpidR
    torch.save({"model": model.state_dict()}, tmp_path / "model.pt")
    code, err = convert_in_process(capsys, "--model", "spidr", str(tmp_path / "model.pt"), str(tmp_path / "o"))
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"note: no config file beside {tmp_path / 'model.pt'} (model.config.json or config.json): converted with "
        "SpidR base's configuration (--model spidr); for another model, give its config"
    )
    # A whole DinoSR model section (the reference writes every field) with --model spidr: refused.
    config = {"model": dataclasses.asdict(cfg)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, err = convert_in_process(capsys, "--model", "spidr", str(tmp_path / "model.pt"), str(tmp_path / "o2"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {tmp_path / 'config.json'}: its model fields describe a dinosr model, but --model is 'spidr'"
    ]
    assert not (tmp_path / "o2").exists()


def convert_back_in_process(capsys, *args: str) -> tuple[int, str]:
    """Run `python -m spidr_jax.convert orbax-to-torch ARGS` here: (exit code, stderr)."""
    capsys.readouterr()
    try:
        convert_cli.main(["orbax-to-torch", *args])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err
